"""split@S: assign every caption row to train or validation.

A source's predefined split (e.g. Gustavosta train/eval) is kept. Other rows go to validation when
a seeded hash of their id falls under `split.validation_fraction`: a row's split depends only on its
own id, so adding rows to a source never moves existing rows between splits.

In:  data/captions/S.parquet      Out: data/splits/S/{train,validation}.parquet
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import typer

from scripts.lib.errors import DataError
from scripts.lib.params import load_section
from scripts.lib.io import SPLITS, atomic_path, check_table, read_parquet, write_parquet



def hash_unit(seed: int, row_id: str) -> float:
    """A uniform number in [0, 1) from (seed, id), identical on every machine."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: pd.DataFrame, validation_fraction: float, seed: int) -> pd.Series:
    """Predefined split where present, else the seeded hash draw."""
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
) -> None:
    """Split a source's caption table into train and validation."""
    params = load_section("split")
    rows = read_parquet(input)
    check_table(rows, input, strings=("id", "split") if "split" in rows else ("id",), unique="id")
    try:
        rows = rows.assign(split=assign_splits(rows, params.validation_fraction, params.seed))
    except DataError as exc:
        raise DataError(f"{input}: {exc}") from None
    with atomic_path(output, is_dir=True) as tmp:
        for name in SPLITS:
            part = rows[rows["split"] == name].reset_index(drop=True)
            write_parquet(part, tmp / f"{name}.parquet")
    counts = rows["split"].value_counts()
    print(f"split@{source}: train {counts.get('train', 0)}, validation {counts.get('validation', 0)} -> {output}")
