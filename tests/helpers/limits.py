"""A `python -m scripts` run under a resource limit set in the child only (`ulimit -n`, `ulimit -f`): the
limit a hostile system or a full disk imposes, without touching the test's own process."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from helpers.repos import REPO, env


def limited(which: int, value: int) -> Callable[[], None]:
    """A preexec_fn setting resource `which` (resource.RLIMIT_*) to `value`, soft and hard."""

    def set_limit() -> None:
        resource.setrlimit(which, (value, value))

    return set_limit


def run_limited(
    args: list[str], cwd: Path, which: int, value: int, timeout: float = 180
) -> subprocess.CompletedProcess:
    """`python -m scripts ARGS` in cwd with one resource limit, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "scripts", *args],
        cwd=cwd,
        env={**env(), "PYTHONPATH": str(REPO)},
        preexec_fn=limited(which, value),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
