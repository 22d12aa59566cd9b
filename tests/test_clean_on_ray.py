"""clean@S on Ray Data (`runtime.engine: ray`): the same clean.parquet, dropped.parquet and report bytes
as the local engine, on a local cluster of three 1-CPU nodes with a small object store, for real prompt
corpora read by their real readers (GPT-4 prompts through the text reader, OpenPrompts through its CSV
reader); and a Ctrl-C stops it with one line, exit 130, Ray shut down and nothing written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.commands import cli

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
OBJECT_STORE = 80 * 1024 * 1024  # small: blocks spill to disk
OUTPUTS = ("{}.parquet", "{}.dropped.parquet", "{}.report.json")


def workspace(root: Path, fixtures: Path, runtime: dict) -> Path:
    """A folder with params.yaml (the repository's, the fixture sources added) and each source's prompt
    table ingested by its reader."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"]["t_gpt4"] = {"kind": "text", "path": str(fixtures / "gpt4-prompts-3k.txt"), "clean": True}
    params["sources"]["t_open"] = {
        "kind": "openprompts",
        "path": str(fixtures / "openprompts-1k.csv"),
        "clean": {"rules": "final", "mode": "filter_only"},
        "keep_empty": True,
    }
    params["runtime"] = {**params.get("runtime", {}), **runtime}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def set_runtime(root: Path, **runtime) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"].update(runtime)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_ok(argv: list[str], root: Path, monkeypatch, capfd) -> None:
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr


def test_ray_engine_writes_the_local_engines_bytes(tmp_path, fixtures_dir, monkeypatch, capfd):
    from ray.cluster_utils import Cluster

    root = workspace(tmp_path / "ws", fixtures_dir, {"engine": "local", "workers": 1})
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
        # command writes in chunks of 300 rows that cut across both
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


def session_processes(session: int) -> list[str]:
    """The command lines of the live processes in a session (the stage and everything it started)."""
    out = subprocess.run(["ps", "-e", "-o", "sid=,stat=,args="], capture_output=True, text=True).stdout
    return [
        args
        for sid, stat, args in (line.split(None, 2) for line in out.splitlines() if line.strip())
        if int(sid) == session and not stat.startswith("Z")
    ]


def test_ctrl_c_on_the_ray_engine_exits_130_and_shuts_ray_down(tmp_path, fixtures_dir):
    import pandas as pd

    from scripts.lib.io import PROMPT_COLUMNS
    from scripts.lib.tables import write_parquet

    root = workspace(
        tmp_path / "ws", fixtures_dir, {"engine": "ray", "workers": 2, "batch_rows": 2000, "object_store_mb": 100}
    )
    prompts = (fixtures_dir / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    texts = [f"{prompt} {i}" for i in range(60) for prompt in prompts]  # distinct: seconds of cleaning per actor
    write_parquet(
        pd.DataFrame(
            {
                "id": [f"r{i}" for i in range(len(texts))],
                "source": "t_gpt4",
                "prompt": texts,
                "split": None,
                "image": None,
                "width": 512,
                "height": 512,
                "meta": "{}",
            }
        )[PROMPT_COLUMNS],
        root / "in.parquet",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts", "clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet"],
        cwd=root,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any("BatchCleaner" in args for args in session_processes(proc.pid)):  # an actor is cleaning
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no Ray actor started"
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the stage and everything in its group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted (SIGINT)"
    deadline = time.monotonic() + 20
    while session_processes(proc.pid) and time.monotonic() < deadline:  # Ray's processes go with it
        time.sleep(0.2)
    assert session_processes(proc.pid) == []
    assert not (root / "out").exists() or not list((root / "out").iterdir())  # nothing written, no temp file
    shutil.rmtree(root, ignore_errors=True)
