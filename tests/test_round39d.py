"""Round 39d: `recipes` at scale, and hostile `releases` shapes (base cycles, missing bases).

1. `recipes` parsed params.yaml four times a run (releases, sources, then split twice) and dumped every release
   entry again for every plan that holds it: 200 releases based on one of 1,000 steps took 14 s, 1,000 on one
   of 10,000 steps minutes (json's Python encoder). params.yaml is now parsed once (plans.written_params) and
   each entry dumped once per kind of plan and spliced in (plans.PlanTexts); the files are byte for byte what
   dumps_json(plan) wrote (benchmarks/recipes_bench.py: the times and the ratio).
2. A cycle of bases or references of 1,000 releases, or a chain of 1,000 leading into one, was one line of
   7,000 characters naming every link; the path is now shown by its ends and how many are left out between.
"""

from __future__ import annotations

import inspect
import json

import pytest

from helpers.commands import cli
from helpers.workspace import PARAMS, error_line, write_params


def components() -> list:  # a fresh object each time: yaml.safe_dump writes a shared one as an alias
    return [{"source": "diffusiondb", "split": "train"}]


def clean() -> dict:
    return {"clean": {"rules": "2023-03-30", "mode": "rewrite", "column": "orig_text"}}


def chain(n: int) -> dict:
    """n releases, each based on the one before."""
    return {"c0": {"components": components()}} | {
        f"c{i}": {"base": f"c{i - 1}", "steps": [clean()]} for i in range(1, n)
    }


def derived(steps: int, n: int) -> dict:
    """n releases based on one of `steps` steps."""
    big = {"big": {"components": components(), "steps": [clean() for _ in range(steps)]}}
    return big | {f"d{i}": {"base": "big", "description": f"d {i}"} for i in range(n)}


def parses_by_recipes(monkeypatch) -> list[int]:
    """How many times the recipes stage parses params.yaml (scripts.lib.params.read_yaml called from
    scripts/recipes.py); the line it prints asks params.yaml for secrets' names on its own (import_env)."""
    import scripts.lib.params as params

    calls: list[int] = []
    parse = params.read_yaml

    def counted(text, *args, **kwargs):
        files = [frame.filename for frame in inspect.stack()]
        if any(f.endswith("scripts/recipes.py") for f in files) and not any(f.endswith("import_env.py") for f in files):
            calls.append(1)
        return parse(text, *args, **kwargs)

    monkeypatch.setattr(params, "read_yaml", counted)
    return calls


# ---------------------------------------------------------------- 1. params.yaml once, entries dumped once
ONCE = {  # releases -> (plan files written)
    "the repository's releases": (None, 2 * len(PARAMS["releases"])),
    "a chain of 15 based-on releases": (chain(15), 30),
    "10 releases based on one of 100 steps": (derived(100, 10), 22),
}


@pytest.mark.parametrize("case", ONCE)
def test_recipes_parses_params_yaml_once_a_run(tmp_path, monkeypatch, capfd, case):
    releases, plans = ONCE[case]
    write_params(tmp_path, **({"releases": releases} if releases else {}))
    calls = parses_by_recipes(monkeypatch)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(calls) == 1
    assert len(list((tmp_path / "data/recipes").glob("*/*.json"))) >= plans


SPLICED = {  # releases whose plan files must be exactly json.dumps(plan, indent=2, sort_keys=True)
    "a deep chain of based-on releases": chain(25),
    "releases based on one of many steps": derived(100, 10),
    "entries holding unicode, quotes and line breaks": {
        "u": {"components": components(), "description": 'caf\u00e9 "q" \\ \n\t \u202e \U0001f600'},
        "v": {"base": "u", "description": 'plan-entry-x:0 "plan-entry-'},
    },
}


