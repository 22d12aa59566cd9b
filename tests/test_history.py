"""Releases as tags (issue 6): replay v2 -> v3 -> v4-a -> v4-b in a fresh repo with a local remote (the
session's `history` build, conftest); each tag restores byte-identical release files by `dvc pull` into
a fresh clone and by re-running its release stage there; `scripts diff v4-a v4-b` reports exactly the
rows re-cleaning removed."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import yaml

from conftest import run
from test_pipeline import outs_md5

TAGS = ["v2", "v3", "v4-a", "v4-b"]


def lock_at(repo, rev) -> dict:
    return yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], repo).stdout)


def release_outs(lock: dict, tag: str) -> dict[str, str]:
    return {p: md5 for p, md5 in outs_md5(lock).items() if p.startswith(f"data/releases/{tag}/")}


def test_replay_makes_four_commits_and_tags(history):
    repo, _ = history
    assert run(["git", "tag", "--list"], repo).stdout.split() == sorted(TAGS)
    subjects = run(["git", "log", "--format=%s", "--reverse"], repo).stdout.splitlines()
    assert subjects == [f"Release {t}" for t in TAGS]
    message = run(["git", "tag", "-n5", "--list", "v4-b"], repo).stdout
    assert "train" in message and "validation" in message


@pytest.mark.parametrize("tag", TAGS)
def test_each_tag_restores_by_pull_and_rebuilds_byte_identical(history, tmp_path, tag):
    repo, remote = history
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", "--no-hardlinks", "--branch", tag, str(repo), str(clone)], tmp_path)
    assert str(remote.resolve()) in (clone / ".dvc" / "config").read_text()  # the replay committed the remote's url
    run("dvc pull -q", clone)
    assert run("dvc status --json", clone).stdout.strip() in ("{}", "")
    tagged = release_outs(lock_at(repo, tag), tag)
    assert tagged, f"no release outputs for {tag} in its dvc.lock"
    # rebuild the release from its pulled inputs: same bytes as the tag recorded
    run(["dvc", "repro", "--force", "--single-item", f"release@{tag}"], clone)
    rebuilt = release_outs(yaml.safe_load((clone / "dvc.lock").read_text()), tag)
    assert rebuilt == tagged


def test_releases_keep_their_bytes_across_later_tags(history):
    repo, _ = history
    final = lock_at(repo, "v4-b")
    for tag in TAGS:
        assert release_outs(lock_at(repo, tag), tag) == release_outs(final, tag)


def test_diff_reports_exactly_the_rows_recleaning_removed(history):
    repo, _ = history
    report = json.loads(run(["python", "scripts", "diff", "v4-a", "v4-b", "--format", "json"], repo).stdout)
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(repo), rev="v4-b")
    with fs.open("data/releases/v4-b/removed.parquet", "rb") as f:
        removed = pd.read_parquet(io.BytesIO(f.read()))
    recleaned = set(removed.loc[removed["reason"].str.startswith("clean:"), "id"])
    assert recleaned, "the sample data must give re-cleaning something to remove"
    train = report["splits"]["train"]
    assert set(train["removed_ids"]) == recleaned
    assert set(train["removed_by_reason"]) <= {r for r in removed["reason"] if r.startswith("clean:")}
    assert train["added"] == 0 and report["splits"]["validation"]["removed"] == 0
    assert train["text_changed"] > 0  # re-cleaning also rewrites OpenPrompts batch 2 captions

    # dvc diff agrees: v4-b's image files are v4-a's minus exactly the removed rows'
    def image_files(rev, tag):
        listing = json.loads(run(["dvc", "ls", "-R", "--json", "--rev", rev, ".", f"data/releases/{tag}/train/images"], repo).stdout)
        return {e["path"] for e in listing}

    a, b = image_files("v4-a", "v4-a"), image_files("v4-b", "v4-b")
    gone = {p.rsplit("/", 1)[-1].split(".")[0] for p in a - b}
    assert gone == recleaned and not (b - a)
    changed = json.loads(run(["dvc", "diff", "--json", "v4-a", "v4-b"], repo).stdout)
    added = {e["path"] for e in changed["added"]}
    assert any(p.startswith("data/releases/v4-b/") for p in added)
    assert not [e for e in changed["modified"] if e["path"].startswith("data/releases/v4-a/")]
