"""split@S: assign every caption row to train or validation.

A source's predefined split (e.g. Gustavosta train/eval) is kept. Other rows are drawn by
`split.method`:
  hash     validation when a seeded hash of the id falls under `split.validation_fraction`: a row's
           split depends only on its own id, so adding rows never moves existing rows between splits;
  shuffle  the team's split_dataset.py exactly: the rows in generation order (the `position` column of
           data/prefilter/S.parquet), random.seed(seed); random.shuffle(rows); train = the first
           int(n * (1 - validation_fraction)), validation the rest.

In:  data/captions/S.parquet, data/prefilter/S.parquet (order)   Out: data/splits/S/{train,validation}.parquet
Streams: `runtime.stream_rows` rows at a time; shuffle first draws every row from the id, split and
position columns alone (arrays, 8-byte row numbers shuffled).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from array import array
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from scripts.lib.errors import DataError
from scripts.lib.io import SPLITS, atomic_path, check_replaceable, shown
from scripts.lib.params import load_section
from scripts.lib.positions import checked_positions
from scripts.lib.tables import (
    ParquetChunks,
    arrow_table,
    check_table,
    check_unique,
    parquet_source,
    row_groups_to,
    stage_input,
)


def hash_unit(seed: int, row_id: str) -> float:
    """A uniform number in [0, 1) from (seed, id), identical on every machine."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shuffled_validation(count: int, validation_fraction: float, seed: int) -> np.ndarray:
    """bool[count] over the rows in generation order, True for validation: the team's shuffle-and-slice,
    `random.seed(seed); random.shuffle(captions)`, train = the first int(n * (1 - validation_fraction))
    (their `captions[: int(len(captions) * 0.95)]`). The shuffle moves 8-byte row numbers: the
    permutation depends on the length alone, not on what is shuffled."""
    order = array("q", range(count))
    random.Random(seed).shuffle(order)  # random.seed(s); random.shuffle(x) is this same generator
    validation = np.zeros(count, dtype=bool)
    validation[np.frombuffer(order, dtype=np.int64)[int(count * (1 - validation_fraction)) :]] = True
    return validation


def shuffle_split(ids_in_order: list[str], validation_fraction: float, seed: int) -> dict[str, str]:
    """{id: split} of shuffled_validation for ids in generation order."""
    validation = shuffled_validation(len(ids_in_order), validation_fraction, seed)
    return {row_id: ("validation" if v else "train") for row_id, v in zip(ids_in_order, validation.tolist())}


def shuffle_draw(
    ids, open_rows: np.ndarray, positions: np.ndarray, validation_fraction: float, seed: int
) -> np.ndarray:
    """bool[n], True for validation, over rows in any order: the rows without a predefined split
    (`open_rows`) shuffled in generation order (position, then id). Arrays in, array out."""
    index = np.flatnonzero(open_rows)
    keys = pa.table({"position": pa.array(positions[index]), "id": pa.array(ids).take(pa.array(index))})
    in_order = index[pc.sort_indices(keys, sort_keys=[("position", "ascending"), ("id", "ascending")]).to_numpy()]
    validation = np.zeros(len(open_rows), dtype=bool)
    validation[in_order] = shuffled_validation(len(index), validation_fraction, seed)
    return validation


def hash_draw(ids, validation_fraction: float, seed: int) -> np.ndarray:
    """bool[n], True for validation: a row's draw depends on its own id alone."""
    return np.array([hash_unit(seed, i) < validation_fraction for i in ids], dtype=bool)


def assign_splits(
    rows: pd.DataFrame, validation_fraction: float, seed: int, method: str = "hash", positions: pd.Series | None = None
) -> pd.Series:
    """Predefined split where present, else the draw of `method`. shuffle needs `positions` (the row's
    place in the generation list, aligned with rows); only rows without a predefined split are shuffled."""
    if method == "shuffle":
        if positions is None or positions.isna().any():
            missing = rows["id"].iloc[0] if positions is None else rows.loc[positions.isna(), "id"].iloc[0]
            raise DataError(f"row {missing}: no position in the generation list (split.method shuffle needs it)")
        open_rows = rows["split"].isna().to_numpy() if "split" in rows else np.ones(len(rows), dtype=bool)
        validation = shuffle_draw(rows["id"].tolist(), open_rows, positions.to_numpy(), validation_fraction, seed)
    else:
        validation = hash_draw(rows["id"], validation_fraction, seed)
    return with_predefined(rows, validation)


