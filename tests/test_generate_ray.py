"""generate@S on `runtime.engine: ray`: an actor pool on a local multi-node cluster writes the bytes the
local engine writes, and Ctrl-C leaves no Ray process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import file_digests
from helpers.children import process_alive, scripts_env, start_scripts
from scripts.generate import generate
from scripts.lib.params import Generate, Runtime
from scripts.lib.tables import write_parquet

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
OBJECT_STORE = 80 * 2**20  # small: blocks of images spill rather than fit


def prompts(n: int) -> pd.DataFrame:
    texts = [f"a watercolor of a harbour at dawn, boat number {i}" for i in range(n)]
    return pd.DataFrame({"id": [f"row{i:03d}" for i in range(n)], "text": texts, "prompt": texts})


@pytest.fixture
def cluster(monkeypatch):
    """Three nodes of one CPU each on this machine, as `ray up` would give three small machines."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the nodes' workers import scripts.*
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False},
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_an_actor_pool_on_three_nodes_writes_the_local_engines_bytes(tiny_model_dir, tmp_path, cluster):
    import torch

    torch.set_num_threads(1)
    table = prompts(7)
    runtime = Runtime(engine="ray", ray_address=cluster.address, workers=3, writers=1)
    for noise in ("per_prompt", "sequential"):  # sequential: each row's draw, whichever actor gets its block
        settings = Generate(model=str(tiny_model_dir), steps=2, batch_size=2, noise=noise)
        generate(table, settings, tmp_path / noise / "local")
        counts = generate(table, settings, tmp_path / noise / "ray", store=tmp_path / noise / "store", runtime=runtime)
        assert counts["rendered"] == 7 and counts["pipeline_calls"] >= 4  # blocks of at most 2 rows
        local = file_digests(tmp_path / noise / "local")
        assert file_digests(tmp_path / noise / "ray") == local
        assert {k for k in local if k.endswith(".jpg")} <= set(file_digests(tmp_path / noise / "store"))  # stored too


def ray_processes(root_pid: int) -> set[int]:
    """Pids of the processes below `root_pid` (Ray's gcs_server, raylet, workers...), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
def test_ctrl_c_during_a_ray_render_exits_130_and_leaves_no_ray_process(tiny_model_dir, tmp_path):
    params = {
        "generate": {"model": str(tiny_model_dir), "steps": 2, "batch_size": 1},
        "runtime": {"engine": "ray", "workers": 2},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    write_parquet(prompts(60), tmp_path / "in.parquet")
    env = scripts_env(OMP_NUM_THREADS="1")
    # its own process group, as a terminal's foreground job
    proc = start_scripts(tmp_path, "generate", "demo", "in.parquet", "out", "--store", "store", env=env)
    started: set[int] = set()
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not list((tmp_path / "store").glob("??/*.jpg")):
        started |= ray_processes(proc.pid)
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    started |= ray_processes(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: every process of the foreground group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "manifest.parquet").exists()  # no partial output passes for a whole one
    deadline = time.monotonic() + 20
    while any(process_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in started if process_alive(pid)]
    assert len(started) >= 2 and not left  # Ray ran (gcs_server, raylet, workers) and is gone
