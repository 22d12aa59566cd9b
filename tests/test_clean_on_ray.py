"""clean@S on Ray Data (`runtime.engine: ray`): the same clean.parquet, dropped.parquet and report bytes
as the local engine, on a local cluster of three 1-CPU nodes with a small object store, for real prompt
corpora read by their real readers (GPT-4 prompts through the text reader, OpenPrompts through its CSV
reader); and a Ctrl-C stops it with one line, exit 130, Ray shut down and nothing written.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from helpers.commands import cli
from helpers.ray_runs import clean_on_ray_stopped_by, ray_workspace, session_gone, write_numbered_prompts

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

OBJECT_STORE = 80 * 1024 * 1024  # small: blocks spill to disk
OUTPUTS = ("{}.parquet", "{}.dropped.parquet", "{}.report.json")


def set_runtime(root: Path, **runtime) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"].update(runtime)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_ok(argv: list[str], root: Path, monkeypatch, capfd) -> None:
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr


def test_ray_engine_writes_the_local_engines_bytes(tmp_path, fixtures_dir, monkeypatch, capfd):
    from ray.cluster_utils import Cluster

    root = ray_workspace(tmp_path / "ws", fixtures_dir, {"engine": "local", "workers": 1})
    for source in ("t_gpt4", "t_open"):
        run_ok(["ingest", source, f"prompts/{source}.parquet"], root, monkeypatch, capfd)
    run_ok(["clean-rules", "rules.json"], root, monkeypatch, capfd)
    for source in ("t_gpt4", "t_open"):
        run_ok(
            ["clean", source, f"prompts/{source}.parquet", f"local/{source}.parquet", "--rules", "rules.json"],
            root,
            monkeypatch,
            capfd,
        )

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        # small batches, an odd number of blocks: many batches per actor, blocks cut across batches; the
        # command writes in chunks of 300 rows that cut across both, and the driver hands Ray 700 rows at a time
        monkeypatch.setattr("scripts.lib.cleaning.on_ray.WINDOW_ROWS", 700)
        set_runtime(
            root, engine="ray", ray_address=cluster.address, workers=3, batch_rows=256, partitions=7, stream_rows=300
        )
        for source in ("t_gpt4", "t_open"):
            run_ok(
                ["clean", source, f"prompts/{source}.parquet", f"ray/{source}.parquet", "--rules", "rules.json"],
                root,
                monkeypatch,
                capfd,
            )
            assert not ray.is_initialized()  # the command left the cluster
    finally:
        cluster.shutdown()
    for source in ("t_gpt4", "t_open"):
        for name in OUTPUTS:
            local, on_ray = root / "local" / name.format(source), root / "ray" / name.format(source)
            assert local.read_bytes() == on_ray.read_bytes(), on_ray.name
    assert sorted(p.name for p in (root / "ray").iterdir()) == sorted(  # no temp files left behind
        name.format(source) for source in ("t_gpt4", "t_open") for name in OUTPUTS
    )


def test_ctrl_c_on_the_ray_engine_exits_130_and_shuts_ray_down(tmp_path, fixtures_dir):
    root = ray_workspace(
        tmp_path / "ws", fixtures_dir, {"engine": "ray", "workers": 2, "batch_rows": 2000, "object_store_mb": 100}
    )
    write_numbered_prompts(root, fixtures_dir, copies=60)  # seconds of cleaning per actor
    # what Ctrl-C does: SIGINT to the stage and everything in its group, a second into the cleaning
    run = clean_on_ray_stopped_by(root, lambda pid: os.killpg(pid, signal.SIGINT), settle_s=1)
    assert run.returncode == 130, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "interrupted (SIGINT)"
    assert session_gone(run.pid, within_s=20)  # Ray's processes go with it
    assert not (root / "out").exists() or not list((root / "out").iterdir())  # nothing written, no temp file
    shutil.rmtree(root, ignore_errors=True)
