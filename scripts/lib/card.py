"""The data card of a release: README.md with Hugging Face YAML front matter.

`data_card` is pure but for the secrets known to the process (the recipe, the release's stats, the sources'
entries, the settings that rendered the images and the params that shaped the rows -> text). Licences, links
and citations come from params.yaml `sources.S.{license,homepage,citation}`; what is not given there is written
as unknown. The card is published (publish uploads it as the dataset's README): no known secret is in it
(import_env.redact_known), unlike a row's prompt, which is data and stays as written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import yaml

from scripts.lib.errors import DataError
from scripts.lib.export import card_data_files
from scripts.lib.io import SPLITS
from scripts.lib.markdown_text import authored, cell, code, code_span, fenced, link_target, name_text
from scripts.lib.nesting import TooDeep, loads_json
from scripts.lib.params import Dedup, Source, Split
from scripts.lib.recipe import Recipe

# the per-row fields of captions@S's `generation` that vary by row: left out of the card's summary
PER_ROW = ("seed",)


def card_params(dedup: Dedup, split: Split, embeddings: bool = False) -> dict:
    """The params a release's card shows: dedup and split as params.yaml sets them, without keys that
    change speed only (the stage does not depend on them, so a card naming them would go stale), and
    without the embedding keys unless a step or source of the release deduplicates by `embeddings`."""
    from scripts.lib.params.dedup import SPEED_KEYS

    shown = {k: v for k, v in dedup.model_dump(exclude_unset=True).items() if k not in SPEED_KEYS}
    if not embeddings and shown.get("method", "minhash") == "minhash":  # the embedding keys change nothing
        shown = {k: v for k, v in shown.items() if not k.startswith("embedding_")}
    return {"dedup": shown, "split": split.model_dump(exclude_unset=True)}


def source_dedup(entry: Source, dedup: Dedup) -> dict | None:
    """What dedup@S ran on a source (method, threshold, keep: the section's with the source's
    overrides), None when it was off."""
    if entry.dedup is False:
        return None
    overrides = {} if isinstance(entry.dedup, bool) else entry.dedup.overrides()
    return {"method": dedup.method, "threshold": dedup.threshold, "keep": dedup.keep} | overrides


def uses_embeddings(recipe: Recipe, names: list[str], sources: dict[str, Source], dedup: Dedup) -> bool:
    """Whether any dedup step of the recipe's chain, or dedup@S of one of its sources, compared embeddings."""
    methods = [(step.dedup.method or dedup.method) for step in recipe.chain_steps() if step.dedup is not None]
    methods += [found["method"] for found in (source_dedup(sources[s], dedup) for s in names) if found]
    return "embedding" in methods


def size_category(total: int) -> str:
    return (
        "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "100K<n<1M"
    )


def generation_settings(generation: list, files: Sequence[tuple[Path | str, int]] = ()) -> list[dict]:
    """The distinct settings (captions@S's `generation` JSON, less per-row fields) that rendered the images
    of a source, in first-seen order; none for images the source carried. `files`: the split table each
    run of values came from and its row count, in order, so a bad value is one line naming file and row."""
    found: dict[str, dict] = {}
    for index, text in enumerate(generation):
        if not isinstance(text, str) or not text:
            continue
        settings = {k: v for k, v in sorted(_parsed_settings(text, index, files).items()) if k not in PER_ROW}
        found.setdefault(json.dumps(settings, sort_keys=True), settings)
    return list(found.values())


def _parsed_settings(text: str, index: int, files: Sequence[tuple[Path | str, int]]) -> dict:
    """One `generation` value as its settings object; a DataError (file, row, column) for anything else."""
    try:
        value = loads_json(text)  # depth-bounded: a split table is any file a user hands release@V
    except ValueError as exc:  # TooDeep, not JSON, or an integer past Python's digit limit
        problem = str(exc) if isinstance(exc, TooDeep) else f"not JSON ({exc})"
        raise DataError(f"{_value_at(index, files)}: column 'generation': {problem}") from None
    if not isinstance(value, dict):
        found = "null" if value is None else type(value).__name__
        raise DataError(f"{_value_at(index, files)}: column 'generation': not a JSON object of settings ({found})")
    return value


