"""The recipe language, one test per feature, on small real tables in-process: the real cleaner
(named rule sets, scripts/clean_rules/), the real MinHash dedup, release.compose and prefilter.prefilter
(tables in, tables out). The last tests build the params.yaml recipes v4-a and v4-b on real OpenPrompts
rows (fixtures) and check that their difference is exactly the v4-a bug: raw text of filtered rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.lib.compose import Ops, compose
from scripts.lib.compose_ops import cleaner, deduper, rule_set, without_language_check
from scripts.lib.errors import DataError
from scripts.lib.params import load_params
from scripts.lib.recipe import resolve_recipe
from scripts.prefilter import prefilter

REPO = Path(__file__).resolve().parents[1]
DEDUP = {"threshold": 0.7, "keep": "first"}  # the steps below override threshold/keep where they test them
COLUMNS = ["id", "source", "split", "text", "orig_text", "image", "width", "height", "position"]

# near-duplicate pairs under word 3-gram Jaccard (7 of 8 shingles shared: J = 0.78-0.88)
FOX = "a red fox sleeping in the snow under a tall pine tree at dawn"
FOX2 = "a red fox sleeping in the snow under a tall pine tree at dusk"
WHALE = "a blue whale breaching near a rocky island in a stormy grey sea"
WHALE2 = "a blue whale breaching near a rocky island in a stormy grey sea tonight"
CITY = "a neon city street at night with rain reflections and flying cars overhead"
TEA = "an old tea house in the mountains surrounded by cherry blossoms in spring"
OWL = "a snowy owl perched on a frozen branch watching the moon rise slowly"


def table(source: str, split: str, texts: list[str], orig: list[str] | None = None, start: int = 0) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "id": [f"{source}-{split}-{i:03d}" for i in range(start, start + n)],
            "source": source,
            "split": split,
            "text": texts,
            "orig_text": orig if orig is not None else texts,
            "image": [f"img/{source}/{i}.jpg" for i in range(n)],
            "width": 64,
            "height": 64,
            "position": np.arange(start, start + n, dtype=float),
        }
    )[COLUMNS]


def ops(splits: dict, references: dict | None = None, dedup: dict = DEDUP) -> Ops:
    def load_split(source, split):
        return splits.get((source, split), table(source, split, []))

    def reference(name):
        return references[name]

    return Ops(load_split, cleaner(None, "test"), deduper(dedup), reference)


def build(recipes: dict, name: str, splits: dict, **kw):
    return compose(resolve_recipe(name, recipes), ops(splits, **kw))


def reasons(removed: pd.DataFrame) -> dict[str, str]:
    return dict(zip(removed["id"], removed["reason"]))


# --- dedup: policies and scopes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keep, removed",
    [
        ("first", {"s-train-001", "s-train-003"}),  # the later member of each pair goes
        ("longest", {"s-train-001", "s-train-002"}),  # the shorter: FOX2 ties FOX on length -> id order; WHALE < WHALE2
        ("none_of_pair", {"s-train-000", "s-train-001", "s-train-002", "s-train-003"}),  # both members (the team)
    ],
)
def test_keep_policy_of_a_step(keep, removed):
    splits = {("s", "train"): table("s", "train", [FOX, FOX2, WHALE, WHALE2, CITY])}
    recipes = {
        "r": {"components": [{"source": "s", "split": "train", "steps": [{"dedup": {"scope": "self", "keep": keep}}]}]}
    }
    rows, gone = build(recipes, "r", splits)
    assert set(gone["id"]) == removed and set(gone["reason"]) == {"dedup:self"}
    assert len(rows) == 5 - len(removed)


def test_threshold_of_a_step_overrides_the_section():
    splits = {("s", "train"): table("s", "train", [FOX, FOX2, WHALE, WHALE2])}
    strict = {"r": {"components": [{"source": "s", "split": "train", "steps": [{"dedup": {"threshold": 0.95}}]}]}}
    loose = {"r": {"components": [{"source": "s", "split": "train", "steps": [{"dedup": {"threshold": 0.75}}]}]}}
    assert build(strict, "r", splits)[1].empty
    assert len(build(loose, "r", splits)[1]) == 2


def test_per_split_dedups_each_split_alone_and_self_across_them():
    splits = {
        ("g", "train"): table("g", "train", [FOX, WHALE, WHALE2]),
        ("g", "validation"): table("g", "validation", [FOX2, CITY]),
    }
    per_split = {
        "r": {
            "components": [
                {"source": "g", "into": "same", "steps": [{"dedup": {"scope": "per_split", "keep": "none_of_pair"}}]}
            ]
        }
    }
    rows, gone = build(per_split, "r", splits)
    assert reasons(gone) == {
        "g-train-001": "dedup:per_split",
        "g-train-002": "dedup:per_split",
    }  # FOX~FOX2 cross splits: kept
    assert sorted(rows["split"]) == ["train", "validation", "validation"]  # into: same keeps each row's source split
    across = {"r": {"components": [{"source": "g", "into": "same", "steps": [{"dedup": {"scope": "self"}}]}]}}
    assert "g-validation-000" in set(build(across, "r", splits)[1]["id"])  # FOX2 goes once both splits are one set


def test_against_train_drops_new_rows_only():
    splits = {("a", "train"): table("a", "train", [FOX, WHALE]), ("b", "train"): table("b", "train", [FOX2, TEA, OWL])}
    recipes = {
        "r": {
            "components": [
                {"source": "a", "split": "train"},
                {"source": "b", "split": "train", "steps": [{"dedup": {"scope": "against", "against": "train"}}]},
            ]
        }
    }
    rows, gone = build(recipes, "r", splits)
    assert reasons(gone) == {"b-train-000": "cross_dedup:train"}
    assert {"a-train-000", "a-train-001"} <= set(rows["id"])  # the reference (FOX) stays


def test_validation_vs_train_exact_is_the_teams_membership_check():
    splits = {
        ("s", "train"): table("s", "train", [FOX + " ", WHALE]),  # train text stripped before the check
        ("s", "validation"): table("s", "validation", [FOX, FOX2, CITY]),
    }
    exact = {
        "r": {
            "components": [{"source": "s", "into": "same"}],
            "steps": [{"dedup": {"scope": "validation_vs_train", "match": "exact"}}],
        }
    }
    assert reasons(build(exact, "r", splits)[1]) == {"s-validation-000": "leak:exact"}
    near = {
        "r": {"components": [{"source": "s", "into": "same"}], "steps": [{"dedup": {"scope": "validation_vs_train"}}]}
    }
    assert reasons(build(near, "r", splits)[1]) == {"s-validation-000": "leak:near", "s-validation-001": "leak:near"}


def test_after_merge_dedups_the_whole_release():
    splits = {("a", "train"): table("a", "train", [FOX]), ("b", "validation"): table("b", "validation", [FOX2, CITY])}
    recipes = {
        "r": {
            "components": [{"source": "a", "split": "train"}, {"source": "b", "split": "validation"}],
            "steps": [{"dedup": {"scope": "after_merge", "keep": "none_of_pair"}}],
        }
    }
    rows, gone = build(recipes, "r", splits)
    assert set(gone["id"]) == {"a-train-000", "b-validation-000"} and list(rows["id"]) == ["b-validation-001"]


# --- clean steps ----------------------------------------------------------------------------------------

DIRTY = [
    "A castle on a hill, 8k, unreal engine, award winning photo",
    "see http://spam.example for more castles on hills",
    "portrait of a knight in armor, f/2.8, 85mm lens, hd",
]


def test_clean_rewrite_and_filter_only_drop_the_same_rows():
    rules = rule_set("2023-04-04")
    from scripts.lib.cleaning import clean_text

    expected = [clean_text(t, rules)[0] for t in DIRTY]  # the cleaner itself, one text at a time
    splits = {("s", "train"): table("s", "train", DIRTY)}
    for mode in ("rewrite", "filter_only"):
        recipes = {
            "r": {
                "components": [
                    {"source": "s", "split": "train", "steps": [{"clean": {"rules": "2023-04-04", "mode": mode}}]}
                ]
            }
        }
        rows, gone = build(recipes, "r", splits)
        assert set(gone["id"]) == {"s-train-001"} and gone["reason"].iloc[0].startswith("clean:")
        want = [e for e in expected if e is not None] if mode == "rewrite" else [DIRTY[0], DIRTY[2]]
        assert rows["text"].tolist() == want
    assert expected[0] != DIRTY[0]  # rewrite really changed the text


def test_clean_column_and_rule_set_versions():
    """column: orig_text cleans the raw prompt (v2: split, then preproc), text what the release holds; the
    03-30 rules drop camera words the 04-04 rules only rewrite (a3d5f83 removed the stop-words)."""
    texts = ["a portrait of an old fisherman, shot on nikon, 50mm, golden hour light"]
    splits = {("s", "train"): table("s", "train", ["placeholder caption text"], orig=texts)}
    old = {
        "r": {
            "components": [
                {"source": "s", "split": "train", "steps": [{"clean": {"rules": "2023-03-30", "column": "orig_text"}}]}
            ]
        }
    }
    new = {
        "r": {
            "components": [
                {"source": "s", "split": "train", "steps": [{"clean": {"rules": "2023-04-04", "column": "orig_text"}}]}
            ]
        }
    }
    assert build(old, "r", splits)[0].empty
    kept = build(new, "r", splits)[0]
    assert len(kept) == 1 and "fisherman" in kept["text"].iloc[0] and "placeholder" not in kept["text"].iloc[0]


# --- base, batches, before_generate ------------------------------------------------------------------------


def test_base_is_the_base_output_and_its_steps_are_not_rerun():
    splits = {
        ("s", "train"): table("s", "train", [FOX, WHALE]),
        ("s", "validation"): table("s", "validation", [WHALE2]),
        ("t", "validation"): table("t", "validation", [FOX2, OWL]),
    }
    recipes = {
        "base": {
            "components": [{"source": "s", "into": "same"}],
            "steps": [{"dedup": {"scope": "validation_vs_train"}}],
            "export": "webdataset",
        },
        "child": {"base": "base", "components": [{"source": "t", "split": "validation"}]},
    }
    base_rows, base_gone = build(recipes, "base", splits)
    rows, gone = build(recipes, "child", splits)
    assert reasons(base_gone) == {"s-validation-000": "leak:near"}
    assert gone.empty  # the base's leak step is not re-run on the child's rows: FOX2 stays
    assert rows.iloc[: len(base_rows)]["id"].tolist() == base_rows["id"].tolist()
    assert set(rows["id"]) - set(base_rows["id"]) == {"t-validation-000", "t-validation-001"}
    assert resolve_recipe("child", recipes).export.spec() == "webdataset"  # only export is inherited


def test_batches_are_row_ranges_of_one_source():
    texts = [FOX, WHALE, CITY, TEA, OWL]
    listed = table("o", "train", texts)
    shuffled = listed.iloc[[3, 0, 4, 1, 2]]  # split files are not in list order: positions decide
    splits = {("o", "train"): shuffled}
    recipes = {
        "one": {"components": [{"source": "o", "split": "train", "rows": [0, 2]}]},
        "two": {"base": "one", "components": [{"source": "o", "split": "train", "rows": [2, None]}]},
    }
    assert build(recipes, "one", splits)[0]["text"].tolist() == [FOX, WHALE]
    assert build(recipes, "two", splits)[0]["text"].tolist() == texts


def test_before_generate_step_runs_in_prefilter_on_its_range_only():
    reference = table("d", "train", [FOX, WHALE]).assign(split="train")
    source = table("o", "train", [FOX2, CITY, WHALE2, TEA]).drop(columns=["split"])
    recipes = {
        "v2": {"components": [{"source": "d", "split": "train"}]},
        "v4a": {
            "base": "v2",
            "components": [
                {
                    "source": "o",
                    "rows": [1, None],
                    "steps": [
                        {"dedup": {"scope": "against", "against": "train", "reference": "v2", "before_generate": True}}
                    ],
                }
            ],
        },
    }
    from scripts.lib.plans import before_generate_steps

    steps = before_generate_steps("o", recipes)
    kept, removed = prefilter(source, steps, lambda name: reference, deduper(DEDUP))
    assert removed["id"].tolist() == ["o-train-002"]  # WHALE2; FOX2 (row 0) is outside the range: rendered
    assert removed["reason"].tolist() == ["cross_dedup:v2:train"]
    assert kept["position"].tolist() == [0, 1, 3]  # positions in the source's list survive
    # the release does not run it again (its rows never reach data/splits)
    splits = {("d", "train"): reference, ("o", "train"): kept.assign(split="train")}
    assert build(recipes, "v4a", splits)[1].empty


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"components": [{"source": "s", "steps": [{"dedup": {"scope": "against"}}]}]},
            "`against` goes with scope against",
        ),
        ({"components": [{"source": "s", "steps": [{"dedup": {"before_generate": True}}]}]}, "before_generate needs"),
        ({"components": [{"source": "s", "rows": [5, 5]}]}, r"rows: stop 5 must exceed start 5"),
        ({"components": [{"source": "s", "steps": [{"clean": {}, "dedup": {}}]}]}, "exactly one of clean or dedup"),
        ({"components": [{"source": "s", "steps": [{"clean": {"rules": "2023-04-05"}}]}]}, "unknown cleaning rule set"),
        (
            {"components": [{"source": "s", "steps": [{"dedup": {"keep": "all"}}]}]},
            "'first', 'longest' or 'none_of_pair'",
        ),
        (
            {"components": [{"source": "s"}], "steps": [{"dedup": {"scope": "against", "against": "train"}}]},
            "scope against runs on a component's rows",
        ),
        (
            {
                "components": [
                    {"source": "s", "steps": [{"dedup": {"scope": "against", "against": "train", "reference": "v9"}}]}
                ]
            },
            "unknown release 'v9'",
        ),
    ],
)
def test_bad_steps_are_one_line_errors(bad, message):
    with pytest.raises(DataError, match=message):
        resolve_recipe("x", {"x": bad})


# --- the v4-a bug, with the params.yaml recipes on real OpenPrompts rows -------------------------------------


def openprompts_rows(fixtures_dir: Path, n: int) -> list[str]:
    with (fixtures_dir / "openprompts-1k.csv").open(newline="", encoding="utf-8") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)]
    return [p for p in prompts if p and p.strip()][:n]


def test_v4a_to_v4b_diff_is_the_raw_text_of_filtered_openprompts_rows(fixtures_dir):
    """sources.openprompts.clean is filter_only with the 03-30 rules (the team's filter_before_generate_image.py):
    v4-a holds those rows' raw text. v4-b re-applies the 04-04 rules to train and validation. Every row whose
    text changed or that went is a row whose text the 04-04 cleaner would change or reject: in train the
    filtered-but-raw OpenPrompts rows, in validation the never-cleaned Gustavosta rows; rows already clean
    (v2's DiffusionDB, cleaned in v2) are untouched."""
    releases = load_params("releases", REPO / "params.yaml")
    from scripts.lib.cleaning import clean_table, clean_text

    prompts = openprompts_rows(fixtures_dir, 120)  # the 03-30 rules run langdetect (~10 ms a row): kept small
    old_rules, new_rules = rule_set("2023-03-30"), rule_set("2023-04-04")
    # the source as clean@openprompts writes it: 03-30 filter, raw text kept
    listed = pd.DataFrame({"id": [f"op-{i:04d}" for i in range(len(prompts))], "prompt": prompts})
    kept, _ = clean_table(listed, old_rules, mode="filter_only")
    assert (kept["text"] == kept["prompt"]).all() and len(kept) < len(listed)
    op = table("openprompts", "train", kept["text"].tolist()).assign(id=kept["id"].tolist())
    half = len(op) // 2
    op_train = op.assign(position=np.arange(len(op), dtype=float))
    batch_rows = {"v4": [0, half], "v4-a": [half, None]}
    # DiffusionDB (train, validation) and Gustavosta (raw) from other fixture rows
    more = openprompts_rows(fixtures_dir, 300)[120:]
    db = [t for t in (clean_text(p, old_rules)[0] for p in more[:40]) if t]
    splits = {
        ("diffusiondb", "train"): table("diffusiondb", "train", db[:-6]).assign(position=np.nan),
        ("diffusiondb", "validation"): table("diffusiondb", "validation", db[-6:]).assign(position=np.nan),
        ("gustavosta", "train"): table("gustavosta", "train", more[40:60]).assign(position=np.nan),
        ("gustavosta", "validation"): table("gustavosta", "validation", more[60:90]).assign(position=np.nan),
        ("openprompts", "train"): op_train,
        ("openprompts", "validation"): table("openprompts", "validation", []),
    }
    # the recipes as in params.yaml, batch boundary scaled to this table
    recipes = {name: dict(releases[name]) for name in ("v2", "v4", "v4-a", "v4-b")}
    for name, rng in batch_rows.items():
        recipes[name]["components"] = [
            dict(c, rows=rng) if c["source"] == "openprompts" else c for c in recipes[name]["components"]
        ]
    o = ops(splits, references={}, dedup={"threshold": 0.7})
    shared = Ops(o.load_split, o.clean, o.keep, None, built={})  # v2 -> v4 -> v4-a composed once
    a, _ = compose(resolve_recipe("v4-a", recipes), shared)
    b, removed_b = compose(resolve_recipe("v4-b", recipes), shared)

    after = dict(zip(b["id"], b["text"]))
    changed = {i for i, t in zip(a["id"], a["text"]) if i not in after or after[i] != t}
    # v4-b runs the 04-04 rules without their language check, to a fixed point: a text one pass leaves alone
    # is already one, so the rows touched are those one pass changes or drops
    without_language = without_language_check(new_rules)
    would_change = {i for i, t in zip(a["id"], a["text"]) if clean_text(t, without_language)[0] != t}
    assert changed == would_change  # the diff is exactly what the 04-04 rules do to v4-a's text
    by_split = {s: {i for i in changed if a.set_index("id").at[i, "split"] == s} for s in ("train", "validation")}
    sources = a.set_index("id")["source"]
    assert by_split["train"] and {sources[i] for i in by_split["train"]} == {"openprompts"}
    assert by_split["validation"] and {sources[i] for i in by_split["validation"]} <= {"gustavosta", "diffusiondb"}
    assert sum(sources[i] == "gustavosta" for i in by_split["validation"]) > 0
    # rows rewritten (raw -> cleaned) and rows dropped are both part of it; drops carry their rule
    assert changed - set(removed_b["id"]) and set(removed_b["id"]) <= changed
    assert removed_b["reason"].str.startswith("clean:").all()
    # every OpenPrompts row v4-a added is a filtered row with its raw prompt as text
    raw = dict(zip(kept["id"], kept["prompt"]))
    op_a = a[a["source"] == "openprompts"]
    assert len(op_a) and all(raw[i] == t for i, t in zip(op_a["id"], op_a["text"]))


# --- acceptance 3: cross-dedup against train runs before generate@openprompts ---------------------------------


class RenderedPrompts:
    """Spy on the real diffusers pipeline: every prompt it is asked to render."""

    def __init__(self, monkeypatch):
        from diffusers import StableDiffusionPipeline

        self.prompts: list[str] = []
        original = StableDiffusionPipeline.__call__

        def recording_call(pipe, prompt=None, *args, **kwargs):
            self.prompts += [prompt] if isinstance(prompt, str) else list(prompt)
            return original(pipe, prompt, *args, **kwargs)

        monkeypatch.setattr(StableDiffusionPipeline, "__call__", recording_call)


def test_rows_removed_by_cross_dedup_are_never_rendered(tmp_path, monkeypatch, capfd, tiny_model_dir):
    """prefilter@openprompts (the `python -m scripts prefilter` command, on a params.yaml with a v2 and a
    v4-a whose batch 2 has a before_generate cross-dedup against v2's train), then generate on its output:
    the pipeline renders exactly the kept rows; no removed row's prompt reaches it."""
    import yaml

    from helpers import cli
    from scripts.generate import generate
    from scripts.lib.params import Generate
    from scripts.lib.tables import write_parquet

    params = {
        "split": {"method": "hash", "validation_fraction": 0.0, "seed": 42},
        "dedup": {"threshold": 0.7},
        "releases": {
            "v2": {"components": [{"source": "diffusiondb", "split": "train"}]},
            "v4-a": {
                "base": "v2",
                "components": [
                    {
                        "source": "openprompts",
                        "rows": [2, None],
                        "steps": [
                            {
                                "dedup": {
                                    "scope": "against",
                                    "against": "train",
                                    "reference": "v2",
                                    "before_generate": True,
                                }
                            }
                        ],
                    }
                ],
            },
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dedup = tmp_path / "data" / "dedup"
    dedup.mkdir(parents=True)
    db = [FOX, WHALE, CITY]
    op = [FOX2, TEA, WHALE2, OWL, CITY + " and a cat", "a quiet harbour at dawn with fishing boats and gulls"]
    for name, texts in (("diffusiondb", db), ("openprompts", op)):
        write_parquet(
            pd.DataFrame({"id": [f"{name}{i}" for i in range(len(texts))], "text": texts, "prompt": texts}),
            dedup / f"{name}.parquet",
        )
    result = cli(
        [
            "prefilter",
            "openprompts",
            "data/dedup/openprompts.parquet",
            "data/prefilter/openprompts.parquet",
            "--dedup-dir",
            "data/dedup",
        ],
        tmp_path,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 0, result.stderr
    kept = pd.read_parquet(tmp_path / "data" / "prefilter" / "openprompts.parquet")
    removed = pd.read_parquet(tmp_path / "data" / "prefilter" / "openprompts.removed.parquet")
    # WHALE2 (row 2) and CITY + cat (row 4) near v2 train; FOX2 (row 0) is in batch 1, rendered before the check
    assert removed["id"].tolist() == ["openprompts2", "openprompts4"]
    assert kept["id"].tolist() == ["openprompts0", "openprompts1", "openprompts3", "openprompts5"]

    spy = RenderedPrompts(monkeypatch)
    settings = Generate(model=str(tiny_model_dir), steps=2, batch_size=8, height=64, width=64)
    counts = generate(kept, settings, tmp_path / "data" / "images" / "openprompts")
    assert counts["rendered"] == len(kept) == len(spy.prompts) == 4
    assert sorted(spy.prompts) == sorted(kept["text"]) and not set(spy.prompts) & set(removed["text"])


def test_positions_are_looked_up_as_a_left_merge_would_give_them(tmp_path):
    """with_positions looks each row's place up in prefilter's file instead of merging (a merge copies
    every column): the values and dtype a left merge gives, NaN where a row has none, and a file that
    gives one id two places is one line."""
    from scripts.lib.compose_ops import with_positions
    from scripts.lib.tables import write_parquet

    rows = pd.DataFrame({"id": ["c", "a", "b", "d"], "text": ["3", "1", "2", "4"], "position": [9, 9, 9, 9]})
    for order in (
        pd.DataFrame({"id": ["a", "b", "c", "d"], "position": [0, 1, 2, 3], "text": ["x"] * 4}),
        pd.DataFrame({"id": ["a", "c", "e"], "position": [5, 7, 8]}),
    ):
        write_parquet(order, tmp_path / "s.parquet")
        merged = rows.drop(columns=["position"]).merge(order[["id", "position"]], on="id", how="left")
        got = with_positions(rows, "s", tmp_path)
        pd.testing.assert_frame_equal(got, merged)
    write_parquet(pd.DataFrame({"id": ["a", "a"], "position": [0, 1]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"s\.parquet: duplicate id 'a'"):
        with_positions(rows, "s", tmp_path)
    write_parquet(pd.DataFrame({"id": ["a"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"s\.parquet: no 'position' column"):
        with_positions(rows, "s", tmp_path)
