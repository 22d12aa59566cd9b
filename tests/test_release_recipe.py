"""Release recipes: base chains, component order, the first language's shorthands (dedup_against, reclean,
validation_leaks) as steps, and one-line errors. The step language itself: tests/test_recipe_language.py."""

import pandas as pd
import pytest

from scripts.lib.compose import Ops, compose, release_stats
from scripts.lib.errors import DataError
from scripts.lib.recipe import resolve_recipe


def releases():
    return {
        "a": {
            "components": [
                {"source": "s1", "split": "train", "into": "train"},
                {"source": "s1", "split": "validation", "into": "validation"},
            ],
            "validation_leaks": "exact",
        },
        "b": {"base": "a", "components": [{"source": "s2", "split": "all", "into": "train", "dedup_against": "train"}]},
        "c": {"base": "b", "reclean": True, "validation_leaks": "near"},
    }


def table(source, split, texts):
    return pd.DataFrame(
        {
            "id": [f"{source}-{split}-{i:03d}" for i in range(len(texts))],
            "source": source,
            "split": split,
            "text": texts,
            "orig_text": texts,
            "image": [f"img/{source}/{i}.jpg" for i in range(len(texts))],
            "width": 64,
            "height": 64,
        }
    )


SPLITS = {
    ("s1", "train"): table("s1", "train", ["a red fox in snow", "a blue whale", "city at night"]),
    ("s1", "validation"): table("s1", "validation", ["a blue whale", "a red fox in the snow"]),
    ("s2", "train"): table("s2", "train", ["a blue whale", "bad http link prompt"]),
    ("s2", "validation"): table("s2", "validation", ["green tea ceremony"]),
}


def load_split(source, split):
    return SPLITS[(source, split)]


def near(new, ids, step, against):  # stands in for the MinHash dedup (its own tests: test_dedup, test_recipe_language)
    norm = {t.replace(" the ", " ") for t in against}
    return pd.Series([t.replace(" the ", " ") not in norm for t in new]).to_numpy()


def drop_http(rows, step):
    bad = rows[step.column].str.contains("http")
    return rows[~bad], rows[bad].assign(reason="clean:http")


OPS = Ops(load_split, drop_http, near)


def test_base_chain_and_shorthands_become_steps():
    c = resolve_recipe("c", releases())
    assert c.lineage == ("a", "b", "c") and c.base.name == "b" and c.base.base.name == "a"
    assert [x.source for x in c.all_components()] == ["s1", "s1", "s2"]
    assert c.reclean is True and c.validation_leaks == "near"
    assert [s.clean.column for s in c.steps if s.clean] == ["orig_text"]  # reclean: the final rules on the raw prompt
    b = resolve_recipe("b", releases())
    assert b.validation_leaks == "none" and not b.steps  # a base's steps are not inherited: its output is
    step = b.own_components[0].steps[0].dedup
    assert step.scope == "against" and step.against == "train"
    assert [x.source for x in b.components] == ["s1", "s1", "s2"]  # components: the whole chain's


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"x": {"base": "x", "components": [{"source": "s"}]}}, "base cycle"),
        ({"x": {"components": [{"source": "s", "colour": 1}]}}, r"releases.x.components\[0\]: unknown key 'colour'"),
        (
            {"x": {"components": [{"source": "s", "split": "dev"}]}},
            r"releases.x.components\[0\].split: Input should be 'train', 'validation' or 'all'",
        ),
        ({"x": {"compnents": []}}, r"releases.x: unknown key 'compnents' \(did you mean 'components'\?\)"),
        ({"x": {"components": []}}, "releases.x: no components"),
        (
            {"x": {"components": [{"source": "s"}], "export": {"format": "imagefolder", "shard_size": 5}}},
            "releases.x.export: shard_size is not an option of imagefolder",
        ),
        ({"x": {"base": "nope", "components": [{"source": "s"}]}}, "unknown release 'nope'"),
    ],
)
def test_bad_recipes_are_one_line_errors(bad, message):
    with pytest.raises(DataError, match=message):
        resolve_recipe("x", bad)


def test_component_into_follows_split_and_export_is_inherited():
    recipes = {
        "a": {
            "components": [{"source": "s"}, {"source": "s", "split": "validation"}],
            "export": {"format": "webdataset", "shard_size": 5},
        },
        "b": {"base": "a", "validation_leaks": "none"},
        "c": {"base": "b", "export": "simpletuner"},
    }
    a = resolve_recipe("a", recipes)
    assert [(x.split, x.into) for x in a.components] == [("all", "train"), ("validation", "validation")]
    assert a.export.spec() == {"format": "webdataset", "shard_size": 5}
    b = resolve_recipe("b", recipes)
    assert b.export == a.export and b.reclean is False
    assert resolve_recipe("c", recipes).export.spec() == "simpletuner"


def test_compose_runs_each_release_on_its_base_output_and_records_own_reasons():
    a_rows, a_removed = compose(resolve_recipe("a", releases()), OPS)
    assert dict(zip(a_removed["id"], a_removed["reason"])) == {"s1-validation-000": "leak:exact"}
    b_rows, b_removed = compose(resolve_recipe("b", releases()), OPS)
    assert dict(zip(b_removed["id"], b_removed["reason"])) == {"s2-train-000": "cross_dedup:train"}  # "a blue whale"
    assert b_rows["id"].tolist()[: len(a_rows)] == a_rows["id"].tolist()  # b starts from a's output
    rows, removed = compose(resolve_recipe("c", releases()), OPS)
    assert dict(zip(removed["id"], removed["reason"])) == {
        "s2-train-001": "clean:http",  # reclean
        "s1-validation-001": "leak:near",  # near-duplicate of a train text
    }
    assert sorted(rows["id"]) == ["s1-train-000", "s1-train-001", "s1-train-002", "s2-validation-000"]
    assert set(rows.loc[rows["source"] == "s2", "split"]) == {"train"}  # `into` wins over the source split
    stats = release_stats(rows, removed)
    assert stats["rows"] == {"train": 4, "validation": 0, "total": 4}
    assert stats["removed"]["total"] == 2


def test_without_reclean_dirty_rows_stay():
    rows, removed = compose(resolve_recipe("b", releases()), OPS)
    assert "bad http link prompt" in set(rows["text"])
    assert "clean:http" not in set(removed["reason"])
