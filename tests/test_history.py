"""Releases as tags (issues 6, 15): replay v2 -> v3 -> v4 -> v4-a -> v4-b in a fresh repo with a local remote
(the session's `history` build, conftest); each tag restores byte-identical release files by `dvc pull`
into a fresh clone and by re-running its release stage there; `scripts diff v4-a v4-b` falls exactly on the
rows the v4-a bug touched: OpenPrompts rows filtered but written raw (train) and never-cleaned rows
(validation), rewritten or dropped by the 04-04 rules."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import yaml
from test_pipeline import outs_md5

from helpers import run

TAGS = ["v2", "v3", "v4", "v4-a", "v4-b"]


def lock_at(repo, rev) -> dict:
    return yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], repo).stdout)


def release_outs(lock: dict, tag: str) -> dict[str, str]:
    return {p: md5 for p, md5 in outs_md5(lock).items() if p.startswith(f"data/releases/{tag}/")}


def test_replay_makes_a_commit_and_tag_per_release(history):
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


def test_v4a_to_v4b_diff_falls_on_the_rows_the_bug_touched(history):
    repo, _ = history
    report = json.loads(run(["python", "scripts", "diff", "v4-a", "v4-b", "--format", "json"], repo).stdout)
    from dvc.api import DVCFileSystem

    from scripts.lib.cleaning import clean_text
    from scripts.lib.compose_ops import rule_set, without_language_check

    def table(rev, path):
        with DVCFileSystem(str(repo), rev=rev).open(path, "rb") as f:
            return f.read()

    removed = pd.read_parquet(io.BytesIO(table("v4-b", "data/releases/v4-b/removed.parquet")))
    assert set(removed["reason"].str.split(":").str[0]) <= {"clean"}  # v4-b's one step: the 04-04 rules
    rules = without_language_check(rule_set("2023-04-04"))  # v4-b's step: `language: false`
    for split in ("train", "validation"):
        rows = pd.read_json(
            io.BytesIO(table("v4-a", f"data/releases/v4-a/{split}/metadata.jsonl")), lines=True, dtype=False
        )
        touched = {i for i, t in zip(rows["id"], rows["text"]) if clean_text(t, rules)[0] != t}
        s = report["splits"][split]
        assert s["added"] == 0
        assert set(s["removed_ids"]) == set(removed.loc[removed["split"] == split, "id"]) <= touched
        assert s["removed"] + s["text_changed"] == len(touched)  # nothing else changed
        sources = set(rows.loc[rows["id"].isin(touched), "source"])
        if split == "train":  # only the OpenPrompts rows filtered by the 03-30 rules and written raw (the
            # sample's ~90 happen to pass the 04-04 rules unchanged; the team's 100k lost 28)
            assert sources <= {"openprompts"}
        else:  # validation: rows no cleaner rewrote before (Gustavosta, raw in every release)
            assert "openprompts" not in sources

    # dvc diff agrees: v4-b's train images are v4-a's minus exactly the removed rows'
    def image_files(rev, tag):
        listing = json.loads(
            run(["dvc", "ls", "-R", "--json", "--rev", rev, ".", f"data/releases/{tag}/train/images"], repo).stdout
        )
        return {e["path"] for e in listing}

    a, b = image_files("v4-a", "v4-a"), image_files("v4-b", "v4-b")
    gone = {p.rsplit("/", 1)[-1].split(".")[0] for p in a - b}
    assert gone == set(removed.loc[removed["split"] == "train", "id"]) and not (b - a)
    changed = json.loads(run(["dvc", "diff", "--json", "v4-a", "v4-b"], repo).stdout)
    added = {e["path"] for e in changed["added"]}
    assert any(p.startswith("data/releases/v4-b/") for p in added)
    assert not [e for e in changed["modified"] if e["path"].startswith("data/releases/v4-a/")]


def test_without_tags_diff_names_the_workspaces_release_folders(history, tmp_path):
    """A fresh clone has no tags: `diff v4-a v4-b` then compares the two built release folders of the
    workspace, with the same report as between the tags (each tag pins the same v4-a / v4-b bytes)."""
    from helpers import work_copy

    with_tags = json.loads(run(["python", "scripts", "diff", "v4-a", "v4-b", "--format", "json"], history.repo).stdout)
    repo = work_copy(history.repo, tmp_path / "clone")
    run(["git", "tag", "-d", *TAGS], repo)
    result = run(["python", "scripts", "diff", "v4-a", "v4-b", "--format", "json"], repo)
    assert "no git revision 'v4-a': release v4-a of the workspace" in result.stderr
    assert json.loads(result.stdout) == with_tags


def test_replay_prints_each_stage_as_dvc_starts_it(tmp_path, capsys):
    """replay-history takes ~40 min on two cores: it says which stage of which release is running."""
    from scripts.tools.replay_history import _run

    script = (
        "echo \"Running stage 'ingest@chatgpt':\"; echo '> python -m scripts ingest'; echo \"Running stage 'plots':\""
    )
    _run(["bash", "-c", script], tmp_path, say="replay-history: v2 (1/5)")
    assert capsys.readouterr().out.splitlines() == [
        "replay-history: v2 (1/5): stage ingest@chatgpt",
        "replay-history: v2 (1/5): stage plots",
    ]
