"""Round 36a: `runtime.ray_address` values that can never reach a Ray, told before Ray is imported
(`ray_checks.refusal`). Every row but the guard failed before its fix:

1. a host name that does not resolve (no such name, an empty label, a label over 63 characters), given as host:port,
   ray://host:port or through `auto`'s RAY_ADDRESS, waited the whole `connect_timeout_s` after Ray's import, then
   blamed a GCS that "did not answer" (8 s of default wait: 16 s on two cores); now one line naming the host;
2. a ray:// address while Ray Client's grpc is not installed imported Ray (5-8 s) to say "Ray Client requires pip
   package `ray[client]`"; now one line before the import naming grpc (a port that refuses is still said first);
3. a stopping signal inside `ray.shutdown` (hooked: the signal sent to the command as Ray's shutdown starts) skipped
   the reap and left the run's Ray folder in RAY_TMPDIR (`ray_engine._shutdown_to_the_end` now finishes the
   shutdown, then the signal goes on: its one line and 128 + its number).

The command rows are in the slow tier (a `python -m scripts` start each); only those of 3 start a (local) Ray.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.children import scripts_env

NO_GRPC = importlib.util.find_spec("grpc") is None
needs_no_grpc = pytest.mark.skipif(not NO_GRPC, reason="grpc is installed: ray:// is Ray Client's to try")


@pytest.fixture
def listening() -> Iterator[str]:
    """host:port where a TCP server accepts (and never answers as Ray would)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


# --- 1. a host name that cannot resolve -----------------------------------------------------------------------
UNRESOLVABLE = {
    "no such name": ("nosuch-host.invalid:6379", "'nosuch-host.invalid' does not resolve"),
    "an empty label": ("ray..example:6379", "'ray..example' does not resolve"),
    "a label of 64 characters": ("x" * 64 + ".example:6379", "does not resolve"),
    # a password reaches here through auto's RAY_ADDRESS only (params refuse one in ray_address)
    "ray:// with a password": ("ray://u:s3cretPW@nosuch-host.invalid:10001", "'nosuch-host.invalid' does not resolve"),
    "ray:// with no port": ("ray://nosuch-host.invalid", "'nosuch-host.invalid' does not resolve"),
}


@pytest.mark.parametrize("address, said", list(UNRESOLVABLE.values()), ids=list(UNRESOLVABLE))
def test_a_host_that_does_not_resolve_is_refused_before_ray(address, said):
    from scripts.lib.ray_checks import refusal

    why = refusal(address)
    assert why is not None and said in why and "s3cretPW" not in why and "\n" not in why


AUTO_UNRESOLVABLE = {
    "host:port": "nosuch-host.invalid:6379",
    "ray://host:port": "ray://nosuch-host.invalid:10001",
    "an empty label": "ray..example:6379",
}


@pytest.mark.parametrize("named", list(AUTO_UNRESOLVABLE.values()), ids=list(AUTO_UNRESOLVABLE))
def test_autos_ray_address_that_does_not_resolve_is_refused_before_ray(tmp_path, named):
    from scripts.lib.ray_checks import auto_refusal

    why = auto_refusal({"RAY_TMPDIR": str(tmp_path), "RAY_ADDRESS": named}, gcs_running=False)
    assert why is not None and why.startswith("RAY_ADDRESS names ") and "does not resolve" in why


# --- 2. ray:// with no Ray Client -----------------------------------------------------------------------------
CLIENT_ADDRESSES = {
    "a port that listens": "ray://{listening}",
    "localhost by name": "ray://localhost:{port}",
    "a password": "ray://u:s3cretPW@{listening}",
}


@needs_no_grpc
@pytest.mark.parametrize("shape", list(CLIENT_ADDRESSES.values()), ids=list(CLIENT_ADDRESSES))
def test_ray_client_without_grpc_is_refused_before_ray(listening, shape):
    from scripts.lib.ray_checks import refusal

    why = refusal(shape.format(listening=listening, port=listening.rpartition(":")[2]))
    assert why is not None and "needs the grpc package" in why and "s3cretPW" not in why


