"""Files the generation store and generate's output folder write: whole or not at all (a temp renamed in,
tagged as ours while it is a temp), and images linked in from one checked open (image_store's writers).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
from pathlib import Path
from typing import BinaryIO

from scripts.lib.errors import DataError, os_error_message
from scripts.lib.safe_paths import link_opened
from scripts.lib.temps import TEMP_XATTR, mark_temp

# `.<name>.tmp-<pid>-<thread>` (write_file_atomic, link_file) or `.<name>.tmp-new|old|lock` (io.atomic_path)
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?:(?P<pid>\d+)-\d+|new|old|lock)")


def _temp_path(path: Path, tmp_dir: Path | None) -> Path:
    return (tmp_dir or path.parent) / f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}"


def write_file_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Temp file + rename: a name always holds a whole image (the temp file in `tmp_dir`, on the same
    filesystem, or beside `path`; tagged as ours while it is a temp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path, tmp_dir)
    with _removed_on_failure(tmp, path):
        with tmp.open("xb") as f:
            mark_temp(f.fileno())
            f.write(data)
        _rename_in(tmp, path)


@contextlib.contextmanager
def _removed_on_failure(tmp: Path, path: Path):
    """No temp file outlives a failed write (a full disk left one per writer thread), and the error names
    the image, not the temp (an ENOSPC from write() names no file at all)."""
    try:
        yield
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(os_error_message(exc, path, tmp)) from None
        raise


def _rename_in(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        os.removexattr(path, TEMP_XATTR, follow_symlinks=False)  # no longer a temp


def link_file(src: Path, dst: Path, tmp_dir: Path | None = None, opened: BinaryIO | None = None) -> None:
    """Make `dst` the file `src` (a hard link; a copy across filesystems or where links are refused), never writing
    into an existing file: a link or a temp copy (in `tmp_dir` on `dst`'s filesystem, else beside it) renamed over
    `dst`. `opened`: `src` as the caller opened and checked it, the link proved of it and the copy read from it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if opened is None:
            os.link(src, dst)
            return
        if link_opened(opened, src, dst):  # False where no link can be made: a copy then
            return
    except FileExistsError:
        pass  # a copy: a linked temp could not be tagged (the tag would land on `src`, the same file)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    if tmp_dir is not None and os.stat(tmp_dir).st_dev != os.stat(dst.parent).st_dev:
        tmp_dir = None  # the copy is renamed in, and no rename crosses filesystems: its temp goes beside `dst`
    tmp = _temp_path(dst, tmp_dir)
    with _removed_on_failure(tmp, dst):
        with open(tmp, "xb") as f, contextlib.nullcontext(opened) if opened else open(src, "rb") as source:
            mark_temp(f.fileno())
            shutil.copyfileobj(source, f)
        _rename_in(tmp, dst)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
