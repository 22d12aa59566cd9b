"""Keep what a benchmark prints: stdout is copied into a file that starts with a header line.

In a benchmark (stdout keeps going to the terminal; the file is flushed line by line, so a long run
can be polled while it goes):

    from benchmarks._record import add_out_argument, record
    add_out_argument(parser)             # --out FILE
    args = parser.parse_args()
    record(args.out)                     # no-op when --out is not given

For a command without --out (the same header and footer, its stdout and stderr kept):

    python benchmarks/_record.py benchmarks/results/NAME.txt -- python benchmarks/SCRIPT.py ARGS

Header: the command, date, `uname -m`, nproc, Python and numpy versions, load average. Footer: wall
time, load average at the end (and the exit status, for a wrapped command). The machine is often
shared, so read absolute figures next to the load average; ratios measured in one process hold better.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


class TreeMemory:
    """Samples the PSS of this process and its worker processes (forked workers share the parent's
    pages, so adding their RSS would count the texts twice; PSS splits shared pages fairly)."""

    def __init__(self, every_s: float = 0.25):
        import threading

        self.peak_gib = 0.0
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak_gib = max(self.peak_gib, sum(map(_pss_kib, _process_tree())) / 2**20)


def _process_tree() -> list[int]:
    pids, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in children.read_text().split()]
    return pids


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def header(command: list[str], note: str | None = None) -> str:
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = "absent"
    return (
        f"# {shlex.join(command)} | {time.strftime('%Y-%m-%d %H:%M:%S %z')} | {platform.machine()} | "
        f"nproc {os.cpu_count()} | python {platform.python_version()} | numpy {numpy_version} | {_load()}"
        + (f" | {note}" if note else "")
        + "\n"
    )


def footer(seconds: float, status: int | None = None) -> str:
    exit_part = "" if status is None else f" | exit {status}"
    return f"# finished in {seconds:.1f} s | {_load()}{exit_part}\n"


def add_out_argument(parser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write what is printed to FILE, after a header line (command, date, machine, "
        "versions, load average), e.g. benchmarks/results/NAME.txt",
    )


class _Tee:
    def __init__(self, stream, file):
        self._stream, self._file = stream, file

    def write(self, text: str) -> int:
        self._stream.write(text)
        if not self._file.closed:
            self._file.write(text)
            if "\n" in text:
                self._file.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        if not self._file.closed:
            self._file.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def record(out: Path | None, note: str | None = None) -> None:
    """From now until the process exits, copy stdout into `out` (header first, with `note` if given;
    footer at exit)."""
    if out is None:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    file = out.open("w", encoding="utf-8")
    file.write(header([Path(sys.executable).name, *sys.argv], note))
    file.flush()
    start, pid, stdout = time.perf_counter(), os.getpid(), sys.stdout
    sys.stdout = _Tee(stdout, file)

    def close() -> None:
        if os.getpid() != pid:  # a forked child exiting must not write the footer
            return
        sys.stdout.flush()
        sys.stdout = stdout
        file.write(footer(time.perf_counter() - start))
        file.close()

    atexit.register(close)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python benchmarks/_record.py OUT.txt -- COMMAND [ARGS...]")
    out, command = Path(sys.argv[1]), sys.argv[3:]
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with out.open("w", encoding="utf-8") as file:
        file.write(header(command))
        file.flush()
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for line in child.stdout:
            sys.stdout.write(line)
            file.write(line)
            file.flush()
        status = child.wait()
        file.write(footer(time.perf_counter() - start, status))
    sys.exit(status)


if __name__ == "__main__":
    main()
