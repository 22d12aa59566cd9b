"""The data card (scripts/lib/card.py): what a Hub reader needs to trust a release, from what the
pipeline knows: per-source licences, links and citations (unknown where params.yaml gives none), the
settings that rendered the images, how the rows were made, limitations, and how to find the commit."""

from __future__ import annotations

import json

import yaml

from scripts.lib.card import data_card, generation_settings
from scripts.lib.params import Dedup, Source, Split
from scripts.lib.recipe import resolve_recipe

CITATION = "@inproceedings{wang2023diffusiondb,\n  title = {DiffusionDB},\n  year = {2023}\n}"
SOURCES = {
    "diffusiondb": Source(
        kind="diffusiondb",
        path="data/raw/diffusiondb",
        license="cc0-1.0",
        homepage="https://huggingface.co/datasets/poloclub/diffusiondb",
        citation=CITATION,
    ),
    "chatgpt": Source(kind="text", path="data/raw/chatgpt"),
}
RELEASES = {
    "r": {
        "description": "Two sources.",
        "components": [
            {"source": "diffusiondb", "split": "all", "into": "same"},
            {"source": "chatgpt", "split": "all", "into": "train"},
        ],
    }
}
STATS = {
    "rows": {"train": 3, "validation": 1, "total": 4},
    "by_source": {"train": {"chatgpt": 1, "diffusiondb": 2}, "validation": {"diffusiondb": 1}},
    "removed": {"dedup:self": 2, "total": 2},
}
RENDERED = [
    json.dumps(
        {"model": "models/tiny-sd2", "steps": 6, "guidance": 9.0, "seed": seed, "scheduler": "dpmpp", "format": "jpg"}
    )
    for seed in (1, 2)
]


def card(sources=SOURCES, generation=None) -> str:
    generation = generation if generation is not None else {"diffusiondb": generation_settings(RENDERED), "chatgpt": []}
    return data_card(resolve_recipe("r", RELEASES), STATS, sources, Dedup(threshold=0.85), Split(), generation)


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_the_card_names_each_sources_licence_and_link_and_unknown_where_none_is_given():
    text = card()
    assert "| `diffusiondb` | diffusiondb | cc0-1.0 | https://huggingface.co/datasets/poloclub/diffusiondb |" in text
    assert "| `chatgpt` | text | unknown | unknown |" in text
    assert front_matter(text)["license"] == "other"  # the sources disagree (one is unknown)
    only = {"diffusiondb": SOURCES["diffusiondb"]}
    releases = {"r": {"components": [{"source": "diffusiondb"}]}}
    alone = data_card(resolve_recipe("r", releases), STATS, only, Dedup(), Split(), {})
    assert front_matter(alone)["license"] == "cc0-1.0"


def test_the_card_carries_the_citations_sources_ask_for():
    text = card()
    assert "## Citation" in text and CITATION in text
    assert "## Citation" not in card(sources={**SOURCES, "diffusiondb": SOURCES["diffusiondb"].replace(citation=None)})


def test_the_card_names_the_model_and_settings_that_rendered_the_images_once():
    text = card()
    assert generation_settings(RENDERED) == [
        {"format": "jpg", "guidance": 9.0, "model": "models/tiny-sd2", "scheduler": "dpmpp", "steps": 6}
    ]  # seeds vary per row
    assert text.count("rendered by the pipeline: format `jpg`, guidance `9.0`, model `models/tiny-sd2`") == 1
    assert "- `chatgpt`: the images the source carries." in text
    assert "random weights" in text  # the tiny model's images are noise, and the card says so


def test_the_card_says_how_it_was_made_its_limits_and_how_to_find_its_commit():
    text = card()
    for heading in (
        "## Rows",
        "## Sources and licences",
        "## Images",
        "## How it was made",
        "### Recipe",
        "### Params",
        "## Limitations and biases",
        "## Reproducing it",
    ):
        assert heading in text, heading
    assert [line for line in text.splitlines() if line.startswith("# ")] == ["# t2i-datasets r"]  # one title
    assert "git tag" not in text and "git log --format=%H -S" in text
    assert "threshold: 0.85" in text and "- `dedup:self`: 2" in text
