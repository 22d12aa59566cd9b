"""compose@V's rows, streamed, for a recipe that only picks and orders rows (compose.picks_only).

Such a recipe reads no text: which rows a component takes, and in what order, follows from their ids and
positions alone. So only those keys are held (a few tens of bytes a row); the rows themselves go from the
split tables to rows.parquet a chunk at a time through an external sort (scripts/lib/external_sort.py),
each row placed by its rank in the output. The bytes equal compose()'s whole-table output
(tests/test_compose_stream.py), and every chunk passes the checks compose_ops.split_loader makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.lib.compose import (
    ROW_COLUMNS,
    ROWS_SCHEMA,
    check_unique_ids,
    component_order,
    component_parts,
    composed_arrow,
)
from scripts.lib.compose_ops import with_positions
from scripts.lib.external_sort import sorted_rows_to
from scripts.lib.paths import check_plain_ids, check_split_rows
from scripts.lib.progress import Progress
from scripts.lib.recipe import Recipe
from scripts.lib.safe_paths import table_in
from scripts.lib.tables import ParquetChunks, check_table, read_parquet


@dataclass(frozen=True)
class Placement:
    """Where a split table's rows go: `ranks[i]` is row i's place in the output (-1: not taken)."""

    path: Path
    source: str
    split: str  # the value of the rows' `split` column in the release
    ranks: np.ndarray


def placements(recipe: Recipe, splits_dir: Path, positions_dir: Path | None) -> Iterator[Placement]:
    """Every split table the recipe's components read, with each row's output rank: components in build
    order (the base chain's first), each component's rows in component_order."""
    placed, taken = 0, []
    for component in recipe.components:
        paths = [table_in(splits_dir, component.source, f"{part}.parquet") for part in component_parts(component)]
        keys = [row_keys(path, component.source, positions_dir) for path in paths]
        order = component_order(component, pd.concat(keys, ignore_index=True))
        taken.append(pd.concat([k["id"] for k in keys], ignore_index=True).take(order))
        rank_of = np.full(sum(len(k) for k in keys), -1, dtype=np.int64)
        rank_of[order] = np.arange(placed, placed + len(order))
        placed += len(order)
        start = 0
        for path, part, part_keys in zip(paths, component_parts(component), keys):
            split = part if component.into == "same" else component.into
            yield Placement(path, component.source, split, rank_of[start : start + len(part_keys)])
            start += len(part_keys)
    check_unique_ids(pd.concat(taken, ignore_index=True), recipe)  # as compose() checks its rows


def row_keys(path: Path, source: str, positions_dir: Path | None) -> pd.DataFrame:
    """A split table's ids (checked: text, unique) with their positions: all composition needs to order."""
    keys = read_parquet(path, columns=["id"])
    check_table(keys, path, strings=("id",), unique="id")
    check_plain_ids(keys["id"], path)  # before a bad id reads as a row without a position
    return with_positions(keys, source, positions_dir)


def write_picked_rows(
    plan: list[Placement],
    roots: dict[str, list[Path]],
    text_only: frozenset[str],
    output: Path,
    chunk_rows: int,
    desc: str = "compose",
) -> int:
    """rows.parquet of a picks_only recipe from its placements, streamed; returns the rows written."""
    total = sum(int((placement.ranks >= 0).sum()) for placement in plan)
    read = sum(len(placement.ranks) for placement in plan)
    with (
        Progress(desc, total=read, unit="rows", summary=False) as progress,
        sorted_rows_to(output, np.arange(total), ROWS_SCHEMA) as out,
    ):
        for placement in plan:
            first, images_required, roots_of = 0, placement.source not in text_only, roots[placement.source]
            for chunk in ParquetChunks(placement.path, chunk_rows, columns=ROW_COLUMNS).frames():
                progress.advance(len(chunk))
                check_split_rows(chunk, placement.path, placement.source, roots_of, images_required, first=first + 1)
                ranks = placement.ranks[first : first + len(chunk)]
                first += len(chunk)
                taken = np.flatnonzero(ranks >= 0)
                if len(taken):
                    rows = chunk.iloc[taken].assign(split=placement.split)[ROW_COLUMNS].reset_index(drop=True)
                    out.add_rows(composed_arrow(rows), ranks[taken])
    return total
