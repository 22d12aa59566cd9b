"""Round 23g: hostile params.yaml and DVC usage, one table per class (every row failed before its fix):

1. `generate.sources` took any string (`../prompts/diffusiondb`, `x;touch PWN`, `-rf`, a case twin), though
   each becomes the stage generate@NAME, its paths and a word of its shell command (dvc.yaml): DVC listed
   `generate@../prompts/diffusiondb`, whose input is ingest's data/prompts/diffusiondb.parquet and whose output
   folder is data/prompts/diffusiondb, outside data/images; `-rf` is read as an option. Each is now checked as
   the name of a source is (plain, not a Windows device, apart by case: Generate._plain_names), in one line.
2. An error inside a union-typed key (`sources.S.dedup`, `sources.S.clean`: true/false, a rule set name or a
   mapping) named the union's branch and blamed the wrong one: `dedup: {threshold: 5}` was
   `sources.S.dedup.bool: Input should be a valid boolean (got {...})`, an unknown key
   `sources.S.clean.SourceClean: unknown key`. Now the key the user wrote and the deepest error
   (base.written_keys).
3. A source, synthesize or caption entry whose name holds '.' passed params checks, but dvc.yaml lists its
   params as `SECTION.${key}`, which DVC splits at every '.': `dvc repro -s ingest@chat.gpt` failed with DVC's
   `Parameters 'sources.chat.gpt' are missing from 'params.yaml'` (the entry is there). Refused in one line
   naming the entry (Params._plain_names, DOTTED_PARAMS); a release's name may keep its '.' (its stages list no
   `releases.${key}` params).
4. A name or value a params error quotes was echoed whole: a 200 kB unknown key, entry name, rule set name,
   language code, `generate.height` string, csv file name, folder path with '!' or `base:` release made a
   200 kB error line. Each is quoted by its first 100 characters (errors.quoted, a whole entry name still).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
import yaml

from helpers.commands import cli
from helpers.repos import REPO
from helpers.workspace import PARAMS, error_line, write_params
from scripts.lib.errors import DataError
from scripts.lib.params import DOTTED_PARAMS, check_params


def _recipes_refuse(tmp_path, monkeypatch, capfd, change: Callable[[dict], None]) -> str:
    """`recipes` (the first stage `dvc repro` runs) on params.yaml changed by `change`: its one error line;
    nothing written."""
    params = copy.deepcopy(PARAMS)
    change(params)
    write_params(tmp_path, **params)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: params.yaml: "), line
    assert not (tmp_path / "data").exists()
    return line


# ---------------------------------------------------------------- 1. generate.sources names


RENDERED_NAMES = {  # a name appended to generate.sources -> what the one line says
    "up and over": ("../prompts/diffusiondb", "generate.sources: source '../prompts/diffusiondb' is not a plain name"),
    "a shell word": ("x;touch PWN", "generate.sources: source 'x;touch PWN' is not a plain name"),
    "an option": ("-rf", "generate.sources: source '-rf' is not a plain name"),
    "a case twin": ("Chatgpt", "generate.sources: entries 'chatgpt' and 'Chatgpt' differ only by case"),
    "a device": ("aux", "generate.sources: source 'aux' is a device name on Windows"),
}


@pytest.mark.parametrize("case", RENDERED_NAMES)
def test_a_generate_source_that_is_no_plain_name_is_one_line(tmp_path, monkeypatch, capfd, case):
    name, said = RENDERED_NAMES[case]
    assert said in _recipes_refuse(
        tmp_path, monkeypatch, capfd, lambda params: params["generate"]["sources"].append(name)
    )


# ---------------------------------------------------------------- 2. a union-typed key's error


def _set(params: dict, dotted: str, value) -> dict:
    *path, last = dotted.split(".")
    entry = params
    for key in path:
        entry = entry[key]
    entry[last] = value
    return params


UNION_ERRORS = {  # dotted key, value -> the start of the message after "params.yaml: "
    "dedup threshold out of range": (
        "sources.chatgpt.dedup",
        {"method": "embedding", "threshold": 5},
        "sources.chatgpt.dedup.threshold: Input should be less than or equal to 1",
    ),
    "dedup method unknown": (
        "sources.chatgpt.dedup",
        {"method": "simhash"},
        "sources.chatgpt.dedup.method: Input should be 'minhash' or 'embedding'",
    ),
    "clean mode unknown": (
        "sources.openprompts.clean",
        {"rules": "2023-03-30", "mode": "strict"},
        "sources.openprompts.clean.mode: Input should be 'rewrite', 'filter_only' or 'off'",
    ),
    "clean key misspelt": (
        "sources.openprompts.clean",
        {"rules": "2023-03-30", "mde": "rewrite"},
        "sources.openprompts.clean: unknown key 'mde' (did you mean 'mode'?)",
    ),
    "dedup key misspelt": (
        "sources.dalle3.dedup",
        {"treshold": 0.5},
        "sources.dalle3.dedup: unknown key 'treshold' (did you mean 'threshold'?)",
    ),
}


@pytest.mark.parametrize("case", UNION_ERRORS)
def test_an_error_under_a_union_key_names_the_key_written(case):
    dotted, value, said = UNION_ERRORS[case]
    with pytest.raises(DataError) as info:
        check_params(_set(copy.deepcopy(PARAMS), dotted, value))
    assert str(info.value).startswith(f"params.yaml: {said}"), str(info.value)


# ---------------------------------------------------------------- 3. names DVC cannot address


def _renamed(section: str, old: str, new: str) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        params[section] = {(new if name == old else name): entry for name, entry in params[section].items()}

    return change


DOTTED_NAMES = {
    "a source": (_renamed("sources", "dalle3", "dal.le3"), "sources: name 'dal.le3' holds '.'"),
    "a synthesize entry": (_renamed("synthesize", "gpt4_style", "gpt4.style"), "synthesize: name 'gpt4.style' holds"),
    "a caption entry": (_renamed("caption", "laion_buckets", "laion.v2"), "caption: name 'laion.v2' holds '.'"),
    "a lone source with a suffix's shape": (_renamed("sources", "chatgpt", "chatgpt.dropped"), "'chatgpt.dropped'"),
}


@pytest.mark.parametrize("case", DOTTED_NAMES)
def test_a_name_dvc_splits_at_a_dot_is_one_line(tmp_path, monkeypatch, capfd, case):
    change, said = DOTTED_NAMES[case]
    line = _recipes_refuse(tmp_path, monkeypatch, capfd, change)
    assert said in line and "DVC reads as the keys" in line, line


def test_a_release_keeps_its_dot_and_the_sections_are_dvc_yamls():
    """release@v4.1 lists no `releases.${key}` params, so its name may hold '.'; the sections refused are
    exactly those whose foreach stages list `SECTION.${key}...` params in dvc.yaml."""
    params = copy.deepcopy(PARAMS)
    _renamed("releases", "v4-b", "v4.1")(params)
    check_params(params)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    listed = set()
    for stage in stages.values():
        section = re.fullmatch(r"\$\{(\w+)\}", str(stage.get("foreach", "")))
        keys = stage.get("do", {}).get("params", []) if section else []
        if any(str(key).startswith(f"{section[1]}.${{key}}") for key in keys):
            listed.add(section[1])
    assert listed == set(DOTTED_PARAMS)


# ---------------------------------------------------------------- 4. a long name or value quoted whole

LONG = "q" * 20_000  # a 20 kB error line before


def _source(**keys) -> Callable[[dict], None]:
    return lambda params: params["sources"]["chatgpt"].update(keys)


LONG_VALUES = {  # the change -> where the one line names it
    "an unknown key": (lambda params: params["split"].update({LONG: 1}), "split: unknown key 'qqq"),
    "an entry name": (lambda params: params["releases"].update({LONG + "/": {}}), "releases: name 'qqq"),
    "a rule set name": (lambda params: params["clean"].update(rules=LONG), "clean.rules: unknown cleaning rule set"),
    "a language code": (_source(caption_language=LONG), "sources.chatgpt.caption_language: 'qqq"),
    "a path with '!'": (_source(path=LONG + "!/x"), "sources.chatgpt.path: 'qqq"),
    "a size word": (lambda params: params["generate"].update(height=LONG), "generate.height: Input should be"),
    "a base release": (lambda params: params["releases"]["v3"].update(base=LONG), "releases.v3.base: names release"),
}


@pytest.mark.parametrize("case", LONG_VALUES)
def test_a_long_name_or_value_is_quoted_by_its_start(tmp_path, monkeypatch, capfd, case):
    change, said = LONG_VALUES[case]
    line = _recipes_refuse(tmp_path, monkeypatch, capfd, change)
    assert said in line and "'…" in line and len(line) < 1000, line[:300]
