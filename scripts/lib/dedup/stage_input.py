"""dedup@S's input, read as the steps need it: 10M rows are never one table in memory.

The `id` column is held (compact Arrow: the ids of removed rows and keep longest's tie-break need it);
the texts and the other columns are read from the parquet files again by each step that needs them
(a text pass costs ~0.4 s a million rows). The checks are those of reading the whole table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scripts.lib import s3_input
from scripts.lib.errors import DataError, shown
from scripts.lib.safe_paths import check_stays_in, matches
from scripts.lib.side_files import file_state
from scripts.lib.tables import (
    check_column_names,
    existing_input,
    plain_schema,
    plain_texts,
    reads_as_text,
    unreadable,
    utf8_checked,
)

READ_ROWS = 1 << 16  # rows per read of the steps that pass over every row (bounds their memory)


def shards(path: Path | str) -> list[Path | str]:
    """The parquet files of a stage input: the file itself, or a folder's *.parquet in name order, in any case
    (a shard PART-3.PARQUET was left out, its rows missing at exit 0); an s3:// location's objects the same way."""
    if s3_input.is_s3(path):
        return list(s3_input.shards(str(path)))
    path = Path(path)
    if path.is_dir():
        found = matches(path, "*.parquet")
        if not found:
            raise DataError(f"{path}: no parquet shards in this folder")
        # each in the folder after every link (a shard linked elsewhere was deduplicated as the input's own),
        # a link into DVC's cache aside (cache.type symlink checks a folder output's files out so)
        return [existing_input(check_stays_in(shard, path, dvc_cache=True)) for shard in found]
    return [existing_input(path)]  # a FIFO would block the open in C, deaf to Ctrl-C: refused


def input_state(path: Path | str) -> list[tuple]:
    """What tells the input's content now from another: its shards' names and each one's device, inode,
    size and modification time (an s3:// object's size and modification time)."""
    if s3_input.is_s3(path):
        return list(s3_input.shard_states(str(path)))
    return [(str(shard), *file_state(shard)) for shard in shards(path)]


def check_unchanged(path: Path | str, before: list[tuple]) -> None:
    """The input is as `before` (input_state when the run began): a shard rewritten, replaced, added or deleted
    while the stage read it made outputs of two inputs at once (dedup's decisions from the old rows, the kept
    rows or the preview from the new ones), which DVC would then lock against the new input's hash."""
    try:
        now = input_state(path)
    except (DataError, OSError):
        now = None
    if now != before:
        raise DataError(
            f"{shown(path)}: the input changed during the run (a shard written, added or removed); run again"
        )


def parquet_file(location: Path | str, **options) -> pq.ParquetFile:
    """One parquet file of an input, opened (its footer read): a local path or an s3:// object."""
    if s3_input.is_s3(location):
        return pq.ParquetFile(s3_input.open_input(str(location)), **options)
    return pq.ParquetFile(location, **options)


def open_parquet(path: Path | str) -> list[pq.ParquetFile]:
    """The parquet files of a stage input, opened (their footers read). Not pre-buffered: a reader that
    pre-buffers keeps every column chunk it read until it is closed (the whole file, after a full pass)."""
    files = shards(path)
    opened = [read(path, parquet_file, file, pre_buffer=False) for file in files]
    for file, parquet in zip(files, opened):
        check_same_columns(file, parquet.schema_arrow, opened[0].schema_arrow)
    return opened


def check_same_columns(shard: Path | str, schema: pa.Schema, first: pa.Schema) -> None:
    """A shard's columns are the first shard's, by name, order and type: one with another column, or a column
    of another type, was a traceback when the rows were joined or written (or its values were cast to the
    first shard's type without a word)."""
    for here, there in itertools.zip_longest(schema, first):
        if here is None or there is None or (here.name, here.type) != (there.name, there.type):
            found, expected = (f"'{f.name}' {f.type}" if f is not None else "no column" for f in (here, there))
            raise DataError(
                f"{shown(shard)}: its columns differ from the first shard's: {found} where that has {expected}"
            )


def batches_of(path: Path | str, files: list[pq.ParquetFile], columns: list[str] | None, rows: int) -> Iterator:
    """The record batches of `files` (the input at `path`) in order, `rows` at a time (none spans two files)."""
    first = 1  # the input's row number of the batch's first row (shards counted in order)
    for file in files:
        batches = file.iter_batches(batch_size=rows, columns=columns)
        while (batch := read(path, next, batches, None)) is not None:
            yield utf8_checked(plain_texts(batch), path, first)
            first += batch.num_rows


def read(path: Path | str, function, *args, **kwargs):
    """function(*args, **kwargs), a read of the input at `path`: any failure is its one-line DataError (an
    S3 server's error quoting the AWS credentials: redacted)."""
    try:
        return function(*args, **kwargs)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise DataError(s3_input.redact_credentials(str(unreadable(path, exc)))) from None


