"""Round 27c: params.yaml checked as DVC reads and uses it, before any stage runs (every row failed before its fix):

1. A key dvc.yaml lists in a stage's `params:` (`sources.S.clean`, `.dedup`, `.caption_language`, caption's keys,
   `dedup.seed`) left out of params.yaml passed every check (the models fill in defaults), while DVC refused that
   stage ("Parameters ... are missing") after the stages before it ran. Now dvc.yaml's lists, each foreach entry
   resolved, are checked at any stage's start: one line naming the key and the stage (params.listed).
2. `sources.S.images: null` became the word None in captions@S's command, and a path inside the folders stages
   write that none writes (`data/images/X`, X not in generate.sources; `data/synthesize/N/prompts.txt`, N not
   under synthesize) was a dependency nothing produces: both failed late. Refused at the first stage, one line.
3. `generate.sources` naming one source twice was accepted (DVC makes one stage of both). Refused.
4. A params.yaml in a loop of links (or linking to nothing) read "params file not found". Each says what it is.
5. An entry name YAML reads as no string (`true:`, `1.10:`, `~:`, `2024-01-01:`) was `sources[1]: Input should
   be a valid string` (an index nobody wrote) or a type error. Now one line saying what YAML made of it.
"""

from __future__ import annotations

import copy
import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest
import yaml

from helpers.commands import cli
from helpers.repos import REPO, env
from helpers.workspace import PARAMS, error_line, write_params


