"""A child process a test signals as a terminal would: `python -m scripts ...` or `dvc ...` leading a
session of its own (a signal to its group reaches it and every process it starts, none of the test's),
with the stopping signals at their defaults, as a terminal's job has them. A shell's background job (`&`)
and nohup start their children with SIGINT and SIGQUIT, or SIGHUP, ignored, and a command keeps ignoring
a signal it found ignored: a suite run that way would send signals its child never sees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from helpers.repos import REPO
from scripts.lib.interrupts import STOPPING_SIGNALS

Stream = int | IO[Any] | None


def scripts_env(**extra: str) -> dict[str, str]:
    """The test's environment with this repository importable (`python -m scripts` from any folder)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def default_stop_signals() -> None:
    """Every stopping signal at its default action: a child's preexec_fn, before it executes."""
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def start_child(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdout: Stream = subprocess.PIPE,
    stderr: Stream = subprocess.PIPE,
    text: bool = True,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """`argv` started in `cwd` in a session of its own, every stopping signal (SIGINT, SIGTERM, SIGHUP, ...) at
    its default, then `preexec()` (a umask, an rlimit) run in the child before it executes."""

    def child() -> None:
        default_stop_signals()
        if preexec is not None:
            preexec()

    return subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text, start_new_session=True, preexec_fn=child
    )


def start_scripts(root: Path, *argv: str, env: Mapping[str, str] | None = None, **options: Any) -> subprocess.Popen:
    """`python -m scripts ARGV` in `root` as start_child starts it; `env` is scripts_env() unless given."""
    return start_child(
        [sys.executable, "-m", "scripts", *argv], cwd=root, env=scripts_env() if env is None else env, **options
    )


def communicate_or_kill(process: subprocess.Popen, timeout: float) -> tuple[Any, Any]:
    """(stdout, stderr) of a child start_child started; one still running after `timeout` seconds (or when
    anything else fails the wait) is killed with its whole session, so no test leaves a stage behind."""
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def process_alive(pid: int) -> bool:
    """Whether `pid` runs: there, and not a zombie waiting to be reaped (/proc/PID/stat's state field)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
