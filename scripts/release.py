"""release@V: compose per-source splits into a published dataset version by its recipe.

    python -m scripts release V data/splits data/releases/V --recipe data/recipes/release/V.json

The recipe language is in docs/recipes.md; its cores are in scripts/lib/: recipe.py (resolving
params.yaml `releases.V`), compose.py (rows in -> rows out), compose_ops.py (reading and checking the
splits, cleaning, dedup), plans.py (the plan file checked here), card.py (README.md), paths.py (what
may be read and replaced) and export.py (the layouts). This module reads params, wires them and writes.
Outputs (data/releases/V/): train/ and validation/ in the recipe's `export` layout, removed.parquet
(every removed row with its reason), rows.parquet, stats.json (a DVC metric), preview.jpg (contact
sheet) and README.md (a Hugging Face data card).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from scripts.lib.card import data_card
from scripts.lib.compose import Ops, compose, output_rows, release_stats
from scripts.lib.compose_ops import cleaner, deduper, source_roots, split_loader
from scripts.lib.export import export_options, write_rows_table, write_split
from scripts.lib.io import SPLITS, check_not_input, mark_folder, staging_dir, write_json, write_parquet
from scripts.lib.params import Dedup, Preview, Release, Source, load_section
from scripts.lib.paths import check_output, move_into_place
from scripts.lib.plans import check_plan, plan_releases, release_plan, written_releases
from scripts.lib.recipe import Recipe, referenced_releases, resolve_recipe


def stage_ops(sources: dict[str, Source], releases: dict[str, Release], dedup: Dedup, splits: Path,
              rules: Optional[Path], positions: Optional[Path], recipe: Recipe, desc: str) -> Ops:
    """Ops reading data/splits (images checked) and the releases named by `reference` (composed the same way)."""
    roots = source_roots(sources, recipe)
    for other in referenced_releases(recipe):
        roots.update(source_roots(sources, resolve_recipe(other, releases)))
    built: dict[str, pd.DataFrame] = {}
    ops = Ops(split_loader(splits, roots, positions), cleaner(rules, desc), deduper(dedup, load_section("runtime", missing_ok=True)), built=built)

    def reference(name: str) -> pd.DataFrame:
        return output_rows(resolve_recipe(name, releases), ops)

    return Ops(ops.load_split, ops.clean, ops.keep, reference, built)


def cli(
    name: str = typer.Argument(..., help="release name in params.yaml: releases"),
    splits: Path = typer.Argument(..., help="data/splits (one folder per source)"),
    output: Path = typer.Argument(..., help="data/releases/V"),
    rules: Path = typer.Option(Path("data/clean/rules.json"), "--rules", help="compiled cleaning rules (clean steps)"),
    positions: Path = typer.Option(Path("data/prefilter"), "--positions",
                                   help="prefilter@S outputs: each row's place in its source's generation list (row ranges)"),
    plan: Path = typer.Option(None, "--recipe", help="data/recipes/release/V.json (default: params.yaml releases)"),
) -> None:
    """Compose a release from per-source splits by its recipe."""
    reads = release_plan(name, written_releases())
    if plan is not None:  # dvc.yaml: the file this stage depends on must hold what it reads
        check_plan(plan, reads)
    releases = plan_releases(reads)  # the releases V reads, and no other
    recipe = resolve_recipe(name, releases)
    fmt, options = export_options(recipe.export.spec(), f"params.yaml: releases.{name}")
    from scripts.lib.progress import Progress

    sources = load_section("sources", missing_ok=True)
    dedup = load_section("dedup", missing_ok=True)
    split = load_section("split", missing_ok=True)
    geometry = load_section("preview", missing_ok=True)
    check_not_input(output, [splits, rules])
    check_output(output)  # before any work: a mistyped output path fails at once, in one line
    rows, removed = compose(recipe, stage_ops(sources, releases, dedup, splits, rules, positions, recipe, f"release@{name}"))
    stats = release_stats(rows, removed)
    # Everything is written into a staging folder first and moved into place only at the end, so a
    # bad image or a crash leaves the previous release whole (never train new and validation old).
    with staging_dir(output) as staging:  # locked; a killed run's staging folder goes on the next run
        with Progress(f"release@{name}", total=len(rows), unit="images") as progress:
            for part in SPLITS:
                write_split(rows[rows["split"] == part], staging / part, fmt, options, progress.advance)
                mark_folder(staging / part)
        write_preview(rows, staging / "preview.jpg", geometry)
        write_parquet(removed.astype({"width": "Int64", "height": "Int64"}), staging / "removed.parquet")
        (staging / "README.md").write_text(data_card(recipe, stats, sources, dedup, split), encoding="utf-8")
        write_json(stats, staging / "stats.json")
        write_rows_table(rows, staging)  # rows.parquet: the release's rows, whatever the layout
        move_into_place(staging, output)
    print(f"release@{name}: train {stats['rows']['train']}, validation {stats['rows']['validation']}, removed {stats['removed']['total']}")


def write_preview(rows: pd.DataFrame, output: Path, geometry: Preview) -> None:
    """preview.jpg: contact sheet of a deterministic sample (the ids whose sha256 sorts first),
    read from the image store, so it looks the same whatever the export layout."""
    import io

    from scripts.lib.export import image_bytes
    from scripts.lib.preview import contact_sheet, sample_ids

    by_id = rows.set_index("id")
    chosen = sample_ids(by_id.index, geometry.columns * geometry.rows)
    items = [(io.BytesIO(image_bytes(by_id.at[i, "image"])), str(by_id.at[i, "text"])) for i in chosen]
    contact_sheet(items, geometry).save(output, format="JPEG", quality=geometry.quality)
