"""Round 10e's breaks, one table per class (every row failed before its fix): a language code langdetect
never returns dropped every row at exit 0; two sources whose files are one (`x` and `x.dropped`, `Cats`
and `cats`); a release that reads itself through `reference:` and `base:` (AssertionError at compose,
after `recipes` passed); a `!/` in a plain image path read as an archive member; `publish` of a
text-only release blamed a missing image. Real params.yaml files and the real commands."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import REPO, cli
from helpers.workspace import PARAMS, error_line, make_splits, write_params


def entry(**changes) -> dict:
    """A copy of the repository's dalle3 source with `changes`."""
    return {**copy.deepcopy(PARAMS["sources"]["dalle3"]), **changes}


# ---------------------------------------------------------------- 1. language codes langdetect never returns
KEEP = {  # clean.language.keep -> the code the one line suggests (None: it lists them)
    "upper case": ("EN", "'en'"),
    "a language name": ("english", "'en'"),
    "a region tag": ("en-US", "'en'"),
    "no such code": ("zz", "its codes: af, ar"),
    "chinese without its script": ("zh", "'zh-cn'"),
}


@pytest.mark.parametrize("case", KEEP)
def test_a_kept_language_langdetect_never_returns_is_one_line(tmp_path, monkeypatch, capfd, case):
    """clean-text dropped every line as `language` at exit 0."""
    code, hint = KEEP[case]
    write_params(tmp_path, clean={**PARAMS["clean"], "language": {"enabled": True, "keep": ["en", code]}})
    (tmp_path / "in.txt").write_text("a red fox in the snow\n", encoding="utf-8")
    result = cli(["clean-text", "in.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: params.yaml: clean.language.keep[1]: "), line
    assert f"{code!r} is not a language code langdetect returns" in line and hint in line
    assert not (tmp_path / "out.jsonl").exists()


CAPTION_LANGUAGE = {"upper case": ("EN", "'en'"), "a name": ("English", "'en'"), "no such code": ("xx", "its codes")}


@pytest.mark.parametrize("case", CAPTION_LANGUAGE)
def test_a_caption_language_langdetect_never_returns_is_one_line(tmp_path, monkeypatch, capfd, case):
    """captions@S dropped every row at exit 0."""
    code, hint = CAPTION_LANGUAGE[case]
    write_params(tmp_path, sources={**PARAMS["sources"], "dalle3": entry(caption_language=code)})
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "params.yaml: sources.dalle3.caption_language: " in line and hint in line
    assert not (tmp_path / "data").exists()


def test_the_valid_codes_are_those_langdetect_has_profiles_for():
    from langdetect.detector_factory import PROFILES_DIRECTORY

    from scripts.lib.params.clean import LANGDETECT_CODES

    assert sorted(p.name for p in Path(PROFILES_DIRECTORY).iterdir()) == list(LANGDETECT_CODES)


# ---------------------------------------------------------------- 2. two entries, one file
SAME_FILES = {  # (section, first name, second name) -> what the one line names
    "a source and its dropped table": ("sources", "x", "x.dropped", "data/clean/x.dropped.parquet"),
    "a source and its clusters": ("sources", "x", "x.clusters", "data/dedup/x.clusters.parquet"),
    "a source and its removed rows": ("sources", "x", "x.removed", "data/prefilter/x.removed.parquet"),
    "a source and its report, in other case": ("sources", "cats", "Cats.Report", "data/clean/cats.report.json"),
    "a source and its preview": ("sources", "x", "x.preview", "data/dedup/x.preview.html"),
    "two sources by case": ("sources", "Cats", "cats", "differ only by case"),
    "two releases by case": ("releases", "v4-b", "V4-B", "differ only by case"),
}


@pytest.mark.parametrize("case", SAME_FILES)
def test_two_entries_whose_files_would_be_one_are_one_line(tmp_path, monkeypatch, capfd, case):
    """clean@x.dropped wrote data/clean/x.dropped.parquet, clean@x's dropped table; on macOS and Windows
    `Cats` and `cats` are one folder."""
    section, first, second, named = SAME_FILES[case]
    entries = copy.deepcopy(PARAMS[section])
    template = entries["dalle3"] if section == "sources" else entries["v4-b"]
    write_params(tmp_path, **{section: {**entries, first: copy.deepcopy(template), second: copy.deepcopy(template)}})
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith(f"error: params.yaml: {section}: entries "), line
    assert f"{first!r} and {second!r}" in line and named in line
    assert not (tmp_path / "data").exists()


def test_every_suffix_a_stage_appends_to_a_name_is_refused():
    """dvc.yaml's outs of the per-source stages name S<suffix>.<ext>: each suffix is in the rule's list;
    the per-release stages append none (their outputs are folders named V)."""
    from scripts.lib.params.base import SOURCE_OUTPUT_SUFFIXES

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    found: dict[str, set[str]] = {"${sources}": set(), "${releases}": set()}
    for stage in stages.values():
        if stage.get("foreach") in found:
            outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["do"].get("outs", [])]
            found[stage["foreach"]] |= {m for o in outs for m in re.findall(r"\$\{key\}\.(\w+)\.", o)}
    assert found["${sources}"] == set(SOURCE_OUTPUT_SUFFIXES) and not found["${releases}"]


