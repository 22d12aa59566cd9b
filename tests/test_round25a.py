"""Round 25a: hostile params.yaml, one table per class (every row failed before its fix):

1. A name one section gives another's entry was checked only by the stage that reads it: a release component's
   `source`, a `generate.sources` item, a release's `base` or a step's `reference` naming no entry passed every
   params check and `recipes`, and was met at compose@V / release@V (or DVC's missing dependency of
   generate@NAME) after `dvc repro` had run tiny_model, the paid synthesize and caption stages, ingest, clean and
   dedup. Now the whole file is checked whenever any stage reads it (params/references.py), in one line naming
   the key and the name, so tiny_model, the first stage `dvc repro` runs, refuses it.
2. A foreach section set to `null` (`caption: null`) passed our checks (read as no entries) while DVC refuses
   dvc.yaml's `foreach: ${caption}` over it; now one line saying `{}` is the empty form.
3. A source's `images`, which dvc.yaml pastes unquoted into captions@S's shell command, took any text:
   `x; touch PWN` ran a command, a space made two arguments, `$HOME`, `~` or `*` named another folder than
   params.yaml, `-rf` an option. Now it must be one plain shell word (params/sources.one_shell_word).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable

import pytest
import yaml

from helpers.commands import cli
from helpers.repos import REPO
from helpers.workspace import PARAMS, error_line

FIRST_STAGE = ["tiny-model", "models/tiny-sd2"]  # the first stage `dvc repro` runs (dvc.yaml order)


def _write(tmp_path, change: Callable[[dict], None]) -> None:
    params = copy.deepcopy(PARAMS)
    change(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _refused(tmp_path, monkeypatch, capfd, change: Callable[[dict], None], argv: list[str] = FIRST_STAGE) -> str:
    """`argv` on the repository's params.yaml changed by `change`: its one error line; nothing written."""
    _write(tmp_path, change)
    result = cli(argv, tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: params.yaml: "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
    return line


def _component(release: str, number: int, **keys) -> Callable[[dict], None]:
    return lambda params: params["releases"][release]["components"][number].update(keys)


def _step(release: str, number: int, dedup: dict) -> Callable[[dict], None]:
    return lambda params: params["releases"][release]["components"][number]["steps"].append({"dedup": dedup})


# ---------------------------------------------------------------- 1. a name no entry holds

AGAINST = {"scope": "against", "against": "train"}
MISSING_NAMES = {  # the change -> what the one line says after "params.yaml: "
    "a component's source": (
        _component("v2", 0, source="diffusiondb_v2"),
        "releases.v2.components[0].source: names source 'diffusiondb_v2', which is not under sources "
        "(did you mean 'diffusiondb'?)",
    ),
    "a generate source": (
        lambda params: params["generate"]["sources"].append("laion"),
        "generate.sources[4]: names source 'laion', which is not under sources (sources has: diffusiondb,",
    ),
    "a release's base": (
        lambda params: params["releases"]["v4-b"].update(base="v4a"),
        "releases.v4-b.base: names release 'v4a', which is not under releases (did you mean 'v4-a'?)",
    ),
    "a component step's reference": (
        _step("v3", 0, {**AGAINST, "reference": "v1"}),
        "releases.v3.components[0].steps[2].dedup.reference: names release 'v1', which is not under releases",
    ),
    "a source that a bidi override hides": (
        _component("v3", 1, source="gustavosta\u202e"),
        "releases.v3.components[1].source: names source 'gustavosta\\u202e', which is not under sources",
    ),
    "every source when sources is empty": (
        lambda params: params.update(sources={}, releases={}),
        "generate.sources[0]: names source 'diffusiondb', which is not under sources (sources is empty)",
    ),
}


@pytest.mark.parametrize("case", MISSING_NAMES)
def test_a_name_no_entry_holds_stops_the_first_stage(tmp_path, monkeypatch, capfd, case):
    change, said = MISSING_NAMES[case]
    line = _refused(tmp_path, monkeypatch, capfd, change)
    assert line.startswith(f"error: params.yaml: {said}"), line


ANY_STAGE = {  # a stage that never reads `releases` or `generate` refuses the file all the same
    "ingest": ["ingest", "chatgpt", "data/prompts/chatgpt.parquet"],
    "recipes": ["recipes", "data/recipes"],
    "synthesize (pays per request)": ["synthesize", "gpt4_style", "data/synthesize/gpt4_style"],
}


@pytest.mark.parametrize("stage", ANY_STAGE)
def test_any_stage_refuses_a_component_naming_no_source(tmp_path, monkeypatch, capfd, stage):
    line = _refused(tmp_path, monkeypatch, capfd, _component("v4", 1, source="gustavo"), ANY_STAGE[stage])
    assert "releases.v4.components[1].source: names source 'gustavo', which is not under sources" in line, line


def test_the_first_stage_refuses_it_as_a_user_runs_it(tmp_path):
    """`python -m scripts tiny-model ...` as DVC runs it: exit 2, the one line, no model written."""
    _write(tmp_path, _component("v2", 1, source="difusiondb"))
    done = subprocess.run(
        [sys.executable, "-m", "scripts", *FIRST_STAGE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert error_line(done.stderr).startswith(
        "error: params.yaml: releases.v2.components[1].source: names source 'difusiondb'"
    )
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------- 2. a foreach section set to null


@pytest.mark.parametrize("section", ["caption", "synthesize", "releases", "sources"])
def test_a_foreach_section_set_to_null_is_one_line(tmp_path, monkeypatch, capfd, section):
    line = _refused(tmp_path, monkeypatch, capfd, lambda params: params.update({section: None}))
    assert line == (
        f"error: params.yaml: {section}: null is not a mapping of entries (dvc.yaml's `foreach: ${{{section}}}` "
        "refuses it before any stage runs); write `{}` for none"
    )


# ---------------------------------------------------------------- 3. a source's images, a word of a shell command

SHELL_WORDS = {  # sources.chatgpt.images -> what the one line says it holds
    "a command after ';'": ("data/images/chatgpt;touch PWN", "holds ';'"),
    "a space": ("data/images/chat gpt", "holds ' '"),
    "a variable": ("$HOME/images", "holds '$'"),
    "a command substitution": ("data/images/`id`", "holds '`'"),
    "a home folder": ("~/images", "holds '~'"),
    "a glob": ("data/images/*", "holds '*'"),
    "an option": ("-rf", "starts with '-'"),
    "a newline": ("data/images/a\nb", "holds '\\n'"),
}


@pytest.mark.parametrize("case", SHELL_WORDS)
def test_a_source_images_the_shell_would_read_otherwise_is_one_line(tmp_path, monkeypatch, capfd, case):
    images, said = SHELL_WORDS[case]
    line = _refused(tmp_path, monkeypatch, capfd, lambda params: params["sources"]["chatgpt"].update(images=images))
    assert line.startswith("error: params.yaml: sources.chatgpt.images: ") and said in line, line
    assert "captions@S's command" in line, line
