"""A parquet output in the order of a key, written in bounded memory: an external sort.

Each input row gets its rank in key order first, from the key column alone (pyarrow sorts it: a few
bytes a row, no Python objects). Rows then arrive in any order, a chunk at a time, each with its rank;
they are spilled to one Arrow file per run of PARQUET_ROW_GROUP ranks (a bucket), and the buckets are
read back in order, one at a time, sorted by rank and written. Memory: the ranks (8 B a row) and one
bucket. Rows may be dropped between ranking and adding (a bucket then holds fewer).

    ranks = key_ranks(pq.read_table(path, columns=["id"]).column("id"))
    with sorted_rows_to(output, ranks) as out:
        for table, offset in chunks:
            out.add(table, offset)   # the chunk's rows were rows offset.. of the ranked input

The spill folder (.T.tmp-spill beside the output) lives under the output's lock and goes with the run
(a killed run's is removed by the next one, as io.py's temp files are). The bytes equal a sort of the
whole table: the rows leave in one order and tables.py's RowGroups lays row groups out however they come.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib.errors import DataError
from scripts.lib.interrupts import held
from scripts.lib.io import shown
from scripts.lib.safe_paths import open_within
from scripts.lib.tables import PARQUET_ROW_GROUP, row_groups_to
from scripts.lib.temps import TMP_SPILL, _remove, _sibling, mark_temp, remove_stale

RANK = "__rank"
BUCKET_ROWS = PARQUET_ROW_GROUP  # rows a bucket file holds at most: what the sort holds in memory


def key_ranks(keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """int64[n]: each row's place when the rows are sorted by `keys` (ties keep input order, as a stable
    sort does). Strings order by UTF-8 bytes, which is Python's (and pandas') code point order."""
    order = pc.sort_indices(pa.table({"k": keys}), sort_keys=[("k", "ascending")]).to_numpy()
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    return ranks


class Spill:
    """Rows with their ranks, set aside in one Arrow IPC file per bucket of `bucket_rows` ranks."""

    def __init__(self, folder: Path, ranks: np.ndarray, bucket_rows: int):
        self.folder, self.ranks, self.bucket_rows = folder, ranks, bucket_rows
        self.writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self.sinks: dict[int, pa.NativeFile] = {}
        self.schema: pa.Schema | None = None  # the first table's: every bucket file shares it
        self.buckets: set[int] = set()

    def add(self, table: pa.Table, offset: int) -> None:
        """Rows offset..offset+len of the ranked input (pass `rows` to say which, when some were dropped)."""
        self.add_rows(table, np.arange(offset, offset + table.num_rows))

    def add_rows(self, table: pa.Table, rows: np.ndarray) -> None:
        self.schema = self.schema or table.schema
        ranks = self.ranks[rows]
        table = table.cast(self.schema).append_column(RANK, pa.array(ranks))
        buckets = ranks // self.bucket_rows
        for bucket in np.unique(buckets):
            self._writer(int(bucket), table.schema).write_table(table.filter(pa.array(buckets == bucket)))

    def tables(self) -> Iterator[pa.Table]:
        """The spilled rows in rank order, a bucket at a time, without their rank column."""
        for bucket, rows in self.sorted_buckets():
            yield rows
            del rows  # the next bucket is read with no reference to this one held here
            os.unlink(self._path(bucket))  # free the disk as we go

    def sorted_buckets(self) -> Iterator[tuple[int, pa.Table]]:
        """(bucket, its rows in rank order without the rank column), bucket by bucket; the files stay."""
        self.close()
        for bucket in sorted(self.buckets):
            with self._opened(bucket) as source:
                rows = pa.ipc.open_file(source).read_all()
            rows = rows.take(pc.sort_indices(rows.column(RANK))).drop_columns([RANK])  # the unsorted copy freed
            yield bucket, rows
            del rows  # nor here: one bucket in memory at a time, as before

    def close(self) -> None:
        """Close the bucket files (again: a no-op)."""
        for writer in self.writers.values():
            writer.close()
        for sink in self.sinks.values():
            sink.close()
        self.writers.clear()
        self.sinks.clear()

    def _writer(self, bucket: int, schema: pa.Schema) -> pa.ipc.RecordBatchFileWriter:
        if bucket not in self.writers:
            self.buckets.add(bucket)
            self.sinks[bucket] = pa.OSFile(str(self._path(bucket)), "wb")
            options = pa.ipc.IpcWriteOptions(compression="lz4")  # spills are read once: fast beats small
            self.writers[bucket] = pa.ipc.new_file(self.sinks[bucket], schema, options=options)
        return self.writers[bucket]

    def _opened(self, bucket: int) -> BinaryIO:
        """The bucket file opened ONCE, checked there (safe_paths.open_within: in the spill folder, a regular
        file, not a link, with one name): read by name, a link or hard link to another file put there while the
        run went on was read as our rows, and a FIFO blocked the run."""
        try:
            return open_within(self._path(bucket), self.folder, one_name=True, follow=False)
        except FileNotFoundError:
            raise DataError(f"{shown(self._path(bucket))}: removed while the sort ran") from None

    def _path(self, bucket: int) -> Path:
        return self.folder / f"{bucket:08d}.arrow"


@contextlib.contextmanager
def sorted_rows_to(path: Path | str, ranks: np.ndarray, schema=None):
    """A parquet file of the rows added, in rank order, written atomically (tables.row_groups_to)."""
    with row_groups_to(path, schema) as out:
        folder = _sibling(Path(path), TMP_SPILL)  # under the lock row_groups_to holds
        remove_stale(folder, Path(path))
        spill = None
        try:
            with held():  # a signal between mkdir and the tag left a folder every later run refused as not ours
                folder.mkdir()
                mark_temp(folder)
            spill = Spill(folder, ranks, BUCKET_ROWS)
            yield spill
            for table in spill.tables():
                out.add(table)
            out.schema = out.schema or spill.schema  # no rows: an empty file with the columns given
        finally:  # the spill goes with the run, even when closing it fails (a full disk)
            if spill is not None:
                with contextlib.suppress(Exception):
                    spill.close()
            _remove(folder)
