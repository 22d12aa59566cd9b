"""diff's bounded read of a release's rows.parquet: rows leave in id order from a temp spill, never whole.

A release of 10^8-10^9 rows was read whole: a pandas frame of id/source/split/text, pandas' duplicated()
over every id, a dict of every row's image digest and the train captions in Arrow memory for the leak
count. Here the file is read twice, a byte-bounded batch at a time (tables.byte_batches):

1. each batch is checked (the cells, the split); its ids are kept as Arrow strings to rank them
   (external_sort.key_ranks: 8 B a row), and its texts as 8-byte hashes (the leak candidates);
2. after the duplicate check (equal neighbours in id order, the same line as tables.check_table's), each
   batch's rows, with their image digest as a column, are spilled by rank (external_sort.Spill) into a
   temp folder, and the texts whose hash a validation row shares with a train row are kept to confirm.

SortedRows hands the rows back in id order a bucket at a time; its folder is removed by close(), and by
TemporaryDirectory's finalizer when an Interrupted unwinds past it or the process exits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib.errors import DataError, shown_short
from scripts.lib.external_sort import Spill, key_ranks
from scripts.lib.io import SPLITS
from scripts.lib.tables import byte_batches, check_cells, frame_of, utf8_checked

ROW = ("id", "source", "split", "text", "digest")  # diff_rows.Row with its image digest
CHUNK = 8_192  # rows turned into Python objects at a time
# rows of one spill file, read back whole: external_sort's 1M rows of 100 KB captions were 100 GB at once
BUCKET_ROWS = 1 << 16
HASH_BYTES = 1 << 20  # caption bytes turned into Python objects at a time to hash them
# The columns diff compares: text, and (but `text`: a row whose caption is missing compares as none) present.
# A list, an int or a null id there was a traceback where they were hashed, sorted or joined.
ROW_TEXT = ("id", "source", "split", "text")
ROW_PRESENT = ("id", "source", "split")
ROW_COLUMNS = [*ROW_TEXT, "image", "image_sha256"]  # read of rows.parquet (byte-bounded batches): no other column


def read_sorted(file, where: str, digests) -> tuple[SortedRows, set, int]:
    """(the rows in id order, their sources, the leak count) of pyarrow ParquetFile `file` read from `where`;
    `digests(batch)` are its rows' image digests (None: no image). Every failure is one line naming the row."""
    ids, sources, leak = [], set(), LeakCount()
    for batch, first in _batches(file, where):
        _check_batch(_checked_frame(batch), where, first)
        ids.append(ids_of(batch))
        sources.update(pc.unique(batch.column("source")).to_pylist())
        leak.add_hashes(batch)
    if not ids:  # no rows: the columns are still checked
        _check_batch(frame_of(file.schema_arrow.empty_table()), where, 0)
    every_id = pa.chunked_array(ids, type=pa.string())
    ranks = key_ranks(every_id)
    if (line := duplicate_line(every_id, ranks, where)) is not None:
        raise DataError(line)
    del ids, every_id
    rows = SortedRows(ranks)
    try:
        for batch, _first in _batches(file, where):
            rows.add(rows_table(batch, digests(batch)), _first)
            leak.add_texts(batch)
    except BaseException:
        rows.close()
        raise
    return rows, sources, leak.count()


def _batches(file, where: str) -> Iterator:
    """(batch, its first row's 0-based number) of the file's ROW_COLUMNS, byte-bounded, UTF-8 checked."""
    wanted = [c for c in ROW_COLUMNS if c in file.schema_arrow.names]
    first = 0
    for batch in byte_batches(file, where, wanted):
        yield utf8_checked(batch, where, first + 1), first
        first += batch.num_rows


def _checked_frame(batch) -> pd.DataFrame:
    """The batch as a DataFrame, but for a `text` column Arrow reads as strings: every cell of it is text or
    missing (nothing to check), and the captions, a batch's bulk, never become Python objects."""
    text = batch.schema.field("text").type if "text" in batch.schema.names else None
    if text is not None and (pa.types.is_string(text) or pa.types.is_large_string(text) or pa.types.is_null(text)):
        return frame_of(batch.drop_columns(["text"])).assign(text=None)
    return frame_of(batch)


def _check_batch(frame: pd.DataFrame, where: str, first: int) -> None:
    """tables.check_table's cell checks of rows first.. (its repeats: duplicate_line), then the split's."""
    check_cells(frame, where, text=ROW_TEXT + ("image",), present=(*ROW_PRESENT, "id"), first_row=first)
    foreign = ~frame["split"].isin(SPLITS).to_numpy()
    if foreign.any():  # compare() counts train and validation only: such a row was left out at exit 0
        row = int(foreign.argmax())
        raise DataError(
            f"{where}: row {first + row + 1}: split {shown_short(frame['split'].iloc[row])!r} is not one of "
            f"{', '.join(SPLITS)}"
        )
    if "image_sha256" in frame.columns:
        check_cells(frame, where, text=("image_sha256",), first_row=first)