@needs_no_grpc
def test_autos_ray_client_address_without_grpc_is_refused_before_ray(tmp_path, listening):
    from scripts.lib.ray_checks import auto_refusal

    why = auto_refusal({"RAY_TMPDIR": str(tmp_path), "RAY_ADDRESS": f"ray://{listening}"}, gcs_running=False)
    assert why is not None and "needs the grpc package" in why


def test_a_gcs_address_that_listens_is_still_rays_to_try(listening):  # guard: not every address is refused
    from scripts.lib.ray_checks import refusal

    assert refusal(listening) is None


# --- the command, end to end: one line at exit 2, well within connect_timeout_s, nothing written --------------
WAIT_S = 60


def dedup_on_ray(root: Path, address: str) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["a red fox", "a red fox runs"]}), root / "in.parquet")
    runtime = {"engine": "ray", "ray_address": address, "connect_timeout_s": WAIT_S}
    (root / "params.yaml").write_text(yaml.safe_dump({"dedup": {"threshold": 0.7}, "runtime": runtime}), "utf-8")
    argv = [sys.executable, "-m", "scripts", "dedup", "s", "in.parquet", "out/s.parquet"]
    return subprocess.run(argv, cwd=root, env=scripts_env(), capture_output=True, text=True, timeout=WAIT_S * 3)


COMMANDS = {
    "an unresolvable GCS host": ("nosuch-host.invalid:6379", "'nosuch-host.invalid' does not resolve"),
    "ray:// with no port, unresolvable": ("ray://nosuch-host.invalid", "'nosuch-host.invalid' does not resolve"),
    "ray:// with no grpc": ("ray://{listening}", "needs the grpc package"),
}


@pytest.mark.slow
@pytest.mark.parametrize("address, said", list(COMMANDS.values()), ids=list(COMMANDS))
def test_dedup_at_an_address_that_cannot_be_ray_is_one_quick_line(tmp_path, listening, address, said):
    if "{listening}" in address and not NO_GRPC:
        pytest.skip("grpc is installed: ray:// is Ray Client's to try")
    start = time.monotonic()
    done = dedup_on_ray(tmp_path, address.format(listening=listening))
    took = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "cannot start or join Ray (" in lines[0] and said in lines[0], lines
    assert took < WAIT_S / 4, (took, lines)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- 3. a signal inside ray.shutdown ------------------------------------------------------------------------
# the command as `python -m scripts`, with ray.shutdown hooked: its first call sends `signum` to the command
SIGNAL_IN_SHUTDOWN = """
import os, runpy, sys, time
import ray
signum, shutdown = int(sys.argv[1]), ray.shutdown
def hooked(*args, **kwargs):
    if sys._getframe(1).f_code.co_name == "_shutdown" and not os.environ.get("HOOK_FIRED"):
        os.environ["HOOK_FIRED"] = "1"
        os.kill(os.getpid(), signum)
        time.sleep(1)
    return shutdown(*args, **kwargs)
ray.shutdown = hooked
sys.argv = ["scripts", *sys.argv[2:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGHUP": signal.SIGHUP}


@pytest.mark.slow
@pytest.mark.parametrize("signum", list(SIGNALS.values()), ids=list(SIGNALS))
def test_a_signal_inside_ray_shutdown_leaves_no_folder_of_ours(tmp_path, signum):
    from helpers.children import start_child
    from helpers.ray_runs import session_gone

    # a short RAY_TMPDIR: Ray's socket paths under it must fit 107 bytes (pytest's tmp_path is too long)
    root, ray_tmp = tmp_path / "ws", Path(tempfile.mkdtemp(prefix="r36a-", dir="/tmp"))
    root.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["a red fox", "a red fox runs"]}), root / "in.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump({"dedup": {"threshold": 0.7}, "runtime": {"engine": "ray"}}))
    (tmp_path / "hooked.py").write_text(SIGNAL_IN_SHUTDOWN, encoding="utf-8")
    argv = [sys.executable, str(tmp_path / "hooked.py"), str(int(signum)), "dedup", "s", "in.parquet", "out/s.parquet"]
    proc = start_child(argv, cwd=root, env=scripts_env(RAY_TMPDIR=str(ray_tmp)))
    try:
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signum and err.strip().splitlines() == [f"interrupted ({signum.name})"], err
    left = list(ray_tmp.iterdir())
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert session_gone(proc.pid, 10) and left == [], left