@pytest.mark.parametrize("case", SPLICED)
def test_plan_files_are_the_plain_dump_of_their_plan(tmp_path, monkeypatch, capfd, case):
    """Spliced entries are byte for byte what one json.dumps of the whole plan writes (guard: held before)."""
    from scripts.lib.plans import compose_plan, release_plan

    releases = SPLICED[case]
    write_params(tmp_path, releases=releases)
    assert cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd).returncode == 0
    sources = {s: e for s, e in PARAMS["sources"].items()}
    for name in releases:
        plan = release_plan(name, releases, sources)
        for kind, expected in (("release", plan), ("compose", compose_plan(plan))):
            text = json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            assert (tmp_path / f"data/recipes/{kind}/{name}.json").read_text(encoding="utf-8") == text


@pytest.mark.slow
def test_a_thousand_releases_based_on_one_of_a_thousand_steps_plan_in_seconds(tmp_path, monkeypatch, capfd):
    """14 s at 200 such releases before (about 70 s at 1,000)."""
    import time

    write_params(tmp_path, releases=derived(1000, 1000))
    started = time.monotonic()
    assert cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd).returncode == 0
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_the_plan_bound_still_refuses_a_long_chain_in_one_line(tmp_path, monkeypatch, capfd):
    """Guard (held before): 700 chained releases would hold 245,000 entries."""
    write_params(tmp_path, releases=chain(700))
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "the release plans would hold more than 200000 entries" in line, line
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- 2. long cycles named in a short line
def against(reference: str) -> dict:
    step = {"dedup": {"scope": "against", "against": "train", "reference": reference}}
    return {"source": "diffusiondb", "split": "validation", "into": "validation", "steps": [step]}


LONG_PATHS = {  # releases -> what the one line starts with and ends with
    "a base cycle of 1,000": (
        {f"r{i}": {"base": f"r{(i + 1) % 1000}", "components": components()} for i in range(1000)},
        "releases: base cycle r0 -> r1 -> r2 -> r3 -> ... (993 more) -> r997 -> r998 -> r999 -> r0",
    ),
    "a chain of 1,000 into a base cycle of 2": (
        {f"r{i}": {"base": f"r{i + 1}", "components": components()} for i in range(1000)}
        | {"r1000": {"base": "r999", "components": components()}},
        "releases: base cycle r0 -> r1 -> r2 -> r3 -> ... (994 more) -> r998 -> r999 -> r1000 -> r999",
    ),
    "a reference cycle of 1,000": (
        {f"r{i}": {"components": [against(f"r{(i + 1) % 1000}")]} for i in range(1000)},
        "releases.r0.components[0].steps[0].dedup.reference: reference cycle r0 -> r1 -> r2 -> r3 -> ... (993 more)"
        " -> r997 -> r998 -> r999 -> r0",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", LONG_PATHS)
def test_a_long_cycle_is_named_by_its_ends_in_a_short_line(tmp_path, monkeypatch, capfd, case):
    releases, expected = LONG_PATHS[case]
    write_params(tmp_path, releases=releases)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line == f"error: params.yaml: {expected}", line[:400]
    assert not (tmp_path / "data").exists()


SHORT_CYCLES = {  # guard (held before): short cycles and a missing base keep their whole line
    "a base cycle of 1": ({"a": {"base": "a", "components": components()}}, "releases: base cycle a -> a"),
    "a base cycle of 2": (
        {"a": {"base": "b", "components": components()}, "b": {"base": "a"}},
        "releases: base cycle a -> b -> a",
    ),
    "a base naming a missing release": (
        {"a": {"base": "nope", "components": components()}},
        "releases.a.base: names release 'nope', which is not under releases (releases has: a)",
    ),
}


@pytest.mark.parametrize("case", SHORT_CYCLES)
def test_a_short_cycle_or_a_missing_base_keeps_its_line(tmp_path, monkeypatch, capfd, case):
    releases, expected = SHORT_CYCLES[case]
    write_params(tmp_path, releases=releases)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and error_line(result.stderr) == f"error: params.yaml: {expected}"
    assert not (tmp_path / "data").exists()