class SortedRows:
    """A release's rows spilled by id rank, read back in id order (as often as asked) a chunk at a time."""

    columns = ROW[:4]

    def __init__(self, ranks: np.ndarray):
        self._folder = tempfile.TemporaryDirectory(prefix="t2i-diff-")
        self._spill = KeptSpill(Path(self._folder.name), ranks, BUCKET_ROWS)

    def add(self, table: pa.Table, offset: int) -> None:
        self._spill.add(table, offset)

    def rows(self) -> Iterator[tuple]:
        for table in self._spill.tables():
            for start in range(0, table.num_rows, CHUNK):
                chunk = table.slice(start, CHUNK)
                yield from zip(*(chunk.column(c).to_pylist() for c in ROW))

    def close(self) -> None:
        self._spill.close()
        self._folder.cleanup()


class KeptSpill(Spill):
    """external_sort's spill whose bucket files stay to be read again (a release compared with two)."""

    def tables(self) -> Iterator[pa.Table]:
        return (rows for _bucket, rows in self.sorted_buckets())


def rows_table(batch, digests: list) -> pa.Table:
    """The spilled columns of one batch: id, source, split, text as strings, and its rows' image digests."""
    columns = {c: batch.column(c).cast(pa.string()) for c in ROW[:4]}
    return pa.table({**columns, "digest": pa.array(digests, type=pa.string())})


def ids_of(batch) -> pa.Array:
    return batch.column("id").cast(pa.string())


def duplicate_line(ids: pa.ChunkedArray, ranks: np.ndarray, where: str) -> str | None:
    """check_table's line for the first repeated id in file order (the lowest row that repeats an earlier
    one), from ids in rank order compared with their neighbour a chunk at a time; None when all differ."""
    order = np.empty(len(ranks), dtype=np.int64)
    order[ranks] = np.arange(len(ranks), dtype=np.int64)
    best, repeats, run = None, 0, False  # run: the last pair looked at was equal (a run goes on)
    for start in range(0, max(len(order) - 1, 0), CHUNK):
        rows = order[start : start + CHUNK + 1]
        values = ids.take(pa.array(rows))
        equal = pc.equal(values.slice(1), values.slice(0, len(rows) - 1)).to_numpy(zero_copy_only=False)
        repeats += int(equal.sum())
        starts = equal & ~np.concatenate(([run], equal[:-1]))  # a run's first pair: its first two rows
        for at in np.flatnonzero(starts):  # ties keep file order: the run's second row is its first repeat
            if best is None or rows[at + 1] < best[0]:
                best = (int(rows[at + 1]), int(rows[at]))
        run = bool(equal[-1]) if len(equal) else run
    if best is None:
        return None
    value = ids.take(pa.array([best[0]]))[0].as_py()
    return (
        f"{where}: duplicate id {shown_short(value)!r} at row {best[0] + 1} (first at row "
        f"{best[1] + 1}; {repeats} repeated rows)"
    )


def _hashes(texts: pa.Array) -> np.ndarray:
    """uint64 hashes of texts (a missing one hashes as "": the caller keeps nulls apart), about HASH_BYTES of
    them at a time as Python objects: a batch's captions never all at once."""
    texts = pc.fill_null(texts.cast(pa.string()), "")
    step = max(1, HASH_BYTES * len(texts) // max(texts.nbytes, 1))
    parts = [np.empty(0, np.uint64)]
    for start in range(0, len(texts), step):
        values = texts.slice(start, step).to_numpy(zero_copy_only=False).astype(object)
        parts.append(pd.util.hash_array(values, categorize=False))
    return np.concatenate(parts)


class LeakCount:
    """Validation rows whose text is some train row's (a missing text matches a missing one, as
    diff_rows.leaks): 8-byte hashes of every text, then the texts of hashes both splits share compared."""

    def __init__(self) -> None:
        self._hashes: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
        self._nulls = {"train": 0, "validation": 0}
        self._shared: np.ndarray | None = None
        self._texts: dict[str, list[pa.Array]] = {"train": [], "validation": []}

    def add_hashes(self, batch) -> None:
        """Pass 1: the batch's texts as hashes, per split."""
        for split, texts in _by_split(batch):
            self._nulls[split] += texts.null_count
            self._hashes[split].append(_hashes(texts.drop_null()))

    def add_texts(self, batch) -> None:
        """Pass 2: the texts whose hash both splits have (train's without repeats)."""
        shared = self._shared_hashes()
        for split, texts in _by_split(batch):
            texts = texts.drop_null().cast(pa.string())
            kept = texts.filter(pa.array(np.isin(_hashes(texts), shared)))
            self._texts[split].append(pc.unique(kept) if split == "train" else kept)

    def count(self) -> int:
        train = pc.unique(pa.chunked_array(self._texts["train"], type=pa.string()))
        validation = pa.chunked_array(self._texts["validation"], type=pa.string())
        found = int(pc.sum(pc.is_in(validation, value_set=train)).as_py() or 0) if len(validation) else 0
        return found + (self._nulls["validation"] if self._nulls["train"] else 0)

    def _shared_hashes(self) -> np.ndarray:
        if self._shared is None:
            train = np.unique(np.concatenate([np.empty(0, np.uint64), *self._hashes["train"]]))
            validation = np.concatenate([np.empty(0, np.uint64), *self._hashes["validation"]])
            self._shared = np.unique(validation[np.isin(validation, train)])
            self._hashes = {"train": [], "validation": []}  # freed: the shared ones are all pass 2 needs
        return self._shared


def _by_split(batch) -> Iterator[tuple[str, pa.Array]]:
    split = batch.column("split")
    for name in ("train", "validation"):
        yield name, pa.array(batch.column("text")).filter(pc.equal(split, name))
