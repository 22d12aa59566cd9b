"""Ray for the stages that run on `runtime.engine: ray`: one session per command, shut down on any exit.

The stages hand Ray Data the same batch functions the local engine calls; this module only starts and
stops Ray and turns its failures into one-line DataErrors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from scripts.lib.errors import DataError
from scripts.lib.params import Runtime

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    if started_here:
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
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise DataError(
                f"runtime.ray_address={runtime.ray_address!r}: cannot start or join Ray ({reason})"
            ) from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _quiet_console() -> None:
    """Keep Ray's and Ray Data's log lines (progress, plans, failures with their stacks) off stderr: a stage's
    failure is one line of ours; Ray still writes them all to its session's log files."""
    import ray.data  # noqa: F401  (sets up Ray Data's loggers, console handler included)

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)
