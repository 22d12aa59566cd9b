"""Run one child process and keep its own peak RSS: the measuring step the memory benchmarks share.

Peak RSS is a high-water mark: one process cannot measure two runs, so each run is a fresh child, and its peak
is os.wait4's rusage of that child alone (the usage of all children is the largest of any child so far).

    from benchmarks._peak_rss import run_child
    run = run_child([sys.executable, "-c", CODE, *args])
    run.exit_code, run.peak_mib, run.seconds, run.stdout, run.stderr

Output goes to temporary files, not pipes, while the child runs: wait4 must reap the child itself (a
subprocess wait would take the rusage with it), and a child filling a pipe no one reads would never end.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ChildRun:
    exit_code: int
    seconds: float  # wall time from the start to the reaping
    peak_kib: int  # ru_maxrss: KiB on Linux
    cpu_seconds: float  # user + system
    stdout: str  # empty where the output was not captured
    stderr: str  # empty where not captured, or merged into stdout

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    @property
    def peak_gib(self) -> float:
        return self.peak_kib / 2**20


def run_child(
    argv: Sequence[str],
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    merge_stderr: bool = False,
    stderr_shown: bool = False,
) -> ChildRun:
    """`argv` run in `cwd` (with `env`, or this process's) to its end; its output captured (stderr into stdout
    with `merge_stderr`), or left on this process's terminal without `capture` (stderr alone with
    `stderr_shown`: a stage's progress lines, as its user sees them)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdout = out if capture else None
        stderr = (out if merge_stderr else err) if capture and not stderr_shown else None
        started = time.perf_counter()
        child = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        seconds = time.perf_counter() - started
        return ChildRun(
            exit_code=child.returncode,
            seconds=seconds,
            peak_kib=usage.ru_maxrss,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stdout=_read(out),
            stderr=_read(err),
        )


def _read(file) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def said(run: ChildRun) -> str:
    """What a child said (stdout then stderr, stripped), or `exit N: ` and its last line where it failed."""
    out = (run.stdout + run.stderr).strip()
    if run.exit_code != 0:
        return f"exit {run.exit_code}: {out.splitlines()[-1] if out else ''}"
    return out