def _value_at(index: int, files: Sequence[tuple[Path | str, int]]) -> str:
    """`FILE: row N` (from 1) of the index-th value of the files' values taken in order."""
    for path, rows in files:
        if index < rows:
            return f"{path}: row {index + 1}"
        index -= rows
    return f"generation value {index + 1}"


def card_licence(names: list[str], sources: dict[str, Source]) -> str:
    """The front matter's licence: the sources' one licence when they agree and know it, else `other`."""
    licences = {sources[s].license for s in names}
    return cast(str, licences.pop()) if len(licences) == 1 and None not in licences else "other"


def data_card(
    recipe: Recipe,
    stats: dict,
    sources: dict[str, Source],
    dedup: Dedup,
    split: Split,
    generation: dict[str, list[dict]] | None = None,
) -> str:
    """README.md with Hugging Face YAML front matter. `generation`: source -> generation_settings."""
    names = sorted({c.source for c in recipe.all_components()})
    generation = generation or {}
    text_only = recipe.export.format == "prompts"
    front = {
        "pretty_name": f"t2i-datasets {recipe.name}",
        "license": card_licence(names, sources),
        "task_categories": ["text-to-image"] if text_only else ["text-to-image", "image-to-text"],
        "size_categories": [size_category(stats["rows"]["total"])],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": card_data_files(recipe.export.format, s)} for s in SPLITS],
            }
        ],
    }  # no dataset_info: its splits need num_bytes (Arrow bytes, unknown before loading); publish writes it
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        f"# t2i-datasets {recipe.name}",
        "",
        authored(recipe.description or ""),  # the author's Markdown, inert: no raw HTML, h1 or open fence
        "",
    ]
    lines += _rows(stats, names)
    lines += _sources(names, sources, dedup)
    if not text_only:
        lines += _images(names, generation)
    lines += _how_made(recipe, stats, dedup, split, uses_embeddings(recipe, names, sources, dedup))
    lines += _limitations(names, sources, generation, text_only)
    lines += _citations(names, sources)
    lines += _revision(recipe)
    return _without_secrets("\n".join(lines))


def _without_secrets(card: str) -> str:
    """The card with every known secret (an environment variable's, a credential file's) starred: a homepage's
    `?token=` holding the Hub token, a citation or a rendering model's path holding an AWS key were written into
    README.md as given, and publish put them on the Hub."""
    from scripts.lib.import_env import redact_known

    return cast(str, redact_known(card, None))


def _rows(stats: dict, names: list[str]) -> list[str]:
    lines = ["## Rows", "", "| split | rows | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for s in SPLITS:
        per = [str(stats["by_source"][s].get(src, 0)) for src in names]
        lines.append(f"| {s} | {stats['rows'][s]} | " + " | ".join(per) + " |")
    return lines + [""]


def _sources(names: list[str], sources: dict[str, Source], dedup: Dedup) -> list[str]:
    lines = [
        "## Sources and licences",
        "",
        "| source | kind | licence | link | near-duplicates removed (dedup@S) | caption language |",
        "|---|---|---|---|---|---|",
    ]
    for s in names:
        entry, found = sources[s], source_dedup(sources[s], dedup)
        removed = "no" if found is None else f"{found['method']} ≥ {found['threshold']}, keep {found['keep']}"
        # a licence or homepage is params text: `|` split the row, `<!--` hid the rest of the card
        homepage = link_target(entry.homepage) or cell(entry.homepage) if entry.homepage else "unknown"
        lines.append(
            f"| {code(s)} | {entry.kind}{', text only' if entry.text_only else ''} | {cell(entry.license or 'unknown')} "
            f"| {homepage} | {removed} | {entry.caption_language or 'any (not checked)'} |"
        )
    return lines + [
        "",
        "Each row keeps its source's licence; where it says unknown, the source named none that "
        "this pipeline knows of: check it before you redistribute those rows. The caption language is "
        "the one langdetect had to read in a row's raw prompt for the row to be kept.",
        "",
    ]


def _images(names: list[str], generation: dict[str, list[dict]]) -> list[str]:
    lines = ["## Images", ""]
    for s in names:
        settings = generation.get(s) or []
        if not settings:
            lines.append(f"- {code_span(s)}: the images the source carries.")
        for one in settings:  # captions@S's `generation` JSON: keys and values from a split table, shown as text
            shown = ", ".join(f"{name_text(k, 100)} {code_span(v, 500)}" for k, v in one.items())
            lines.append(f"- {code_span(s)}: rendered by the pipeline: {shown} (each row's seed is in its metadata).")
    return lines + [""]


def _how_made(recipe: Recipe, stats: dict, dedup: Dedup, split: Split, embeddings: bool) -> list[str]:
    recipe_yaml = {
        "lineage": list(recipe.lineage),
        "base": recipe.base.name if recipe.base else None,
        "components": [c.model_dump(exclude_defaults=True) for c in recipe.own_components],
        "steps": [s.model_dump(exclude_defaults=True) for s in recipe.steps],
    }
    return [
        "## How it was made",
        "",
        "Each source was read in its native format, cleaned by rule (rows and reasons in the pipeline's "
        "clean reports), near-duplicates removed (MinHash, or embeddings, at the threshold below), prompt-only "
        "sources rendered, and the rows split into train and validation. This release then took the components "
        "and ran the steps of its recipe; every row a step removed is in `removed.parquet` with its reason.",
        "",
        "### Removed rows",
        "",
        *[f"- {code_span(reason)}: {n}" for reason, n in stats["removed"].items()],
        "",
        "### Recipe",
        "",
        *fenced(yaml.safe_dump(recipe_yaml, sort_keys=False).rstrip(), "yaml"),
        "",
        "### Params",
        "",
        *fenced(yaml.safe_dump(card_params(dedup, split, embeddings), sort_keys=True).rstrip(), "yaml"),
        "",
    ]


def _limitations(
    names: list[str], sources: dict[str, Source], generation: dict[str, list[dict]], text_only: bool
) -> list[str]:
    lines = [
        "## Limitations and biases",
        "",
        "- The prompts were written by the users of image generators (or by a language model imitating them): "
        "they carry those communities' tastes, stereotypes and artist names, mostly in English.",
        "- Cleaning and near-duplicate removal are automatic rules: some unwanted rows stay and some good "
        "ones go (see `removed.parquet`).",
    ]
    models = sorted({str(one.get("model")) for s in names for one in generation.get(s) or []})
    if models and not text_only:
        lines.append(
            f"- Rendered images show what {', '.join(code_span(m) for m in models)} makes of each prompt, "
            "its biases and failures included; they are not photographs of the prompt's subject."
        )
    if any(m.endswith("tiny-sd2") for m in models):
        lines.append("- `models/tiny-sd2` has random weights (the offline test model): its images are noise.")
    if any(sources[s].license is None for s in names):
        lines.append("- Some sources name no licence (see above).")
    return lines + [""]


def _citations(names: list[str], sources: dict[str, Source]) -> list[str]:
    asked = [(s, citation) for s in names if (citation := sources[s].citation)]
    if not asked:
        return []
    lines = ["## Citation", "", "If you use this dataset, cite the sources that ask for it:", ""]
    for s, citation in asked:
        lines += [f"{code_span(s)}:", "", *fenced(citation.strip(), "bibtex"), ""]
    return lines


def _revision(recipe: Recipe) -> list[str]:
    return [
        "## Reproducing it",
        "",
        f"Built by `dvc repro release@{recipe.name}`. The git commit whose `dvc.lock` lists this file's md5 "
        'pins every input and setting: `git log --format=%H -S "$(md5sum README.md | cut -c1-32)" -- dvc.lock` '
        "names it in the repository this release was built in.",
        "",
    ]