def _first_stage_refuses(tmp_path, monkeypatch, capfd, change: Callable[[dict], None], with_dvc: bool = True) -> str:
    """`recipes` (run before any data stage) in a workspace holding the repository's dvc.yaml and its params.yaml
    changed by `change`: its one error line, exit 2; nothing written."""
    params = copy.deepcopy(PARAMS)
    change(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    if with_dvc:
        shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: params.yaml: "), (result.returncode, line)
    assert not (tmp_path / "data").exists()
    return line


def _drop(dotted: str) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        *path, last = dotted.split(".")
        entry = params
        for key in path:
            entry = entry[key]
        del entry[last]

    return change


def _set(dotted: str, value) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        *path, last = dotted.split(".")
        entry = params
        for key in path:
            entry = entry[key]
        entry[last] = value

    return change


# ---------------------------------------------------------------- 1. keys dvc.yaml lists, left out


LISTED_KEYS = {  # key left out -> the stage DVC would refuse
    "a source's clean": ("sources.diffusiondb.clean", "clean@diffusiondb"),
    "a source's dedup": ("sources.chatgpt.dedup", "dedup@chatgpt"),
    "a source's caption_language": ("sources.gustavosta.caption_language", "captions@gustavosta"),
    "a caption entry's qa": ("caption.laion_buckets.qa", "caption@laion_buckets"),
    "a dedup key": ("dedup.seed", "dedup@diffusiondb"),
    "a preview key": ("preview.dedup_clusters", "dedup@diffusiondb"),
    "a whole section": ("split", "prefilter@diffusiondb"),
}


@pytest.mark.parametrize("case", LISTED_KEYS)
def test_a_key_dvc_yaml_lists_left_out_is_one_line_at_the_first_stage(tmp_path, monkeypatch, capfd, case):
    key, stage = LISTED_KEYS[case]
    line = _first_stage_refuses(tmp_path, monkeypatch, capfd, _drop(key))
    assert line.startswith(f"error: params.yaml: {key}: missing, but dvc.yaml lists it in the params of stage {stage} ")


def test_without_dvc_yaml_the_defaults_still_serve(tmp_path, monkeypatch, capfd):
    """A params file read outside a DVC project (a test's, a tool's) keeps its defaults: nothing lists keys."""
    write_params(tmp_path, sources={"s": {"kind": "text", "path": "data/raw/s"}})
    (tmp_path / "data" / "raw" / "s").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "s" / "a.txt").write_text("a red fox\n", encoding="utf-8")
    result = cli(["ingest", "s", "data/prompts/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- 2. null and unproduced paths


def _text_source_reading(path: str) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        params["sources"]["chatgpt"] = {**params["sources"]["chatgpt"], "kind": "text", "path": path}

    return change


PATHS = {  # change -> what the line says after "params.yaml: "
    "images null": (
        _set("sources.diffusiondb.images", None),
        "sources.diffusiondb.images: null, which dvc.yaml pastes into stage captions@diffusiondb (${item.images}) "
        "as the word None",
    ),
    "images no generate entry renders": (
        _set("sources.chatgpt.images", "data/images/nope"),
        "sources.chatgpt.images: 'data/images/nope' does not exist and no stage writes it (stage generate writes",
    ),
    "images under an unrendered folder, ./-led": (
        _set("sources.chatgpt.images", "./data/images/nope/sub"),
        "sources.chatgpt.images: './data/images/nope/sub' does not exist and no stage writes it",
    ),
    "a source dropped from generate.sources": (
        lambda params: params["generate"]["sources"].remove("gustavosta"),
        "sources.gustavosta.images: 'data/images/gustavosta' does not exist and no stage writes it",
    ),
    "prompts of a synthesize entry that is not there": (
        _text_source_reading("data/synthesize/nope/prompts.txt"),
        "sources.chatgpt.path: 'data/synthesize/nope/prompts.txt' does not exist and no stage writes it",
    ),
}


@pytest.mark.parametrize("case", PATHS)
def test_a_path_no_stage_writes_is_one_line_at_the_first_stage(tmp_path, monkeypatch, capfd, case):
    change, said = PATHS[case]
    line = _first_stage_refuses(tmp_path, monkeypatch, capfd, change)
    assert line.startswith(f"error: params.yaml: {said}"), line


@pytest.mark.slow
def test_ingest_refuses_a_null_images_before_it_reads_anything(tmp_path):
    """`python -m scripts ingest`, as dvc.yaml runs the first stage of a source: one line, exit 2, no output."""
    params = copy.deepcopy(PARAMS)
    params["sources"]["chatgpt"]["images"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "ingest", "chatgpt", "data/prompts/chatgpt.parquet"],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: params.yaml: sources.chatgpt.images: null, which dvc.yaml pastes")
    assert not (tmp_path / "data").exists()


def test_a_path_that_exists_is_a_dependency_dvc_finds(tmp_path, monkeypatch, capfd):
    """Images put in data/images/X by hand (no generate entry) are there: DVC finds the dependency."""
    (tmp_path / "data" / "images" / "mine").mkdir(parents=True)
    params = copy.deepcopy(PARAMS)
    params["sources"]["chatgpt"]["images"] = "data/images/mine"
    write_params(tmp_path, **params)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- 3. one source rendered twice


TWICE = {
    "at the end": (["diffusiondb", "chatgpt", "diffusiondb"], "diffusiondb"),
    "side by side": (["chatgpt", "chatgpt"], "chatgpt"),
    "every name": (["gustavosta", "openprompts", "openprompts", "gustavosta"], "gustavosta"),
}


@pytest.mark.parametrize("case", TWICE)
def test_generate_sources_naming_one_source_twice_is_one_line(tmp_path, monkeypatch, capfd, case):
    names, twice = TWICE[case]
    line = _first_stage_refuses(tmp_path, monkeypatch, capfd, _set("generate.sources", names), with_dvc=False)
    assert line.startswith(f"error: params.yaml: generate.sources: source {twice!r} is listed twice"), line


# ---------------------------------------------------------------- 4. params.yaml a link to nowhere


def _self_loop(root) -> None:
    os.symlink("params.yaml", root / "params.yaml")


def _two_link_loop(root) -> None:
    os.symlink("other.yaml", root / "params.yaml")
    os.symlink("params.yaml", root / "other.yaml")


def _loop_behind_a_folder(root) -> None:
    os.symlink("loop/params.yaml", root / "params.yaml")
    os.symlink(".", root / "loop")


LINKS = {
    "a link to itself": (_self_loop, "is a symbolic link in a loop of links"),
    "two links to each other": (_two_link_loop, "is a symbolic link in a loop of links"),
    "a link through a folder link to itself": (_loop_behind_a_folder, "is a symbolic link in a loop of links"),
    "a link to nothing": (lambda root: os.symlink("gone.yaml", root / "params.yaml"), "is a symbolic link to 'gone"),
}


@pytest.mark.parametrize("case", LINKS)
def test_params_yaml_a_link_that_reaches_no_file_says_so(tmp_path, monkeypatch, capfd, case):
    make, said = LINKS[case]
    make(tmp_path)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and error_line(result.stderr).startswith(f"error: params.yaml: {said}"), result.stderr


@pytest.mark.slow
def test_a_loop_of_links_is_one_line_from_the_command(tmp_path):
    """The same from `python -m scripts`, as dvc.yaml runs it: one line, exit 2, no traceback."""
    _two_link_loop(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "recipes", "data/recipes"],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: params.yaml: is a symbolic link in a loop of links"), result.stderr


# ---------------------------------------------------------------- 5. entry names YAML reads as no string


NOT_NAMES = {  # section, the key as YAML built it -> what YAML made of it
    "a source named true": ("sources", True, "'True' is no name: YAML reads this key, written unquoted, as a boolean"),
    "a release named 1.10": ("releases", 1.1, "'1.1' is no name: YAML reads this key, written unquoted, as a number"),
    "a synthesize entry named ~": (
        "synthesize",
        None,
        "'None' is no name: YAML reads this key, written unquoted, as null",
    ),
    "a caption entry named a date": (
        "caption",
        datetime.date(2024, 1, 1),
        "'2024-01-01' is no name: YAML reads this key, written unquoted, as a date",
    ),
    "a source named 7": ("sources", 7, "'7' is no name: YAML reads this key, written unquoted, as a number"),
}


@pytest.mark.parametrize("case", NOT_NAMES)
def test_an_entry_name_yaml_reads_as_no_string_is_one_line(tmp_path, monkeypatch, capfd, case):
    section, key, said = NOT_NAMES[case]

    def change(params: dict) -> None:
        first = next(iter(params[section].values()))
        params[section] = {key: first}

    line = _first_stage_refuses(tmp_path, monkeypatch, capfd, change, with_dvc=False)
    assert line.startswith(f"error: params.yaml: {section}: entry name {said}"), line
    assert yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))[section] is not None
