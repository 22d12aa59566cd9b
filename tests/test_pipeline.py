"""The whole road: the session's build (conftest `history`: `dvc repro` of v2, v3, v4, v4-a, v4-b
from a fresh copy) makes five imagefolder releases; a rerun is a no-op; an experiment changes row
counts; the build reproduces main's committed dvc.lock byte for byte.

Every test here reads the shared build; the ones that change a repository work on a `work_copy`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from helpers import REPO, run

RELEASES = ["v2", "v3", "v4", "v4-a", "v4-b"]


def outs_md5(lock: dict) -> dict[str, str]:
    """Every output path -> md5 in a dvc.lock."""
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


@pytest.mark.parametrize("release", RELEASES)
def test_every_release_is_an_imagefolder(built_repo, release):
    from datasets import load_dataset

    folder = built_repo / "data" / "releases" / release
    for split in ("train", "validation"):
        lines = (folder / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
        assert lines, f"{release}/{split} is empty"
        for line in lines:
            record = json.loads(line)
            assert {"file_name", "text", "orig_text", "source", "id"} <= set(record)
            assert (folder / split / record["file_name"]).is_file()
    dataset = load_dataset("imagefolder", data_dir=str(folder))
    stats = json.loads((folder / "stats.json").read_text())
    assert dataset["train"].num_rows == stats["rows"]["train"]
    assert dataset["validation"].num_rows == stats["rows"]["validation"]
    row = dataset["train"][0]
    assert row["image"].size[0] > 0 and row["text"]


def test_release_sources_follow_the_recipes(built_repo):
    stats = {r: json.loads((built_repo / f"data/releases/{r}/stats.json").read_text()) for r in RELEASES}
    assert set(stats["v2"]["by_source"]["train"]) == {"diffusiondb"}
    assert set(stats["v3"]["by_source"]["train"]) == {"diffusiondb", "chatgpt", "gustavosta"}
    assert set(stats["v4-a"]["by_source"]["train"]) == {"diffusiondb", "openprompts"}
    assert stats["v4-a"]["by_source"]["validation"].get("gustavosta", 0) > 0
    # v4-b re-applies the cleaning filter that v4-a forgot on OpenPrompts batch 2
    cleaned = {k: v for k, v in stats["v4-b"]["removed"].items() if k.startswith("clean:")}
    assert sum(cleaned.values()) > 0
    assert stats["v4-b"]["rows"]["total"] == stats["v4-a"]["rows"]["total"] - sum(cleaned.values())


def test_second_repro_runs_nothing(built_repo):
    """Nothing is left to run after the build: `dvc status` is clean and `dvc repro --dry` (what a second
    `dvc repro` would run, decided the same way, without touching the shared build) runs no stage."""
    assert run("dvc status --json", built_repo).stdout.strip() in ("{}", "")
    dry = run("dvc repro --dry", built_repo).stdout
    assert "Running stage" not in dry and "up to date" in dry.lower()


@pytest.mark.xdist_group("readme")  # shares the session's one README run (conftest `readme_run`)
def test_threshold_experiment_changes_counts(readme_run, history):
    """The README's `dvc exp run -S dedup.threshold=0.8` (run once per session by `readme_run`, in its own
    work copy, never on the shared build): `dvc exp show` lists it and a higher threshold keeps more rows."""
    repo, results = readme_run
    ran = [result for block, result in results if "dvc exp run -S dedup.threshold=0.8" in block.code]
    assert ran and ran[0].returncode == 0, "README.md no longer runs the dedup.threshold=0.8 experiment"
    shown = json.dumps(json.loads(run("dvc exp show --json", repo).stdout))
    assert '"threshold": 0.8' in shown and '"threshold": 0.7' in shown, shown[
        :2000
    ]  # the experiment beside the baseline
    # a higher threshold keeps more DiffusionDB rows before rendering; v2's count can go either way after it
    # (its per-split step removes both members of each pair that the MinHash pass now lets through)
    kept = [json.loads((r / "data/dedup/diffusiondb.report.json").read_text())["kept"] for r in (history.repo, repo)]
    assert kept[1] > kept[0], "a higher threshold must keep more rows"
    ids = [
        set(pd.read_parquet(r / "data/releases/v2/rows.parquet", columns=["id"])["id"]) for r in (history.repo, repo)
    ]
    assert ids[0] != ids[1], "v2 is built from the experiment's rows"
    summary = json.loads((repo / "data/summary.json").read_text())
    assert summary["dedup_threshold"] == 0.8 and summary["rows"]["v2"] == len(ids[1])


def test_the_session_build_reproduces_the_committed_lock(built_repo):
    """Two builds from scratch give identical outputs: main's committed dvc.lock (`dvc repro` on this tree,
    on the machine that committed it; test_dvc_hygiene keeps it this tree's) and this session's build
    (replay-history from a copy of this tree, release by release, here) record the same md5 for every
    output, the torch stages' images included. test_interrupts.py rebuilds tiny_model + generate@diffusiondb
    from scratch against this build's lock, test_generate.py builds tiny_model + generate twice, and
    test_history.py rebuilds every release stage from its pulled inputs byte for byte."""
    ours = outs_md5(yaml.safe_load((built_repo / "dvc.lock").read_text()))
    committed = outs_md5(yaml.safe_load((REPO / "dvc.lock").read_text()))
    assert len(committed) > 100 and {"data/dedup/diffusiondb.parquet", "data/images/diffusiondb"} <= set(committed)
    differ = sorted(path for path in set(ours) | set(committed) if ours.get(path) != committed.get(path))
    assert not differ, f"outputs whose bytes differ from main's dvc.lock: {differ[:10]}"
