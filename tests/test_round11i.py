"""Round 11i: rows a `before_generate` step removed at exit 0 for a wrong reason, one table per class
(every row failed before its fix). Real raw files and params.yaml files, the real stage commands.

1. prefilter@S composed its reference release W from data/dedup/X.parquet as it stood: with the rows
   captions@X drops for `sources.X.caption_language` still in, and split.method shuffle drawn over them.
   A row of S was removed as the duplicate of a row W does not have. Now the reference is W's real rows:
   proved by building W through captions, split and compose and comparing its train with what prefilter
   removed. A reference that reads a source with before_generate steps of its own (rows not known before
   generation) is one line at `recipes`.
2. A step on a component of one split (`split: validation`) removed rows of the source's other split too,
   which the release never reads and other releases do. split.method hash (a row's draw is its own id's)
   now removes only the component's rows, proved against a build without the step; shuffle is one line.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from helpers import cli
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line

# lines langdetect (seed 0) reads as the language named; a and b hold them all
EN = [
    "a red fox jumping over a wooden fence in the snow",
    "a blue whale swimming in the deep dark ocean at night",
    "a green forest with tall pine trees and a small river",
    "an old lighthouse standing on a rocky cliff during a storm",
    "a bowl of ramen with eggs and spring onions on a table",
    "a golden retriever puppy playing with a ball in the park",
    "a castle on a hill under a sky full of bright stars",
    "a busy market street in the rain with colourful umbrellas",
]
FR = [
    "un chat noir assis sur une chaise dans la cuisine de la maison",
    "une petite maison blanche au bord de la mer avec un jardin fleuri",
]
DE = [
    "ein roter Fuchs springt über den hohen Zaun im verschneiten Garten",
    "eine alte Brücke über den breiten Fluss bei Sonnenuntergang",
    "ein kleines Boot liegt im Hafen neben den großen Schiffen",
]
STEP = {"scope": "against", "against": "train", "reference": "ra", "before_generate": True, "match": "exact"}


def text_source(name: str, **keys) -> dict:
    return {"kind": "text", "path": f"raw/{name}", "images": f"raw/{name}", "text_only": True, "clean": False,
            "dedup": False, **keys}  # fmt: skip


def workspace(root: Path, lines: dict[str, list[str]], split: dict, releases: dict, **sources) -> Path:
    """The repository's params.yaml with text sources `lines` (sources.<name> keys from `sources`), `split`
    and `releases`; each source's raw file."""
    import yaml

    params = copy.deepcopy(PARAMS)
    params["sources"] = {name: text_source(name, **sources.get(name, {})) for name in lines}
    params["generate"]["sources"] = []
    params["split"] = split
    params["releases"] = releases
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for name, texts in lines.items():
        (root / "raw" / name).mkdir(parents=True)
        (root / "raw" / name / "prompts.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return root


def stages(root: Path, monkeypatch, capfd, releases=("ra",)) -> None:
    """dvc.yaml's commands for every source (ingest .. split), then compose@V of `releases`."""
    import yaml

    sources = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["sources"]
    runs = [["clean-rules", "data/clean/rules.json"], ["recipes", "data/recipes"]]
    for s in sources:
        runs += [
            ["ingest", s, f"data/prompts/{s}.parquet"],
            ["clean", s, f"data/prompts/{s}.parquet", f"data/clean/{s}.parquet", "--rules", "data/clean/rules.json"],
            ["dedup", s, f"data/clean/{s}.parquet", f"data/dedup/{s}.parquet"],
            [
                *["prefilter", s, f"data/dedup/{s}.parquet", f"data/prefilter/{s}.parquet", "--dedup-dir"],
                *["data/dedup", "--rules", "data/clean/rules.json", "--recipe", f"data/recipes/prefilter/{s}.json"],
            ],
            ["captions", s, f"data/prefilter/{s}.parquet", f"raw/{s}", f"data/captions/{s}.parquet"],
            ["split", s, f"data/captions/{s}.parquet", f"data/splits/{s}", "--order", f"data/prefilter/{s}.parquet"],
        ]
    for v in releases:
        runs.append(
            [
                *["compose", v, "data/splits", f"data/compose/{v}", "--rules", "data/clean/rules.json"],
                *["--positions", "data/prefilter", "--recipe", f"data/recipes/compose/{v}.json"],
            ]
        )
    for argv in runs:
        result = cli(argv, root, monkeypatch, capfd)
        assert result.returncode == 0, (argv, result.stderr[-3000:])


def texts(path: Path, split: str | None = None) -> set[str]:
    rows = pd.read_parquet(path)
    return set(rows.loc[rows["split"] == split, "text"] if split else rows["text"])


# ---------------------------------------------------------------- 1. the reference is W's real rows
REFERENCES = {  # source a's lines, its caption_language, params.yaml split, ra's component of a
    "a French line, hash split": (EN[:4] + FR[:1], "en", {"method": "hash", "validation_fraction": 0.0, "seed": 42},
                                  {"split": "all", "into": "train"}),
    "two French lines, shuffle split of a's train": (EN + FR, "en", {"method": "shuffle", "validation_fraction": 0.5,
                                                     "seed": 42}, {"split": "train", "into": "train"}),
    "German kept, hash split of a's train": (EN[:5] + DE, "de", {"method": "hash", "validation_fraction": 0.3,
                                             "seed": 7}, {"split": "train", "into": "train"}),
    "a row range of a, shuffle split": (FR[:1] + EN + FR[1:], "en", {"method": "shuffle", "validation_fraction": 0.25,
                                        "seed": 3}, {"split": "all", "into": "same", "rows": [1, None]}),
}  # fmt: skip


@pytest.mark.parametrize("case", REFERENCES)
def test_prefilter_removes_exactly_what_the_reference_release_holds(tmp_path, monkeypatch, capfd, case):
    """b holds every line of a; ra is built from a and rb's step drops b's rows whose text is in ra's train.
    What prefilter@b removed must be ra's train as compose@ra writes it, text for text: before, a row
    captions@a drops (another language) was removed from b, and a shuffle drawn over those rows gave
    another train."""
    lines, language, split, component = REFERENCES[case]
    releases = {
        "ra": {"components": [{"source": "a", **component}], "export": "prompts"},
        "rb": {"components": [{"source": "b", "split": "all", "steps": [{"dedup": STEP}]}], "export": "prompts"},
    }
    root = workspace(tmp_path, {"a": lines, "b": lines}, split, releases, a={"caption_language": language})
    stages(root, monkeypatch, capfd)
    assert len(pd.read_parquet(root / "data/captions/a.parquet")) < len(lines)  # captions@a dropped some
    train = texts(root / "data/compose/ra/rows.parquet", "train")
    removed = pd.read_parquet(root / "data/prefilter/b.removed.parquet")
    assert set(removed["text"]) == train and set(removed["reason"]) == {"cross_dedup:ra:train"}
    assert texts(root / "data/prefilter/b.parquet") == set(lines) - train  # the rest of b is kept


REFERENCE_READS_PREFILTERED = {  # ra's entry -> the source the line names
    "ra reads a source with a step of its own": (
        {"components": [{"source": "a", "split": "all", "steps": [{"dedup": {**STEP, "reference": "rc"}}]}]},
        "a",
    ),
    "ra's base reads it": ({"base": "rx", "components": [{"source": "c", "split": "all"}]}, "a"),
    "ra reads b, which the step filters": ({"components": [{"source": "b", "split": "all"}]}, "b"),
}


@pytest.mark.parametrize("case", REFERENCE_READS_PREFILTERED)
def test_a_reference_whose_rows_depend_on_a_prefilter_is_one_line_at_recipes(tmp_path, monkeypatch, capfd, case):
    """Its rows are only known once that prefilter has run: it passed `recipes` (then refused at prefilter@b,
    or, for another source's step, read that source's rows before the step removed any)."""
    entry, named = REFERENCE_READS_PREFILTERED[case]
    releases = {
        "rc": {"components": [{"source": "c", "split": "all"}]},
        "rx": {"components": [{"source": "a", "split": "all", "steps": [{"dedup": {**STEP, "reference": "rc"}}]}]},
        "ra": entry,
        "rb": {"components": [{"source": "b", "split": "all", "steps": [{"dedup": STEP}]}]},
    }
    lines = {"a": EN[:2], "b": EN[:2], "c": EN[2:4]}
    root = workspace(tmp_path, lines, PARAMS["split"], releases)
    line = error_line(cli(["recipes", "data/recipes"], root, monkeypatch, capfd).stderr)
    assert line.startswith("error: params.yaml: releases.rb.components[0].steps[0].dedup.reference: "), line
    assert f"release 'ra' reads source {named!r}, which has before_generate steps itself" in line
    assert not (root / "data").exists()


# ---------------------------------------------------------------- 2. a component of one split
ONE_SPLIT = {  # params.yaml split, the component's split
    "validation of a hash split": ({"method": "hash", "validation_fraction": 0.5, "seed": 42}, "validation"),
    "train of a hash split": ({"method": "hash", "validation_fraction": 0.5, "seed": 42}, "train"),
    "validation, another seed and fraction": ({"method": "hash", "validation_fraction": 0.4, "seed": 11}, "validation"),
}


@pytest.mark.parametrize("case", fast_first(ONE_SPLIT))
def test_a_step_on_one_split_removes_rows_of_that_split_only(tmp_path, monkeypatch, capfd, case):
    """rb takes b's `split` only; its step removes b's rows in ra's train. b's other split, which rb never
    reads (and other releases do), is byte for byte that of a build without the step; the removed rows are
    those of rb's split whose text ra's train holds. Before, rows of the other split were removed too."""
    split, part = ONE_SPLIT[case]
    other = "train" if part == "validation" else "validation"
    lines = {"a": EN, "b": EN + DE}
    component = {"source": "b", "split": part, "into": part}
    builds = {}
    for with_step in (True, False):
        releases = {
            "ra": {"components": [{"source": "a", "split": "all", "into": "train"}], "export": "prompts"},
            "rb": {"components": [{**component, "steps": [{"dedup": STEP}] if with_step else []}], "export": "prompts"},
        }
        builds[with_step] = workspace(tmp_path / str(with_step), lines, split, releases)
        stages(builds[with_step], monkeypatch, capfd, releases=("ra", "rb"))
    step, none = builds[True] / "data/splits/b", builds[False] / "data/splits/b"
    assert (step / f"{other}.parquet").read_bytes() == (none / f"{other}.parquet").read_bytes()
    removed = pd.read_parquet(builds[True] / "data/prefilter/b.removed.parquet")
    expected = texts(none / f"{part}.parquet") & set(EN)
    assert expected and set(removed["text"]) == expected
    assert texts(step / f"{part}.parquet") == texts(none / f"{part}.parquet") - expected
    assert texts(builds[True] / "data/compose/rb/rows.parquet") == texts(none / f"{part}.parquet") - expected


SHUFFLED = {  # params.yaml split (None: the section left out, its default shuffle), the component's split
    "validation of a shuffle split": ({"method": "shuffle", "validation_fraction": 0.5, "seed": 42}, "validation"),
    "train of a shuffle split": ({"method": "shuffle", "validation_fraction": 0.05, "seed": 42}, "train"),
    "validation, the split section left out": (None, "validation"),
}


@pytest.mark.parametrize("case", SHUFFLED)
def test_a_step_on_one_split_of_a_shuffle_is_one_line(tmp_path, monkeypatch, capfd, case):
    """A shuffle draws over the rows prefilter keeps: which split a row will be in is not known before it."""
    import yaml

    split, part = SHUFFLED[case]
    releases = {
        "ra": {"components": [{"source": "a", "split": "all", "into": "train"}]},
        "rb": {"components": [{"source": "b", "split": part, "into": part, "steps": [{"dedup": STEP}]}]},
    }
    root = workspace(tmp_path, {"a": EN[:2], "b": EN[:3]}, split, releases)
    if split is None:
        params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
        del params["split"]
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    line = error_line(cli(["recipes", "data/recipes"], root, monkeypatch, capfd).stderr)
    key = "error: params.yaml: releases.rb.components[0].steps[0].dedup.before_generate: "
    assert line.startswith(key) and "draws its split by shuffle" in line and "split.method hash" in line, line
    assert not (root / "data").exists()
