"""split@S: assign every caption row to train or validation.

A source's predefined split (e.g. Gustavosta train/eval) is kept. Other rows are drawn by
`split.method`:
  hash     validation when a seeded hash of the id falls under `split.validation_fraction`: a row's
           split depends only on its own id, so adding rows never moves existing rows between splits;
  shuffle  the team's split_dataset.py exactly: the rows in generation order (the `position` column of
           data/prefilter/S.parquet), random.seed(seed); random.shuffle(rows); train = the first
           int(n * (1 - validation_fraction)), validation the rest.

In:  data/captions/S.parquet, data/prefilter/S.parquet (order)   Out: data/splits/S/{train,validation}.parquet
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pandas as pd
import typer

from scripts.lib.errors import DataError
from scripts.lib.io import SPLITS, atomic_path, check_table, read_parquet, shown, write_parquet
from scripts.lib.params import load_section


def hash_unit(seed: int, row_id: str) -> float:
    """A uniform number in [0, 1) from (seed, id), identical on every machine."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shuffle_split(ids_in_order: list[str], validation_fraction: float, seed: int) -> dict[str, str]:
    """The team's shuffle-and-slice: `random.seed(seed); random.shuffle(captions)`, train = the first
    int(n * (1 - validation_fraction)) (their `captions[: int(len(captions) * 0.95)]`)."""
    order = list(ids_in_order)
    random.Random(seed).shuffle(order)  # random.seed(s); random.shuffle(x) is this same generator
    cut = int(len(order) * (1 - validation_fraction))
    return {row_id: ("train" if k < cut else "validation") for k, row_id in enumerate(order)}


def assign_splits(
    rows: pd.DataFrame, validation_fraction: float, seed: int, method: str = "hash", positions: pd.Series | None = None
) -> pd.Series:
    """Predefined split where present, else the draw of `method`. shuffle needs `positions` (the row's
    place in the generation list, aligned with rows); only rows without a predefined split are shuffled."""
    if method == "shuffle":
        if positions is None or positions.isna().any():
            missing = rows["id"].iloc[0] if positions is None else rows.loc[positions.isna(), "id"].iloc[0]
            raise DataError(f"row {missing}: no position in the generation list (split.method shuffle needs it)")
        open_rows = rows["split"].isna() if "split" in rows else pd.Series(True, index=rows.index)
        order = rows.loc[open_rows].assign(_p=positions[open_rows]).sort_values(["_p", "id"], kind="stable")["id"]
        drawn_by_id = shuffle_split(order.tolist(), validation_fraction, seed)
        drawn = rows["id"].map(drawn_by_id)
    else:
        drawn = pd.Series(
            ["validation" if hash_unit(seed, i) < validation_fraction else "train" for i in rows["id"]],
            index=rows.index,
        )
    predefined = rows["split"] if "split" in rows else pd.Series(None, index=rows.index)
    chosen = predefined.where(predefined.notna(), drawn)
    unknown = ~chosen.isin(SPLITS)
    if unknown.any():
        bad = chosen[unknown].iloc[0]
        raise DataError(f"row {rows.loc[unknown, 'id'].iloc[0]}: unknown split {bad!r} (expected train or validation)")
    return chosen


def cli(
    source: str = typer.Argument(..., help="source name in params.yaml: sources"),
    input: Path = typer.Argument(..., help="data/captions/S.parquet"),
    output: Path = typer.Argument(..., help="data/splits/S (directory)"),
    order: Path | None = typer.Option(
        None,
        "--order",
        help="data/prefilter/S.parquet: id, position (method "
        "shuffle; without it the input's row order is the generation order)",
    ),
) -> None:
    """Split a source's caption table into train and validation."""
    params = load_section("split")
    rows = read_parquet(input)
    check_table(rows, input, strings=("id", "split") if "split" in rows else ("id",), unique="id")
    positions = None
    if params.method == "shuffle" and order is None:
        positions = pd.Series(range(len(rows)), index=rows.index)
    elif params.method == "shuffle":
        listed = read_parquet(order)
        check_table(listed, order, strings=("id",), unique="id")
        if "position" not in listed:
            raise DataError(f"{order}: no 'position' column (not a prefilter output)")
        positions = rows["id"].map(dict(zip(listed["id"], listed["position"])))
    try:
        rows = rows.assign(split=assign_splits(rows, params.validation_fraction, params.seed, params.method, positions))
    except DataError as exc:
        raise DataError(f"{input}: {exc}") from None
    with atomic_path(output, is_dir=True) as tmp:
        for name in SPLITS:
            part = rows[rows["split"] == name].reset_index(drop=True)
            write_parquet(part, tmp / f"{name}.parquet")
    counts = rows["split"].value_counts()
    print(
        shown(f"split@{source}: train {counts.get('train', 0)}, validation {counts.get('validation', 0)} -> {output}")
    )
