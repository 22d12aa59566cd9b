"""Stage recipes (scripts/recipes.py): each release@V and prefilter@S reads its own share of params.yaml
`releases` from data/recipes/, so DVC re-runs a stage only when that share changes. The DVC side (a new
release re-runs nothing earlier) is tests/test_dvc_hygiene.py::test_a_new_release_reruns_no_earlier_release_and_no_prefilter."""

from __future__ import annotations

import json

import pytest

from helpers import REPO, cli, copy_repo
from scripts.lib.errors import DataError
from scripts.lib.params import Release, load_params
from scripts.lib.plans import check_plan, plan_releases, prefilter_plan, release_plan

BEFORE_GENERATE = {"dedup": {"scope": "against", "before_generate": True, "reference": "a", "against": "train"}}


def releases() -> dict:
    return {
        "a": {"components": [{"source": "s1", "split": "train", "into": "train"}]},
        "ref": {"components": [{"source": "s3", "split": "train", "into": "train"}]},
        "b": {
            "base": "a",
            "components": [
                {
                    "source": "s2",
                    "split": "train",
                    "into": "train",
                    "steps": [{"dedup": {"scope": "against", "reference": "ref", "against": "train"}}],
                }
            ],
        },
        "c": {
            "base": "b",
            "components": [
                {"source": "s2", "split": "all", "into": "train", "rows": [10, None], "steps": [BEFORE_GENERATE]}
            ],
        },
        "d": {"components": [{"source": "s1", "split": "validation", "into": "validation"}]},
    }


def names(plan: dict) -> list[str]:
    return [name for name, _ in plan["releases"]]


def test_a_release_reads_its_base_chain_and_references_transitively_in_params_order():
    r = releases()
    assert names(release_plan("a", r, {})) == ["a"]
    assert names(release_plan("b", r, {})) == ["a", "ref", "b"]
    assert names(release_plan("c", r, {})) == ["a", "ref", "b", "c"]
    plan = release_plan("c", r, {})
    assert plan["releases"] == [[n, r[n]] for n in ["a", "ref", "b", "c"]]  # entries verbatim
    assert plan_releases(plan) == {n: Release.model_validate(r[n]) for n in ["a", "ref", "b", "c"]}


def test_a_later_release_changes_no_earlier_plan():
    r = releases()
    before = {n: release_plan(n, r, {}) for n in r} | {s: prefilter_plan(s, r) for s in ("s1", "s2", "s3")}
    r["e"] = {
        "base": "c",
        "components": [
            {"source": "s3", "split": "all", "into": "train", "steps": [{"dedup": {"scope": "self", "threshold": 0.9}}]}
        ],
    }
    assert {n: release_plan(n, r, {}) for n in releases()} | {
        s: prefilter_plan(s, r) for s in ("s1", "s2", "s3")
    } == before
    # a before_generate step on s3 changes s3's plan, and s2's `prefiltered` (s3 can no longer be its reference)
    r["e"]["components"][0]["steps"] = [BEFORE_GENERATE]
    assert prefilter_plan("s3", r)["prefiltered"] == prefilter_plan("s2", r)["prefiltered"] == ["s2", "s3"]
    assert prefilter_plan("s1", r) == before["s1"]


def test_prefilter_plan_holds_the_steps_releases_and_what_they_read():
    r = releases()
    assert prefilter_plan("s1", r) == {"prefiltered": [], "releases": []}  # nothing runs before generation
    plan = prefilter_plan("s2", r)
    assert plan["prefiltered"] == ["s2"]
    assert names(plan) == ["a", "ref", "b", "c"]  # c's step, its base chain, the references on the way


def test_the_shipped_params_give_v2_a_plan_of_its_own():
    r = load_params(path=REPO / "params.yaml")["releases"]
    assert names(release_plan("v2", r, {})) == ["v2"]
    assert names(release_plan("v4-b", r, {}))[-1] == "v4-b" and "v3" not in names(release_plan("v4-b", r, {}))
    assert prefilter_plan("chatgpt", r) == {"prefiltered": [], "releases": []}


def test_a_stale_or_missing_plan_is_one_line(tmp_path):
    r = releases()
    path = tmp_path / "b.json"
    path.write_text(json.dumps(release_plan("b", r, {})), encoding="utf-8")
    check_plan(path, release_plan("b", r, {}))  # current: no error
    r["a"]["components"][0]["split"] = "all"  # params edited after the plan was written
    with pytest.raises(DataError, match=r"b\.json: differs from params\.yaml releases .*dvc repro recipes"):
        check_plan(path, release_plan("b", r, {}))
    with pytest.raises(DataError, match=r"missing\.json: not found \(run `dvc repro recipes`\)"):
        check_plan(tmp_path / "missing.json", release_plan("b", r, {}))
    path.write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match="unreadable recipe plan"):
        check_plan(path, release_plan("b", r, {}))


def test_the_stage_writes_one_file_per_release_and_source_and_release_checks_it(tmp_path, monkeypatch, capfd):
    repo = copy_repo(tmp_path / "repo")
    result = cli(["recipes", "data/recipes"], repo, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    params = load_params(path=repo / "params.yaml")
    written = sorted(p.relative_to(repo / "data/recipes").as_posix() for p in (repo / "data/recipes").rglob("*.json"))
    assert written == sorted(
        [f"{kind}/{n}.json" for n in params["releases"] for kind in ("release", "compose")]
        + [f"prefilter/{s}.json" for s in params["sources"]]
        + ["plots.json"]
    )
    v3 = json.loads((repo / "data/recipes/release/v3.json").read_text())
    assert v3 == json.loads(json.dumps(release_plan("v3", params["releases"], params["sources"])))
    assert [name for name, _ in v3["sources"]] == ["diffusiondb", "chatgpt", "gustavosta"]  # what v2 and v3 read
    compose_v3 = json.loads((repo / "data/recipes/compose/v3.json").read_text())
    assert all("description" not in entry and "export" not in entry for _, entry in compose_v3["releases"])
    # a hand-run release after an edit of what it reads: one line, before any work
    text = (repo / "params.yaml").read_text(encoding="utf-8")
    (repo / "params.yaml").write_text(
        text.replace("seed 42); each split cleaned", "seed 42); each split  cleaned", 1), encoding="utf-8"
    )
    result = cli(
        ["release", "v3", "data/splits", "data/releases/v3", "--recipe", "data/recipes/release/v3.json"],
        repo,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 2  # a DataError's code (cli.py)
    assert (
        result.stderr.strip()
        == "error: data/recipes/release/v3.json: differs from params.yaml releases (params edited since): run `dvc repro recipes`"
    )