# ---------------------------------------------------------------- 3. a release that reads itself
def against(reference: str, **component) -> dict:
    return {
        "source": "diffusiondb",
        "split": "validation",
        "into": "validation",
        **component,
        "steps": [{"dedup": {"scope": "against", "against": "train", "reference": reference}}],
    }


CYCLES = {  # releases -> the one line
    "itself": (
        {"self": {"components": [against("self")]}},
        "releases.self.components[0].steps[0].dedup.reference: reference cycle self -> self",
    ),
    "each other": (
        {"ca": {"components": [against("cb")]}, "cb": {"components": [against("ca")]}},
        "releases.ca.components[0].steps[0].dedup.reference: reference cycle ca -> cb -> ca",
    ),
    "through a base": (
        {"a": {"base": "b", "components": [{"source": "diffusiondb"}]}, "b": {"components": [against("a")]}},
        "releases.a.base: reference cycle a -> b -> a",
    ),
    "three, by a release step": (
        {
            "p": {"components": [against("q")]},
            "q": {"components": [against("r")]},
            "r": {
                "components": [{"source": "diffusiondb"}],
                "steps": [{"dedup": {"scope": "against", "against": "train", "reference": "p"}}],
            },
        },
        "releases.p.components[0].steps[0].dedup.reference: reference cycle p -> q -> r -> p",
    ),
}


