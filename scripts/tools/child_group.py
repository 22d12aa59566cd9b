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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

STOP_SECONDS = 1.5  # for dvc and its stage to end on SIGTERM, then SIGKILL


def dvc_env(**extra: str) -> dict[str, str]:
    """The environment of a `dvc` child of ours: DVC's usage analytics off (a repository that does not set
    `core.analytics = false` had each child write its report in the system's temp folder and send it out: a
    request no one asked for, a file outside every output), plus `extra`."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", **extra}


LINE_CHARS = 1 << 16  # a child's line is passed on in pieces of this many characters at most


@contextlib.contextmanager
def child_group(cmd: list[str], **popen_kwargs) -> Iterator[subprocess.Popen]:
    """subprocess.Popen(cmd) in a process group of its own, ended (stop_group) if the block raises."""
    with _started(cmd, **popen_kwargs) as proc:
        try:
            yield proc
        except BaseException:
            stop_group(proc)
            raise


def _started(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen(cmd) leading a group of its own. A signal while the child starts is raised once the child is known
    (interrupts.held), and the child stopped: raised inside Popen, it left the child running unsupervised, and a
    replay's `git init` wrote into the folder its failed run had just removed."""
    from scripts.lib.interrupts import held

    started: list[subprocess.Popen] = []
    try:
        with held():
            started.append(subprocess.Popen(cmd, process_group=0, **popen_kwargs))
    except BaseException:
        for proc in started:
            with proc:
                stop_group(proc)
        raise
    return started[0]


def run_in_group(cmd: list[str], *, capture_output: bool = False, timeout: float | None = None, **popen_kwargs):
    """subprocess.run(cmd, ...) whose child, and all it started, ends with it (a timeout included)."""
    if capture_output:
        popen_kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with child_group(cmd, **popen_kwargs) as proc:
        stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def stop_group(proc: subprocess.Popen) -> None:
    """End `proc`'s process group: SIGTERM, then SIGKILL to whatever of it has not ended within STOP_SECONDS.
    The group, not only its leader, is waited for: dvc ends at once on SIGTERM, and a stage that ignores it (or
    is slow to end) went on alone, writing after the tool had removed its run."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)
        deadline = time.monotonic() + STOP_SECONDS
        while (proc.poll() is None or group_alive(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None and not group_alive(proc.pid):
            return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_SECONDS)


def group_alive(group: int) -> bool:
    """Whether any process is left in process group `group` (a member killed but not yet reaped counts)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still a member
        return True
    return True


def run_shown(cmd: list[str], watch: Callable[[str], None] | None = None, **popen_kwargs) -> int:
    """run_in_group(cmd) with the child's standard output and error passed on line by line, each redacted as
    the command's own lines are (import_env.redact_line), to this process's: `dvc pull` wrote straight to the
    terminal, and an error naming a remote's `user:password@` URL, or quoting AWS_SECRET_ACCESS_KEY's value,
    was printed as DVC gave it. `watch` sees each line (piece) as it passes. The child's exit status is returned."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "errors": "replace"}
    with child_group(cmd, **popen_kwargs, **pipes) as proc:
        errors = threading.Thread(target=_pass_on, args=(proc.stderr, sys.stderr, watch), daemon=True)
        errors.start()
        _pass_on(proc.stdout, sys.stdout, watch)
        errors.join()
        proc.wait()
    return proc.returncode


def _pass_on(child: IO[str], ours: IO[str], watch: Callable[[str], None] | None = None) -> None:
    """Each line of `child` (a piece of LINE_CHARS at most: a child's endless line is never held whole),
    redacted, written to `ours` as it comes, and a newline after a last line the child did not end."""
    from scripts.lib.import_env import redact_line

    line = "\n"
    for line in iter(lambda: child.readline(LINE_CHARS), ""):
        if watch is not None:
            watch(line)
        ours.write(redact_line(line))
        ours.flush()
    if not line.endswith("\n"):  # the child's last line unended: the next line (our one error line) its own
        ours.write("\n")
        ours.flush()
