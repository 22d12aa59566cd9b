"""compose@V: a release's rows by its recipe, before any layout is written.

    python -m scripts compose V data/splits data/compose/V --recipe data/recipes/compose/V.json

Composing (scripts/lib/compose.py: components, cleaning and dedup steps) is the slow half of a release;
as its own stage, a change of layout (`export`) or card text (`description`) re-runs release@V's export
only. Its plan holds the release entries without those two keys (scripts/lib/plans.py compose_plan).
Out: data/compose/V/rows.parquet (the release's rows) and removed.parquet (every row a step removed,
with its reason); release@V reads both (`--composed`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from scripts.lib.compose import (
    ROW_COLUMNS,
    ROWS_SCHEMA,
    compose,
    composed_arrow,
    composed_table,
    no_removed_rows,
    picks_only,
)
from scripts.lib.compose_ops import stage_ops
from scripts.lib.compose_stream import placements, write_picked_rows
from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path, check_not_input, check_replaceable, shown
from scripts.lib.params import load_section
from scripts.lib.plans import (
    check_plan,
    compose_plan,
    plan_releases,
    plan_sources,
    release_plan,
    written_releases,
    written_sources,
)
from scripts.lib.recipe import resolve_recipe, source_roots
from scripts.lib.safe_paths import table_in
from scripts.lib.tables import column_names, read_parquet, write_parquet, write_row_groups

ROWS, REMOVED = "rows.parquet", "removed.parquet"


def write_composed(rows: pd.DataFrame, removed: pd.DataFrame, output: Path) -> None:
    with atomic_path(output, is_dir=True) as tmp:
        write_row_groups([composed_arrow(rows)], ROWS_SCHEMA, tmp / ROWS)
        write_parquet(composed_table(removed), tmp / REMOVED)


def read_composed(folder: Path, row_columns: list[str] = ROW_COLUMNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, removed rows) that compose@V wrote, rows with `row_columns` only; a missing file or column
    is one line."""
    rows = read_parquet(composed_file(folder, ROWS, ROW_COLUMNS), columns=row_columns)
    removed = read_parquet(composed_file(folder, REMOVED, ROW_COLUMNS + ["reason"]))
    return rows[row_columns], removed[ROW_COLUMNS + ["reason"]]


def composed_file(folder: Path, name: str, columns: list[str]) -> Path:
    """folder/name, checked to be a compose@V output with `columns` (its footer read, not its rows)."""
    path = table_in(Path(folder), name)
    if not path.is_file():
        raise DataError(f"{path}: not found (run compose@{Path(folder).name} first)")
    names = column_names(path)  # read from the file table_in checked, opened once (tables.parquet_source)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: no {missing[0]!r} column (not a compose output)")
    return path


def compose_release(name: str, reads: dict, splits: Path, rules: Path, positions: Path, desc: str):
    """(recipe, rows, removed rows) of release `name` from its plan `reads` (scripts/lib/plans.py)."""
    releases, sources = plan_releases(reads), plan_sources(reads)  # what V reads, and no other
    recipe = resolve_recipe(name, releases)
    ops = stage_ops(
        sources,
        releases,
        load_section("dedup", missing_ok=True),
        splits,
        rules,
        positions,
        recipe,
        desc,
        load_section("runtime", missing_ok=True),
    )
    return (recipe, *compose(recipe, ops))


def cli(
    name: str = typer.Argument(..., help="release name in params.yaml: releases"),
    splits: Path = typer.Argument(..., help="data/splits (one folder per source)"),
    output: Path = typer.Argument(..., help="data/compose/V"),
    rules: Path = typer.Option(Path("data/clean/rules.json"), "--rules", help="compiled cleaning rules (clean steps)"),
    positions: Path = typer.Option(
        Path("data/prefilter"),
        "--positions",
        help="prefilter@S outputs: each row's place in its source's generation list (row ranges)",
    ),
    plan: Path = typer.Option(None, "--recipe", help="data/recipes/compose/V.json (default: params.yaml releases)"),
) -> None:
    """Compose a release's rows from per-source splits by its recipe (no export)."""
    reads = release_plan(name, written_releases(), written_sources())
    if plan is not None:  # dvc.yaml: the file this stage depends on must hold what it reads
        check_plan(plan, compose_plan(reads))
    check_not_input(output, [splits, rules, positions])
    check_replaceable(output, writes=(ROWS, REMOVED))  # before any input is read; atomic_path checks again at the end
    recipe, sources = resolve_recipe(name, plan_releases(reads)), plan_sources(reads)
    roots = source_roots(sources, recipe)  # a component of an unknown source: one line, before any work
    placed = list(placements(recipe, splits, positions)) if picks_only(recipe) else []
    if placed:  # nothing here reads a text: the rows stream through, placed by their keys
        rows, removed = write_placed(placed, roots, sources, output, f"compose@{name}"), 0
    else:
        _, composed, gone = compose_release(name, reads, splits, rules, positions, f"compose@{name}")
        write_composed(composed, gone, output)
        rows, removed = len(composed), len(gone)
    print(shown(f"compose@{name}: {rows} rows, {removed} removed -> {output}"))


def write_placed(placed: list, roots: dict, sources: dict, output: Path, desc: str) -> int:
    """compose@V's outputs for a recipe that only picks rows: rows.parquet streamed, no removed row."""
    text_only = frozenset(name for name, entry in sources.items() if entry.text_only)
    with atomic_path(output, is_dir=True) as tmp:
        chunk_rows = load_section("runtime", missing_ok=True).stream_rows
        rows = write_picked_rows(placed, roots, text_only, tmp / ROWS, chunk_rows, desc)
        write_parquet(composed_table(no_removed_rows()), tmp / REMOVED)
    return rows
