"""A source's native keys are unique: two records with one key would give two rows one id.

ingest keeps 8 bytes a written row (the ids, in row order) and finds repeats by sorting them once (numpy
argsort: ~24 B a row while it sorts, at 10^9 rows too, where a set of keys took ~100 B a row). Only when a
key repeats is the source read a second time, to name both records' file, row and key: the common run pays
nothing for the names, and the failure line (`on_error: fail`) is one line a user can act on, where it was a
64-bit id no one can map back, printed after a success summary.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.io import stable_id

if TYPE_CHECKING:
    import numpy as np

    from scripts.lib.readers import Problem, Record

KEY_SHOWN = 200  # a key from the data (a 100 KB image_name) cut short in the line


def later_repeats(ids: array) -> np.ndarray:
    """The written rows (0-based, ascending) whose id an earlier row already has: the first of each id is kept."""
    import numpy as np

    values = np.frombuffer(ids, dtype=np.uint64) if len(ids) else np.zeros(0, np.uint64)
    order = np.argsort(values, kind="stable")  # equal ids stay in row order: the first of a run is the earliest
    ordered = values[order]
    return np.sort(order[1:][ordered[1:] == ordered[:-1]])


def records(items: Iterable[Record | Problem]) -> Iterator[Record]:
    from scripts.lib.readers import Record

    return (item for item in items if isinstance(item, Record))


def repeat_line(read_again: Callable[[], Iterable[Record | Problem]], source: str, row_id: str, count: int) -> str:
    """The one line for a repeated key: the first two records whose id is `row_id`, found by reading the source
    again (`read_again`), named by file, row and key; `count` records repeat a key in all."""
    found: list[Record] = []
    for record in records(read_again()):
        if stable_id(source, record.key) == row_id:
            found.append(record)
            if len(found) == 2:
                break
    more = f" ({count:,} records repeat a key in all)" if count > 1 else ""
    if len(found) < 2:  # read differently the second time: the id alone is what is known
        return f"sources.{source}: {count:,} records repeat a native key (id {row_id}); the source changed, run again"
    first, repeat = found
    return (
        f"{place(repeat)}: native key {shown_short(repr(repeat.key), KEY_SHOWN)} repeats that of {place(first)}; "
        f"two records of one key would share an id (on_error: skip keeps the first){more}"
    )


def place(record: Record) -> str:
    where = f": {record.where}" if record.where else ""
    return f"{shown(str(record.file))}{where}"


def check_keys(ids: array, on_error: str, read_again: Callable[[], Iterable[Record | Problem]], source: str) -> Any:
    """The written rows to drop (`on_error: skip`: each later record of a repeated key), or the one-line DataError
    naming the first repeat (`fail`)."""
    later = later_repeats(ids)
    if len(later) and on_error == "fail":
        row_id = f"{int(ids[int(later[0])]):016x}"
        raise DataError(repeat_line(read_again, source, row_id, len(later)))
    return later


def drop_rows(path: Path, rows: Any, schema) -> int:
    """Rewrite the parquet file at `path` without `rows` (0-based, ascending), row group by row group (flat
    memory); returns the rows kept."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept_path = path.with_name(path.name + ".kept")  # a temp beside the caller's temp, gone whatever happens
    start = kept = 0
    try:
        with pq.ParquetFile(path) as table, pq.ParquetWriter(kept_path, schema, compression="zstd") as writer:
            for group in range(table.num_row_groups):
                rows_here = table.read_row_group(group)
                keep = np.ones(rows_here.num_rows, dtype=bool)
                keep[rows[(rows >= start) & (rows < start + rows_here.num_rows)] - start] = False
                writer.write_table(rows_here.filter(pa.array(keep)))
                kept += int(keep.sum())
                start += rows_here.num_rows
        kept_path.replace(path)
    finally:
        kept_path.unlink(missing_ok=True)
    return kept
