"""Ray for the stages that run on `runtime.engine: ray`: one session per command, shut down on any exit.

The stages hand Ray Data the same batch functions the local engine calls; this module only starts and
stops Ray and turns its failures into one-line DataErrors.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil

from scripts.lib.errors import DataError
from scripts.lib.params import Runtime

REPO_ROOT = Path(__file__).resolve().parents[2]
# Ray Data's groupby on its classic sort-based shuffle: Ray 2.60's default (SHUFFLE_V2, hash aggregator
# actors) took 3-6x longer for dedup's groupbys on 2 CPUs, and its HASH_SHUFFLE made no progress at all there
SHUFFLE = "sort_shuffle_pull_based"


@contextlib.contextmanager
def ray_session(runtime: Runtime) -> Iterator[ModuleType]:
    """`ray`, initialised for `runtime` (a local instance, or the cluster at `ray_address`), shut down on
    the way out, a Ctrl-C included, when this call started it."""
    try:
        import ray
    except ImportError:
        raise DataError("runtime.engine=ray but ray is not installed (pip install 'ray[data]')") from None
    _quiet_console()
    started_here = not ray.is_initialized()
    children_before: set[int] = set()
    if started_here:
        children_before = {child.pid for child in psutil.Process().children(recursive=True)}
        _adopt_orphans()
        python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        options: dict = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.CRITICAL,
            "runtime_env": {"env_vars": {"PYTHONPATH": python_path}},
        }  # workers import scripts.*
        if runtime.ray_address is None and runtime.object_store_mb is not None:
            options["object_store_memory"] = runtime.object_store_mb * 1024 * 1024
        try:
            # "local": always a new instance; None would join any cluster this machine runs (ray's default)
            ray.init(address=runtime.ray_address or "local", **options)
        except Exception as exc:
            ray.shutdown()  # what did start (GCS, agents) goes with it
            _reap(children_before)
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise DataError(
                f"runtime.ray_address={runtime.ray_address!r}: cannot start or join Ray ({reason})"
            ) from None
        except BaseException:  # Ctrl-C while Ray starts: what did start goes with it (it was left running)
            ray.shutdown()
            _reap(children_before)
            raise
    context = ray.data.DataContext.get_current()
    strategy = context.shuffle_strategy
    context.shuffle_strategy = type(strategy)(SHUFFLE)
    try:
        yield ray
    finally:
        context.shuffle_strategy = strategy
        if started_here:
            ray.shutdown()
            _reap(children_before)


REAP_SECONDS = 3  # then what is left is killed: Ray is shut down, a worker has nothing of ours to finish
PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Make this process the subreaper of what it starts: a Ray worker whose raylet has gone is reparented
    here, not to init, so _reap still finds it (one started as Ray shut down escaped a snapshot taken before)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap(children_before: set[int]) -> None:
    """Wait for the processes this session started to be gone before the command exits.

    `ray.shutdown()` stops the raylet and GCS; their workers notice and exit on their own, a moment later.
    A command that returned before then would leave them running past its exit code (a Ctrl-C's 130
    included), so wait a bounded time, then kill what is left. Each look lists the descendants again: a
    process started (or orphaned to us) after the last look is waited for too."""
    deadline = time.monotonic() + REAP_SECONDS
    while (started := _descendants(children_before)) and time.monotonic() < deadline:
        psutil.wait_procs(started, timeout=min(deadline - time.monotonic(), 0.5))
    for _ in range(3):  # what is left is killed; a killed one's orphans come to us next round
        if not (started := _descendants(children_before)):
            return
        for process in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(started, timeout=REAP_SECONDS)


def _descendants(children_before: set[int]) -> list[psutil.Process]:
    """The processes under this one it did not have before Ray, but another's zombie (its parent reaps it)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.pid not in children_before and (
                process.status() != psutil.STATUS_ZOMBIE or process.ppid() == os.getpid()
            ):
                found.append(process)
    return found


def _quiet_console() -> None:
    """Keep Ray's and Ray Data's log lines (progress, plans, failures with their stacks) off stderr: a stage's
    failure is one line of ours; Ray still writes them all to its session's log files."""
    import ray.data  # noqa: F401  (sets up Ray Data's loggers, console handler included)

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)