def with_predefined(rows: pd.DataFrame, validation: np.ndarray) -> pd.Series:
    """The rows' split: predefined where present, else the draw; an unknown predefined split is one line."""
    drawn = pd.Series(np.where(validation, "validation", "train").tolist(), index=rows.index)
    predefined = rows["split"] if "split" in rows else pd.Series(None, index=rows.index)
    chosen = predefined.where(predefined.notna(), drawn)
    unknown = ~chosen.isin(SPLITS)
    if unknown.any():
        bad = chosen[unknown].iloc[0]
        raise DataError(f"row {rows.loc[unknown, 'id'].iloc[0]}: unknown split {bad!r} (expected train or validation)")
    return chosen


def generation_positions(ids: pa.ChunkedArray, order: Path | None, input: Path) -> np.ndarray:
    """int64[n]: each row's place in the generation list, from `order` (data/prefilter/S.parquet: id,
    position, checked by positions.checked_positions); without it the input's own row order. A row of
    `input` that `order` does not list is one line naming `input`; a bad `order` names `order`."""
    if order is None:
        return np.arange(len(ids), dtype=np.int64)
    listed = check_unique(order)
    places = checked_positions(order)  # whole, unique, non-negative: shuffle's order rests on them
    found = pc.index_in(ids, value_set=listed.combine_chunks())
    if found.null_count:
        missing = ids.filter(pc.is_null(found))[0].as_py()
        raise DataError(f"{input}: row {missing}: no position in the generation list (split.method shuffle needs it)")
    return places[found.to_numpy()]


def predefined_open(input: Path, columns: list[str], rows: int) -> np.ndarray:
    """bool[n]: True for the rows without a predefined split."""
    if "split" not in columns:
        return np.ones(rows, dtype=bool)
    with parquet_source(input) as source:  # the file the other reads read (stage_input), never the name again
        column = pq.read_table(source, columns=["split"]).column("split")
    return pc.is_null(column).to_numpy(zero_copy_only=False)


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
    check_replaceable(
        output, writes=[f"{name}.parquet" for name in SPLITS]
    )  # before the input is read; again at the end
    # each file is read more than once (its ids, its rows): every read is of the file the first one opened
    input, order = stage_input(input), (None if order is None else stage_input(order))
    rows = ParquetChunks(input, load_section("runtime", missing_ok=True).stream_rows)
    ids = check_unique(input)
    validation = None  # method hash draws chunk by chunk; shuffle needs every row's place first
    if params.method == "shuffle":
        positions = generation_positions(ids, order, input)
        with reported(input):
            open_rows = predefined_open(input, rows.columns, len(ids))
            validation = shuffle_draw(ids, open_rows, positions, params.validation_fraction, params.seed)
    counts = dict.fromkeys(SPLITS, 0)
    offset = 0
    with atomic_path(output, is_dir=True) as tmp, contextlib.ExitStack() as stack:
        parts = {name: stack.enter_context(row_groups_to(tmp / f"{name}.parquet")) for name in SPLITS}
        for chunk in rows.frames(f"split@{source}"):  # a chunk at a time: memory stays flat however many rows
            check_table(chunk, input, strings=("id", "split") if "split" in chunk else ("id",))
            drawn = (
                hash_draw(chunk["id"], params.validation_fraction, params.seed)
                if validation is None
                else validation[offset : offset + len(chunk)]
            )
            with reported(input):
                chosen = with_predefined(chunk, drawn)
            chunk = chunk.assign(split=chosen)
            for name in SPLITS:
                part = chunk[chunk["split"] == name].reset_index(drop=True)
                parts[name].add(arrow_table(part))
                counts[name] += len(part)
            offset += len(chunk)
    print(shown(f"split@{source}: train {counts['train']}, validation {counts['validation']} -> {output}"))


@contextlib.contextmanager
def reported(input: Path):
    """A row's error names the file it came from."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{input}: {exc}") from None