@pytest.mark.parametrize("case", CYCLES)
def test_a_release_that_reads_itself_is_one_line_at_recipes_and_compose(tmp_path, monkeypatch, capfd, case):
    """`recipes` passed, then compose died on `assert ops.reference is not None`."""
    releases, expected = CYCLES[case]
    write_params(tmp_path, releases=releases)
    make_splits(tmp_path)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and error_line(result.stderr) == f"error: params.yaml: {expected}"
    first = next(iter(releases))
    result = cli(["compose", first, "data/splits", f"data/compose/{first}"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and error_line(result.stderr) == f"error: params.yaml: {expected}"
    assert not (tmp_path / "data" / "compose").exists() and not (tmp_path / "data" / "recipes").exists()


CHAINS = {  # releases -> the one composed, whose reference has references of its own (no cycle)
    "a reference of a reference": (
        {"c": {"components": [{"source": "diffusiondb", "split": "train"}]}, "b": {"components": [against("c")]}},
        "a",
    ),
    "a reference whose base has one": (
        {
            "c": {"components": [{"source": "diffusiondb", "split": "train"}]},
            "base": {"components": [against("c")]},
            "b": {"base": "base", "components": []},
        },
        "a",
    ),
    "a release step's reference with one": (
        {"c": {"components": [{"source": "diffusiondb", "split": "train"}]}, "b": {"components": [against("c")]}},
        "s",
    ),
}


@pytest.mark.parametrize("case", CHAINS)
def test_a_reference_with_references_of_its_own_composes(tmp_path, monkeypatch, capfd, case):
    """Composing the reference ran without a `reference` of its own: AssertionError."""
    releases, name = CHAINS[case]
    top = {
        "a": {"components": [against("b")]},
        "s": {
            "components": [{"source": "diffusiondb", "split": "validation", "into": "validation"}],
            "steps": [{"dedup": {"scope": "against", "against": "train", "reference": "b"}}],
        },
    }[name]
    write_params(tmp_path, releases={**releases, name: top})
    make_splits(tmp_path)
    assert cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd).returncode == 0
    argv = ["compose", name, "data/splits", f"data/compose/{name}", "--recipe", f"data/recipes/compose/{name}.json"]
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_a_reference_step_without_a_way_to_compose_it_is_an_error_not_an_assert():
    """An assert vanishes under `python -O`: the step then called None."""
    from scripts.lib.compose import ROW_COLUMNS, Ops, run_step
    from scripts.lib.errors import DataError
    from scripts.lib.params import DedupStep, Step

    rows = pd.DataFrame([["1", "s", "train", "a fox", "a fox", None, 1, 1]], columns=ROW_COLUMNS)
    step = Step(dedup=DedupStep(scope="against", against="train", reference="w"))
    with pytest.raises(DataError, match="dedup.reference 'w'"):
        run_step(step, rows, Ops(load_split=None, clean=None, keep=None), so_far=None, group="split")


# ---------------------------------------------------------------- 4. `!/` in a plain path
MARKED = {  # source entry -> the key the one line names
    "a folder ending in ! inside path": ({"kind": "text", "path": "data/raw/k!/set"}, "sources.k.path"),
    "path ending in !": ({"kind": "text", "path": "data/raw/k!"}, "sources.k.path"),
    "images under such a folder": (
        {"kind": "text", "path": "data/raw/k", "images": "data/images/k!/x"},
        "sources.k.images",
    ),
    "a Windows path": ({"kind": "text", "path": "data\\raw\\k!\\set"}, "sources.k.path"),
}


@pytest.mark.parametrize("case", MARKED)
def test_a_source_path_holding_the_archive_mark_is_one_line(tmp_path, monkeypatch, capfd, case):
    """compose read data/raw/k!/set/1.png as member set/1.png of archive data/raw/k and refused the
    source's own images as outside its folders."""
    source, key = MARKED[case]
    raw = tmp_path / source["path"]  # there, with a prompt: ingest read it at exit 0
    raw.mkdir(parents=True)
    (raw / "prompts.txt").write_text("a red fox\n", encoding="utf-8")
    write_params(tmp_path, sources={**PARAMS["sources"], "k": source})
    result = cli(["ingest", "k", "data/prompts/k.parquet"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith(f"error: params.yaml: {key}: "), line
    assert "folder name ending in '!'" in line and not (tmp_path / "data" / "prompts").exists()


def test_caption_images_holding_the_archive_mark_is_one_line(tmp_path, monkeypatch, capfd):
    caption = copy.deepcopy(PARAMS["caption"])
    name = next(iter(caption))
    caption[name]["images"] = "data/images/x!/y"
    write_params(tmp_path, caption=caption)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and f"caption.{name}.images: " in error_line(result.stderr)


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


READERS = {  # source entry, files under data/raw/s -> an image path with `!/` found while reading
    "a Kaggle CSV in a folder ending in !": (
        {"kind": "kaggle_sd2", "csv_files": ["sub!/gpt_generated_prompts.csv"]},
        {"sub!/gpt_generated_prompts.csv": b"prompt\na red fox\n", "sub!/0.png": None},
    ),
    "a Gustavosta image_path through such a folder": (
        {"kind": "gustavosta", "format": "kaggle_csv"},
        {"train.csv": b"Prompt,image_path\na red fox,k!/0.png\n", "k!/0.png": None},
    ),
    "a Kaggle CSV deeper under one": (
        {"kind": "kaggle_sd2", "csv_files": ["a!/b/gpt_generated_prompts.csv"]},
        {"a!/b/gpt_generated_prompts.csv": b"prompt\na red fox\n", "a!/b/0.png": None},
    ),
}


@pytest.mark.parametrize("case", READERS)
def test_an_image_found_under_a_folder_ending_in_the_mark_is_refused(tmp_path, monkeypatch, capfd, case):
    """Ingest wrote data/raw/s/sub!/0.png as a row's image at exit 0; every later stage read it as member
    0.png of an archive data/raw/s/sub."""
    source, files = READERS[case]
    for rel, data in files.items():
        path = tmp_path / "data" / "raw" / "s" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png() if data is None else data)
    write_params(tmp_path, sources={**PARAMS["sources"], "s": {**source, "path": "data/raw/s"}})
    result = cli(["ingest", "s", "data/prompts/s.parquet"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "folder name ending in '!'" in line, line
    assert not (tmp_path / "data" / "prompts" / "s.parquet").exists()


# ---------------------------------------------------------------- 5. publish of a text-only release
EXPORTS = {  # how the release says `prompts`
    "by name": {"p1": {"export": "prompts"}},
    "as a mapping": {"p1": {"export": {"format": "prompts"}}},
    "from its base": {"p0": {"export": "prompts"}, "p1": {"base": "p0", "components": []}},
}


@pytest.mark.parametrize("case", EXPORTS)
def test_publish_of_a_text_only_release_says_so_in_one_line(tmp_path, monkeypatch, capfd, case):
    """publish blamed `rows.parquet: id ...: its image is not in the release`."""
    from test_release_text_only import build, workspace

    workspace(tmp_path)
    assert build(tmp_path, monkeypatch, capfd).returncode == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    component = params["releases"]["p1"]["components"]
    releases = copy.deepcopy(EXPORTS[case])
    for entry_ in releases.values():
        entry_.setdefault("components", component)
    params["releases"] = releases
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    result = cli(["publish", "p1", "--repo-id", "me/p1", "--dry-run"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "text-only release" in line and "hf upload" in line, line
    assert "image is not in the release" not in line and not (tmp_path / "dist").exists()