class StageInput:
    """A stage input (one parquet file, or a folder of shards) with columns `id` and `text` as texts (read plain),
    neither null, ids distinct; a Texts (scripts/lib/dedup/texts.py) over its `text` column."""

    def __init__(self, path: Path | str, read_rows: int = READ_ROWS):
        self.path, self.read_rows = path, read_rows
        self.files = open_parquet(path)
        self.schema = plain_schema(self.files[0].schema_arrow.remove_metadata())  # as the reads give the rows
        for file in self.files:
            check_column_names(path, file.schema_arrow.names)
        for column in ("id", "text"):
            if column not in self.schema.names:
                raise DataError(f"{path}: missing column '{column}'")
        self.ids = self._checked("id")
        self._checked("text", hold=False)
        if repeats(self.ids):
            raise DataError(f"{path}: column 'id' has repeated values")
        release_arrow_memory()  # the checks' reads and sort: ~30 B a row the signing step could not reuse

    def __len__(self) -> int:
        return sum(file.metadata.num_rows for file in self.files)

    # --- Texts ---

    def batches(self, rows: int) -> Iterator[pa.Array]:
        return (batch.column(0) for batch in self._batches(["text"], rows))

    def lengths(self) -> pa.Array:
        return self._concat([pc.utf8_length(texts) for texts in self.batches(self.read_rows)], pa.int64())

    def take(self, rows: np.ndarray) -> pa.Array:
        picked, start = [], 0
        for texts in self.batches(self.read_rows):
            lo, hi = np.searchsorted(rows, [start, start + len(texts)])
            picked.append(texts.take(pa.array(rows[lo:hi] - start)))
            start += len(texts)
        return self._concat(picked, self.schema.field("text").type)

    def whole(self) -> pa.Array:
        return self._column("text")

    # --- the rows ---

    def tables(self, keep: np.ndarray | None = None) -> Iterator[pa.Table]:
        """The rows (those where `keep`, if given) with all their columns, in order, a read at a time."""
        start = 0
        for batch in self._batches(None, self.read_rows):
            table = pa.Table.from_batches([batch]).replace_schema_metadata(None)
            if keep is not None:
                table = table.filter(pa.array(keep[start : start + batch.num_rows]))
            start += batch.num_rows
            yield table

    # --- reading ---

    def _checked(self, column: str, hold: bool = True) -> pa.Array | None:
        """Check that `column` holds non-null text; return it when `hold` (else it is never read whole)."""
        kind = self.files[0].schema_arrow.field(column).type
        if not reads_as_text(kind):
            raise DataError(f"{self.path}: column '{column}' must hold text, found {kind}")
        values = self._column(column) if hold else None
        row = first_null(values) if values is not None else self._first_null(column)
        if row is not None:
            raise DataError(f"{self.path}: row {row}: {column} is null")
        return values

    def _first_null(self, column: str) -> int | None:
        """The first null row of `column`, reading only the row groups whose statistics allow a null."""
        offset = 0
        for file in self.files:
            leaves = [file.metadata.schema.column(i).path for i in range(file.metadata.num_columns)]
            for group in range(file.num_row_groups):
                meta = file.metadata.row_group(group)
                stats = meta.column(leaves.index(column)).statistics
                if stats is None or not stats.has_null_count or stats.null_count:
                    values = read(self.path, file.read_row_group, group, columns=[column]).column(0)
                    row = first_null(values)
                    if row is not None:
                        return offset + row
                offset += meta.num_rows
        return None

    def _column(self, column: str) -> pa.Array:
        chunks, first = [], 1
        for file in self.files:
            table = utf8_checked(plain_texts(read(self.path, file.read, columns=[column])), self.path, first)
            chunks += table.column(0).chunks
            first += table.num_rows
        return chunks[0] if len(chunks) == 1 else self._concat(chunks, self.schema.field(column).type)

    def _batches(self, columns: list[str] | None, rows: int) -> Iterator[pa.RecordBatch]:
        return batches_of(self.path, self.files, columns, rows)

    @staticmethod
    def _concat(arrays: list[pa.Array], kind: pa.DataType) -> pa.Array:
        return pa.concat_arrays(arrays) if arrays else pa.array([], kind)


def release_arrow_memory() -> None:
    """Give the memory Arrow freed back to the system. Its allocator keeps freed pages for Arrow's next
    arrays (they stay in RSS), but the steps between the reads work on numpy arrays."""
    pa.default_memory_pool().release_unused()


def repeats(values: pa.Array) -> bool:
    """Whether a value occurs twice. Sorted, not hashed: count_distinct's table costs ~140 B a row."""
    ordered = values.take(pc.sort_indices(values))
    return len(values) > 1 and bool(pc.any(pc.equal(ordered[1:], ordered[:-1])).as_py())


def first_null(values: pa.Array) -> int | None:
    nulls = pc.is_null(values).to_numpy(zero_copy_only=False)
    return int(np.argmax(nulls)) if nulls.any() else None
