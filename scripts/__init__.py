"""t2i-datasets: a DVC pipeline that builds text-to-image training datasets.

One module per stage; `python -m scripts --help` lists the commands.
"""

import contextlib
import os


# Python caches each module it compiles in __pycache__ with one write() that may write only part of the
# bytes (a full disk, RLIMIT_FSIZE) and installs the torn file anyway: every later run then failed to
# import (EOFError: marshal data too short). This writer writes all or raises OSError, on which Python
# keeps the module uncached (SourceFileLoader.set_data). Set before the package imports anything; this
# file's own cache is written before it runs, so it stays small (comments, not docstrings).
def _whole_bytecode_writes() -> None:
    import importlib._bootstrap_external as bootstrap

    def write_atomic(path: str, data: bytes, mode: int = 0o666) -> None:
        temp = f"{path}.{id(path)}"
        fd = os.open(temp, os.O_EXCL | os.O_CREAT | os.O_WRONLY, mode & 0o666)
        try:
            with open(fd, "wb") as file:  # a buffered writer: writes every byte or raises
                file.write(data)
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    bootstrap._write_atomic = write_atomic  # type: ignore[attr-defined]  # private, as the bug it mends


_whole_bytecode_writes()


# This file's own cache was written by Python's writer, before the one above was set: under a file-size
# limit (ulimit -f) it was installed torn and every later run failed (EOFError). A copy shorter than this
# file's code marshalled is removed; a cache, the next run writes it again. Compared, never loaded.
def _drop_own_torn_cache() -> None:
    import marshal
    import sys

    cached = globals().get("__cached__")
    if not cached:
        return
    whole = 16 + len(marshal.dumps(sys._getframe(1).f_code))  # the header, then the module's code
    try:
        if os.stat(cached).st_size < whole:
            os.unlink(cached)
    except OSError:  # not written (PYTHONDONTWRITEBYTECODE, a full disk), or a read-only install
        pass


_drop_own_torn_cache()

# The same bytes on every x86-64 CPU: torch's CPU kernels pick code paths by processor (ATen and oneDNN use
# AVX-512 where present; MKL may choose by vendor), and the rendered images and embedding similarities
# of an AMD AVX-512 machine differed in their last bits from those in the committed dvc.lock. Set here,
# before any stage imports torch, to paths every recent x86-64 machine runs. Measured on one machine only:
# the pins left its images unchanged and changed one embedding output; their speed cost is not measured.
TORCH_CPU_PATHS = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
os.environ.update(TORCH_CPU_PATHS)

# OpenBLAS (numpy's) starts its thread pool when numpy is imported, and a thread it cannot start (`ulimit -v`, a
# process limit) makes it raise(SIGINT) on itself: the command said `interrupted (SIGINT)`, exit 130, a resource
# failure told as the user's Ctrl-C. One thread starts none; no stage does its heavy math in numpy (embedding
# similarities are torch's, MinHash is element-wise), so nothing is slower. A value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
