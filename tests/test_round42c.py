"""Round 42c: params.yaml loads in time linear in its size (the class: superlinear work in the loader).

A 10,000-release params.yaml (660,000 nodes) took minutes to load at every stage's start: listed.py compared each
dvc.yaml dependency with every stage output (quadratic in the releases), Python's cycle collector walked the
growing document on each of its passes, and ruamel worked out the YAML version by two raised AttributeErrors per
node. The structural rows count the work (calls and collector passes, not seconds) at two sizes; the guards
prove the fast path reads and refuses tricky files as before (benchmarks/params_load_bench.py times it).
"""

from __future__ import annotations

import gc
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.workspace import params_error

ROOT = Path(__file__).resolve().parents[1]


def releases_text(count: int) -> str:
    """The repository's params.yaml with `count` releases, each based on an earlier one and naming another."""
    entries = "".join(
        f"  r{n}:\n"
        + (f"    base: r{n // 2}\n" if n else "")
        + "    components:\n      - source: diffusiondb\n        split: train\n"
        + "    steps:\n      - dedup: {scope: validation_vs_train, match: exact}\n"
        for n in range(count)
    )
    return (ROOT / "params.yaml").read_text(encoding="utf-8").replace("releases:\n", "releases:\n" + entries, 1)


def with_dvc_yaml(folder: Path, count: int) -> Path:
    (folder / "params.yaml").write_text(releases_text(count), encoding="utf-8")
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    return folder / "params.yaml"


def calls_in(where: str, run: Callable[[], object], name: str | None = None) -> int:
    """Python calls (and generator resumptions) of code in files whose path holds `where` (of functions called
    `name`, if given) while `run` runs."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        code = frame.f_code
        if event == "call" and where in code.co_filename and name in (None, code.co_name):
            count += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return count


def fresh_load(path: Path) -> object:
    from scripts.lib.params import _CHECKED_PARAMS, load_params

    _CHECKED_PARAMS.clear()  # checked anew, as by a new stage process
    return load_params(path=path)


# ---------------------------------------------------------------- structural: the work grows with the size


def listed_calls(folder: Path, count: int) -> int:
    from scripts.lib.params import read_yaml
    from scripts.lib.params.listed import check_listed_params

    (folder / str(count)).mkdir()
    path = with_dvc_yaml(folder / str(count), count)
    params = read_yaml(path.read_text(encoding="utf-8"))
    return calls_in("params/listed.py", lambda: check_listed_params(params, path))


@pytest.mark.slow
def test_listed_check_work_is_linear_in_releases(tmp_path: Path) -> None:
    calls = {count: listed_calls(tmp_path, count) for count in (10, 40, 160)}
    per_release = [(calls[40] - calls[10]) / 30, (calls[160] - calls[40]) / 120]  # the fixed stages left out
    assert per_release[1] < 1.5 * per_release[0], calls  # the same per release; the pairwise check grew with them


@pytest.mark.slow
def test_yaml_version_is_worked_out_once_per_load() -> None:
    from scripts.lib.params import read_yaml

    text = "a:\n" + "".join(f"  k{n}: [x, 1, yes, 0o10]\n" for n in range(200))
    read_yaml("a: 1\n")  # ruamel imported outside the count
    version_calls = calls_in("ruamel/yaml/resolver.py", lambda: read_yaml(text), "processing_version")
    assert version_calls <= 1, version_calls  # once per node and more, before (1,201 nodes)


LOAD_WORK = {"read_yaml", "refuse_secrets", "check_params", "check_listed_params"}  # load_params' steps


def test_cycle_collector_does_not_run_during_a_load(tmp_path: Path) -> None:
    passes: list[int] = []

    def callback(phase: str, info: dict) -> None:  # a pass inside the load's work (one may follow it)
        if phase == "start" and LOAD_WORK & {frame.f_code.co_name for frame, _ in traceback.walk_stack(None)}:
            passes.append(info["generation"])

    path = with_dvc_yaml(tmp_path, 100)
    fresh_load(path)  # the modules the load imports, imported
    gc.collect()
    gc.callbacks.append(callback)
    try:
        fresh_load(path)
    finally:
        gc.callbacks.remove(callback)
    assert passes == []


@pytest.mark.slow
def test_whole_load_work_is_linear_in_releases(tmp_path: Path) -> None:
    loads = {}
    for count in (40, 160):
        (tmp_path / str(count)).mkdir()
        path = with_dvc_yaml(tmp_path / str(count), count)
        loads[count] = calls_in("/scripts/lib/", lambda path=path: fresh_load(path))
    assert loads[160] < 6 * loads[40], loads


# ---------------------------------------------------------------- guards: the same reading, the same refusals


def test_guard_written_paths_as_pairwise() -> None:
    from scripts.lib.params.listed import WrittenPaths

    outs = ["data/images/a", "data/recipes/release/v.json", "/abs/x", "//net/share/y", "."]
    index = WrittenPaths(outs)
    for path in [
        "data/images/a",
        "data/images/a/1.png",
        "data/images",
        "data/image",
        "data/images/ab",
        "data",
        "data/recipes",
        "data/recipes/release/v.json/x",
        "/abs",
        "/",
        "//net",
        "/net",
        ".",
        "x",
    ]:
        pairwise = any(path == o or path.startswith(o + "/") or o.startswith(path + "/") for o in outs)
        assert index.touches(path) == pairwise, path


GUARDS = {  # label: (params text, the line expected, None when it loads)
    "guard: duplicate release names": (
        "releases:\n  v:\n    description: a\n  v:\n    description: b\n",
        'params.yaml: line 4: not valid YAML (found duplicate key "v" with value "{}" (original value: "{}"))',
    ),
    "guard: unknown reference": (
        "sources: {}\nreleases:\n  v:\n    base: w\n",
        "params.yaml: releases.v.base: names release 'w', which is not under releases (releases has: v)",
    ),
    "guard: an alias": (
        "a: &x 1\nb: *x\n",
        "params.yaml: line 2: YAML aliases (*name) are not allowed (write the entries out)",
    ),
    "guard: a base cycle loads (release@V refuses it)": ("releases:\n  v:\n    base: w\n  w:\n    base: v\n", None),
    "guard: a merge key without alias": ("dedup:\n  <<: {threshold: 0.5}\n", None),
    "guard: %YAML 1.1 read as 1.2": ("%YAML 1.1\n---\nreleases:\n  v:\n    description: yes\n", None),
}


@pytest.mark.parametrize("label", GUARDS)
def test_guard_same_reading(label: str, tmp_path: Path) -> None:
    text, expected = GUARDS[label]
    line = params_error(tmp_path, text)
    assert (line is not None and expected is not None and line.endswith(expected)) or line == expected, line


def test_guard_yaml_12_values_under_the_one_version_resolver() -> None:
    from scripts.lib.params import read_yaml

    assert read_yaml("%YAML 1.1\n---\na: yes\nb: 010\nc: 1:20\nd: 0o10\ne: ~\n") == {
        "a": "yes",
        "b": 10,
        "c": "1:20",
        "d": 8,
        "e": None,
    }


def test_guard_collector_back_on_after_a_refusal(tmp_path: Path) -> None:
    assert gc.isenabled()
    assert params_error(tmp_path, "a: &x 1\nb: *x\n") is not None
    assert gc.isenabled()
