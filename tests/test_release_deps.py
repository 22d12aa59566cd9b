"""Each release and the plots depend only on what they read (dvc status on a copy of the session build):
a param of a source no release reads marks none of them changed, a layout change re-runs the export of
that release and not its composition (no cleaning or dedup again), and a new release leaves every
earlier one up to date."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import run, work_copy


def edit(repo, change) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def changed_after_recipes(repo) -> set[str]:
    run(["dvc", "repro", "recipes"], repo)
    return set(json.loads(run("dvc status --json", repo).stdout or "{}"))


@pytest.mark.slow
def test_only_what_a_change_touches_is_out_of_date(history, tmp_path):
    repo = work_copy(history.repo, tmp_path / "repo")

    # laion_buckets is in no release: its entry changes its own stages only
    edit(repo, lambda p: p["sources"]["laion_buckets"].update(on_error="fail"))
    assert changed_after_recipes(repo) == {"ingest@laion_buckets"}

    # a layout: release@v4-b (which sets no export of its own) re-runs, compose@v4-b does not
    edit(repo, lambda p: p["releases"]["v4-b"].update(export={"format": "webdataset"}))
    assert changed_after_recipes(repo) == {"ingest@laion_buckets", "release@v4-b"}

    # a new release: its two stages, the plots and the summary (they list it), nothing earlier
    edit(repo, lambda p: p["releases"].update(v5={"base": "v4-b", "steps": [{"dedup": {"scope": "after_merge"}}]}))
    assert changed_after_recipes(repo) == {
        "ingest@laion_buckets",
        "release@v4-b",
        "compose@v5",
        "release@v5",
        "plots",
        "summary",
    }
