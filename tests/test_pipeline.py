"""The whole road (issue 2): `dvc repro` on a fresh copy builds v2, v3, v4-a, v4-b; reruns are no-ops;
an experiment changes row counts; a second fresh copy reproduces dvc.lock exactly."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import copy_repo, run

RELEASES = ["v2", "v3", "v4-a", "v4-b"]


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
    assert set(stats["v4-a"]["by_source"]["train"]) == {"diffusiondb", "openprompts1", "openprompts2"}
    assert stats["v4-a"]["by_source"]["validation"].get("gustavosta", 0) > 0
    # v4-b re-applies the cleaning filter that v4-a forgot on OpenPrompts batch 2
    cleaned = {k: v for k, v in stats["v4-b"]["removed"].items() if k.startswith("clean:")}
    assert sum(cleaned.values()) > 0
    assert stats["v4-b"]["rows"]["train"] == stats["v4-a"]["rows"]["train"] - sum(cleaned.values())


def test_second_repro_runs_nothing(built_repo):
    result = run("dvc repro", built_repo)
    assert "Running stage" not in result.stdout
    assert run("dvc status --json", built_repo).stdout.strip() in ("{}", "")


def test_threshold_experiment_changes_counts(built_repo):
    before = json.loads((built_repo / "data/releases/v2/stats.json").read_text())["rows"]["total"]
    run(["dvc", "exp", "run", "-S", "dedup.threshold=0.8", "-n", "thr08"], built_repo)
    shown = json.loads(run("dvc exp show --json", built_repo).stdout)
    text = json.dumps(shown)
    assert "thr08" in text
    after = json.loads((built_repo / "data/releases/v2/stats.json").read_text())["rows"]["total"]
    kept = {p: json.loads((built_repo / p).read_text())["kept"] for p in ("data/dedup/diffusiondb.report.json",)}
    assert after > before, "a higher threshold must keep more rows"
    assert kept["data/dedup/diffusiondb.report.json"] > 0
    run(["dvc", "exp", "apply", "workspace"], built_repo, check=False)
    run(["git", "checkout", "--", "."], built_repo)
    run("dvc checkout -f", built_repo)


def test_two_fresh_copies_give_identical_locks(built_repo, tmp_path):
    other = copy_repo(tmp_path / "other")
    run("dvc repro", other)
    ours = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], built_repo).stdout)
    theirs = yaml.safe_load((other / "dvc.lock").read_text())
    assert outs_md5(ours) == outs_md5(theirs)
    assert len(outs_md5(ours)) > 40
