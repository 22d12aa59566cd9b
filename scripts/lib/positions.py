"""A prefilter output's `position` column (each row's place in the generation list), checked where split and
compose read it: row ranges and the shuffle's order rest on every position being whole, present, non-negative
and unlike every other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.lib.errors import DataError, shown
from scripts.lib.tables import existing_input, parquet_source, schema_names, unreadable

# A place in a generation list past 2**53 is no real list's; floats stop holding whole numbers exactly there
MAX_POSITION = 2**53


def checked_positions(path: Path | str):
    """int64[n]: the `position` column of `path` (prefilter@S's generation list: each row's place in it),
    in file order. Positions order rows and cut row ranges, so each must be a whole number (an integer
    column, or floats with whole values), present, non-negative and unlike every other; the first row
    that is not is one line naming the file and the row (1-based)."""
    import numpy as np
    import pyarrow.parquet as pq

    path = existing_input(path)
    with parquet_source(path) as source:  # opened once: a positions file found by table_in is read as checked
        if "position" not in schema_names(source, path):
            raise DataError(f"{path}: no 'position' column (not a prefilter output)")
        try:
            column = pq.read_table(source, columns=["position"]).column("position")
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None
    bad = first_bad_position(column)
    if bad is not None:
        row, problem = bad
        raise DataError(f"{shown(path)}: row {row + 1}: {problem}")
    return column.to_numpy().astype(np.int64)


def first_bad_position(column) -> tuple[int, str] | None:
    """(row index, what is wrong) of the first row whose position is unusable, or None when all are fine."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(column):
        return None
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        value = column[0].as_py()  # the column's type is wrong, so every row is: name the first
        if value is None:
            return 0, "position is missing (null or NaN)"
        return 0, f"position {value!r} is not a whole number ({column.type})"
    missing = pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)
    values = column.to_numpy(zero_copy_only=False)  # float64 with NaN where a value is missing
    found = [(int(mask.argmax()), problem) for mask, problem in position_problems(values, missing) if mask.any()]
    return min(found, default=None)


def position_problems(values, missing) -> list[tuple[Any, str]]:
    """(rows, what is wrong) for each kind of bad position: missing, negative, not whole, too large,
    repeated. `rows` is a bool mask; only its first True row is reported."""
    import numpy as np
    import pandas as pd

    present = ~missing
    with np.errstate(invalid="ignore"):  # NaN compares as False: it is already `missing`
        negative = present & (values < 0)
        fractional = present & ~negative & (np.floor(values) != values)
        too_large = present & ~fractional & (values > MAX_POSITION)
    usable = present & ~negative & ~fractional & ~too_large
    repeated = usable & pd.Series(np.where(usable, values, -1)).duplicated().to_numpy()

    def value(mask) -> str:
        return f"{values[mask.argmax()].item()!r}" if mask.any() else ""

    def first_of_repeat() -> int:
        return int((usable & (values == values[repeated.argmax()])).argmax()) + 1 if repeated.any() else 0

    return [
        (missing, "position is missing (null or NaN)"),
        (negative, f"position {value(negative)} is negative"),
        (fractional, f"position {value(fractional)} is not a whole number"),
        (too_large, f"position {value(too_large)} is past 2**53"),
        (repeated, f"position {value(repeated)} repeats row {first_of_repeat()}'s"),
    ]
