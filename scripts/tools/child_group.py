"""A tool's long child (`dvc repro`, `dvc pull`) that stops when the tool stops.

subprocess.run SIGKILLs its child when the caller is interrupted, and Popen's exit only waits for it:
either way what the child started (the stage `dvc repro` runs, its workers) went on after a signal sent
to the tool alone (`kill PID`, a CI's cancel), writing outputs no DVC records, or the tool waited minutes
for it. Here the child leads a process group of its own, and the whole group is ended on any exit that
is not the child's own: SIGTERM first (a stage removes its temps and exits 143), SIGKILL after
STOP_SECONDS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

STOP_SECONDS = 1.5  # for dvc and its stage to end on SIGTERM, then SIGKILL


@contextlib.contextmanager
def child_group(cmd: list[str], **popen_kwargs) -> Iterator[subprocess.Popen]:
    """subprocess.Popen(cmd) in a process group of its own, ended (stop_group) if the block raises."""
    with subprocess.Popen(cmd, process_group=0, **popen_kwargs) as proc:
        try:
            yield proc
        except BaseException:
            stop_group(proc)
            raise


def run_in_group(cmd: list[str], *, capture_output: bool = False, timeout: float | None = None, **popen_kwargs):
    """subprocess.run(cmd, ...) whose child, and all it started, ends with it (a timeout included)."""
    if capture_output:
        popen_kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with child_group(cmd, **popen_kwargs) as proc:
        stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def stop_group(proc: subprocess.Popen) -> None:
    """End `proc`'s process group: SIGTERM, then SIGKILL if it has not ended within STOP_SECONDS."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)
        try:
            proc.wait(timeout=STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue
