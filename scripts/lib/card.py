"""The data card of a release: README.md with Hugging Face YAML front matter.

`data_card` is pure (a recipe, the release's stats and the params it read -> text): row counts per
split and source, removed rows per reason, the sources and their licences, the recipe and the params
that shaped the rows.
"""
from __future__ import annotations

import yaml

from scripts.lib.export import card_data_files
from scripts.lib.io import SPLITS
from scripts.lib.params import Dedup, Source, Split
from scripts.lib.recipe import Recipe


def card_params(dedup: Dedup, split: Split) -> dict:
    """The params a release's card shows: dedup and split as params.yaml sets them, without keys that
    change speed only (the stage does not depend on them, so a card naming them would go stale)."""
    from scripts.lib.dedup import SPEED_KEYS

    shown = {k: v for k, v in dedup.model_dump(exclude_unset=True).items() if k not in SPEED_KEYS}
    if shown.get("method", "minhash") == "minhash":  # the embedding keys change nothing then
        shown = {k: v for k, v in shown.items() if not k.startswith("embedding_")}
    return {"dedup": shown, "split": split.model_dump(exclude_unset=True)}


def size_category(total: int) -> str:
    return "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "100K<n<1M"


def data_card(recipe: Recipe, stats: dict, sources: dict[str, Source], dedup: Dedup, split: Split) -> str:
    """README.md with Hugging Face YAML front matter: counts, sources, recipe, params, licences."""
    names = sorted({c.source for c in recipe.all_components()})
    front = {
        "pretty_name": f"t2i-datasets {recipe.name}",
        "license": "other",
        "task_categories": ["text-to-image", "image-to-text"],
        "size_categories": [size_category(stats["rows"]["total"])],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": card_data_files(recipe.export.format, s)} for s in SPLITS],
            }
        ],
        "dataset_info": {"splits": [{"name": s, "num_examples": stats["rows"][s]} for s in SPLITS]},
    }
    recipe_yaml = {
        "lineage": list(recipe.lineage),
        "base": recipe.base.name if recipe.base else None,
        "components": [c.model_dump(exclude_defaults=True) for c in recipe.own_components],
        "steps": [s.model_dump(exclude_defaults=True) for s in recipe.steps],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        f"# t2i-datasets {recipe.name}",
        "",
        recipe.description or "",
        "",
        "## Rows",
        "",
        "| split | rows | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for s in SPLITS:
        per = [str(stats["by_source"][s].get(src, 0)) for src in names]
        lines.append(f"| {s} | {stats['rows'][s]} | " + " | ".join(per) + " |")
    lines += ["", "## Removed rows", ""]
    lines += [f"- `{reason}`: {n}" for reason, n in stats["removed"].items()]
    lines += ["", "## Sources and licences", ""]
    lines += [f"- `{s}` ({sources[s].kind}): licence `{sources[s].license or 'unknown'}`" for s in names]
    lines += [
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(recipe_yaml, sort_keys=False).rstrip(),
        "```",
        "",
        "## Params",
        "",
        "```yaml",
        yaml.safe_dump(card_params(dedup, split), sort_keys=True).rstrip(),
        "```",
        "",
        "Built by `dvc repro release@" + recipe.name + "`; the git tag of the same name pins every input.",
        "",
    ]
    return "\n".join(lines)
