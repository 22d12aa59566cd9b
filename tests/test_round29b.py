"""Round 29b: the Ray engine (`runtime.engine: ray`) as a hostile user sets its params and addresses. Every row
failed before its fix:

1. `ray_address: auto` with no cluster to find (RAY_ADDRESS unset, no `ray start` address file, no GCS process)
   imported Ray and ran its search first (5-15 s), and an `auto` whose RAY_ADDRESS names a port that refuses
   waited the whole `connect_timeout_s` for it; now `ray_checks.auto_refusal` says so in one line before Ray is
   imported (the address's password hidden);
2. (guard rows, not failing before) `workers` is taken as asked, above the cluster's CPUs too, so an autoscaling
   cluster grows to it; 0 is one per CPU (`ray_checks.ray_workers`);
3. `partitions` above the row count (up to 1,000,000) made dedup@S's shuffles that many groups, all but a few
   empty; now `ray_checks.bounded_blocks` makes at most one per row (the outputs are the same for any value).

Rows that start a Ray command are in the slow tier (Ray's import alone takes seconds on two cores).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.children import scripts_env
from helpers.ray_runs import ray_workspace, write_numbered_prompts
from helpers.repos import REPO

FIXTURES = REPO / "tests" / "fixtures"


def closed_port() -> str:
    """host:port where nothing listens (a port bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# --- 1. "auto" with no cluster: one line before Ray is imported -------------------------------------------------
def nothing_at_all(tmp: Path) -> dict[str, str]:
    return {"RAY_TMPDIR": str(tmp)}


def tmpdir_only(tmp: Path) -> dict[str, str]:
    return {"TMPDIR": str(tmp)}


def refused_ray_address(tmp: Path) -> dict[str, str]:
    return {"RAY_TMPDIR": str(tmp), "RAY_ADDRESS": closed_port()}


def password_in_ray_address(tmp: Path) -> dict[str, str]:
    return {"RAY_TMPDIR": str(tmp), "RAY_ADDRESS": "ray://u:s3cretPW@" + closed_port()}


REFUSED = {
    "no RAY_ADDRESS, no address file, no GCS": (nothing_at_all, "no Ray cluster runs here: RAY_ADDRESS is unset"),
    "TMPDIR's address file absent": (tmpdir_only, "ray/ray_current_cluster (ray start writes it)"),
    "RAY_ADDRESS at a port that refuses": (refused_ray_address, "nothing listens there: connection refused"),
    "a password in RAY_ADDRESS": (password_in_ray_address, "RAY_ADDRESS names ray://***@127.0.0.1:"),
}


@pytest.mark.parametrize("environ, said", list(REFUSED.values()), ids=list(REFUSED))
def test_auto_with_no_cluster_is_refused_before_ray(tmp_path, environ, said):
    from scripts.lib.ray_checks import auto_refusal

    why = auto_refusal(environ(tmp_path), gcs_running=False)
    assert why is not None and said in why and "s3cretPW" not in why and "\n" not in why


def address_file_written(tmp: Path) -> dict[str, str]:
    (tmp / "ray").mkdir()
    (tmp / "ray" / "ray_current_cluster").write_text("192.0.2.2:6379\n", encoding="utf-8")
    return {"RAY_TMPDIR": str(tmp)}


def listening_ray_address(tmp: Path) -> dict[str, str]:
    listener = socket.create_server(("127.0.0.1", 0))
    LISTENERS.append(listener)
    return {"RAY_TMPDIR": str(tmp), "RAY_ADDRESS": f"127.0.0.1:{listener.getsockname()[1]}"}


LISTENERS: list[socket.socket] = []
LEFT_TO_RAY = {
    "ray start's address file": (address_file_written, False),
    "a GCS process on this machine": (nothing_at_all, True),
    "RAY_ADDRESS at a port that listens": (listening_ray_address, False),
}


@pytest.mark.parametrize("environ, gcs_running", list(LEFT_TO_RAY.values()), ids=list(LEFT_TO_RAY))
def test_auto_with_somewhere_to_look_is_left_to_rays_bounded_client(tmp_path, environ, gcs_running):
    from scripts.lib.ray_checks import auto_refusal

    assert auto_refusal(environ(tmp_path), gcs_running=gcs_running) is None


def clean_workspace(root: Path, runtime: dict) -> list[str]:
    ray_workspace(root, FIXTURES, {"engine": "ray", **runtime})
    write_numbered_prompts(root, FIXTURES, 1)
    return ["clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet"]


def dedup_workspace(root: Path, runtime: dict) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["a red fox", "a red fox runs"]}), root / "in.parquet")
    params = {"dedup": {"threshold": 0.7}, "runtime": {"engine": "ray", **runtime}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return ["dedup", "s", "in.parquet", "out/s.parquet"]


def run(root: Path, argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


AUTO_RUNS = {
    "clean@S, nothing to find": (clean_workspace, nothing_at_all, "no Ray cluster runs here"),
    "dedup@S, nothing to find": (dedup_workspace, nothing_at_all, "no Ray cluster runs here"),
    "clean@S, RAY_ADDRESS refuses": (clean_workspace, refused_ray_address, "connection refused"),
    "dedup@S, RAY_ADDRESS with a password refuses": (dedup_workspace, password_in_ray_address, "connection refused"),
}
WAIT_S = 60  # connect_timeout_s: Ray's client waited all of it for a RAY_ADDRESS that refuses


@pytest.mark.slow
@pytest.mark.parametrize("workspace, environ, said", list(AUTO_RUNS.values()), ids=list(AUTO_RUNS))
def test_auto_with_no_cluster_is_one_line_well_within_the_timeout(tmp_path, workspace, environ, said):
    from scripts.lib.ray_checks import any_gcs_process

    extra = environ(tmp_path / "raytmp")
    if "RAY_ADDRESS" not in extra and any_gcs_process():
        pytest.skip("a Ray cluster of another runs on this machine: Ray's auto would join it")
    argv = workspace(tmp_path / "ws", {"ray_address": "auto", "connect_timeout_s": WAIT_S})
    env = {
        name: value for name, value in scripts_env(**extra).items() if name != "RAY_ADDRESS" or "RAY_ADDRESS" in extra
    }
    start = time.monotonic()
    done = run(tmp_path / "ws", argv, env, timeout=WAIT_S * 3)
    took = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: runtime.ray_address='auto': cannot start or join Ray (") and said in lines[0]
    assert "s3cretPW" not in done.stderr + done.stdout and took < WAIT_S / 2, (took, lines)
    assert not (tmp_path / "ws" / "out").exists() or not any((tmp_path / "ws" / "out").iterdir())


# --- 2 and 3. workers and partitions past what the cluster or the rows hold: the documented rules --------------
WORKERS = {  # guards: the rule main had, now in one named place
    "65,536 on 2 CPUs: the autoscaler's to meet": (65_536, 2.0, 65_536),
    "3 on 16 CPUs": (3, 16.0, 3),
    "0: one per CPU": (0, 4.0, 4),
    "0 on a cluster that reports no CPU": (0, 0.0, 1),
}


@pytest.mark.parametrize("requested, cpus, used", list(WORKERS.values()), ids=list(WORKERS))
def test_workers_on_ray_are_as_asked_or_one_per_cpu(requested, cpus, used):
    from scripts.lib.ray_checks import ray_workers

    assert ray_workers(requested, cpus) == used


GROUPS = {
    # round 42b: over 64 (or 2 per worker) only with 1,000 rows each (ray_checks.bounded_blocks); it was 3,057
    "1,000,000 partitions, 3,057 rows": ({"partitions": 1_000_000, "workers": 2}, 3_057, 64),
    "65,536 workers' default, 10 rows": ({"workers": 65_536}, 10, 10),
    "7 partitions, 556 rows": ({"partitions": 7}, 556, 7),
    "no rows": ({"partitions": 64}, 0, 1),
}


@pytest.mark.parametrize("runtime, rows, groups", list(GROUPS.values()), ids=list(GROUPS))
def test_dedups_shuffles_have_at_most_one_group_per_row(runtime, rows, groups):
    from scripts.lib.dedup.on_ray import partitions
    from scripts.lib.params import Runtime

    assert partitions(Runtime(engine="ray", **runtime), rows) == groups
