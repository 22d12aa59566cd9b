"""publish's rows and shards, in bounded memory: a release of 10^9 rows publishes holding one batch of rows
and one shard, never the split.

    with release_rows(release_dir) as rows:        # rows.parquet opened ONCE, for every pass below
        counts = count_rows(rows)                   # pass 1: every row's checks, before anything is written
        write_shards(rows.records("train"), ...)    # pass 2: the rows again, each shard written as they stream

A row is a dict of TABLE_COLUMNS with `_ref` (where its image is: a file, a tar member, a parquet part's
row), `_name` (the file name the Hub shows), `_sha256` (as recorded, or None), `_root` (the folder the opened
image must stay in) and `_one_name` (a hard link refused where no sha256 tells it). rows.parquet is read
byte_batches at a time (tables.py); a release built before it existed is read from metadata.jsonl (small,
and held whole). A shard's rows are held as Arrow chunks, never as dicts: a shard of 1M tiny images held a
dict a row (about 1 KB each) where its table holds 100 B."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pandas as pd

from scripts.lib.errors import DataError
from scripts.lib.export import TABLE_COLUMNS as COLUMNS
from scripts.lib.io import SPLITS, present_file, shown
from scripts.lib.safe_paths import check_image_name, confined_file
from scripts.tools.side_inputs import release_file

ROW_GROUP_ROWS = 100  # datasets' row group size for image datasets: the viewer reads a group at a time
ROW_COLUMNS = [*COLUMNS, "split", "image", "image_nbytes", "image_sha256"]
CHUNK_ROWS = 1000  # rows turned from dicts into an Arrow chunk at once (the chunks' split changes no byte)
CHUNK_BYTES = 16 << 20  # or fewer, once their images hold this much
T = TypeVar("T")


class ReleaseRows:
    """The rows of a release, split by split, as often as asked: from rows.parquet (`file`, a pyarrow
    ParquetFile over the one open of it) or, where there is none, each split's metadata.jsonl."""

    def __init__(self, release_dir: Path, file=None):
        self.release_dir, self.file = release_dir, file

    def records(self, split: str) -> Iterator[dict]:
        if self.file is None:
            yield from metadata_records(self.release_dir, split)
            return
        from scripts.lib.tables import byte_batches, frame_of, utf8_checked

        path = self.release_dir / "rows.parquet"
        wanted = [c for c in ROW_COLUMNS if c in self.file.schema_arrow.names]
        first = 1
        for batch in byte_batches(self.file, path, wanted):
            frame = frame_of(utf8_checked(batch, path, first))
            first += batch.num_rows
            for row in frame[frame["split"] == split].to_dict("records"):
                yield parquet_record(self.release_dir, row)


@contextlib.contextmanager
def release_rows(release_dir: Path) -> Iterator[ReleaseRows]:
    """ReleaseRows over rows.parquet opened once (every pass reads the same bytes), or metadata.jsonl."""
    from scripts.lib.tables import release_rows_file

    release_file(release_dir, "rows.parquet", str(release_dir))
    path = release_dir / "rows.parquet"
    if not present_file(path):  # a FIFO or folder there is one line, never "absent": metadata.jsonl read instead
        yield ReleaseRows(release_dir)
        return
    with release_rows_file(path) as file:
        yield ReleaseRows(release_dir, file)


def read_split(release_dir: Path, split: str) -> list[dict]:
    """Every row of one split, checked, as a list: for a small release (publish itself streams them)."""
    with release_rows(release_dir) as rows:
        return list(rows.records(split))


def count_rows(rows: ReleaseRows) -> dict[str, int]:
    """Rows a split, every row checked (the first pass: a bad row is found before any shard is written)."""
    return {split: sum(1 for _ in rows.records(split)) for split in SPLITS}


def parquet_record(release_dir: Path, row: dict) -> dict:
    """A row of rows.parquet as publish's record, its image reference checked: in the release (after
    links), a regular file, a name the Hub takes."""
    ref = row.get("image")
    if not isinstance(ref, str):
        raise DataError(f"{release_dir}/rows.parquet: id {row['id']}: its image is not in the release")
    if not isinstance(row.get("id"), str):
        raise DataError(f"{release_dir}/rows.parquet: an id is not text")
    where = f"{release_dir}/rows.parquet: id {row['id']}"
    archive, sep, _member = ref.partition("!/")
    confined_file(release_dir, archive, where)  # a path from the table: it must stay in the release
    if not (sep and archive.endswith(".parquet")):  # a parquet part's row is named by its id
        check_image_name(ref.rpartition("/")[2], where)
    return {
        **{c: row.get(c) for c in COLUMNS},
        "_ref": str(release_dir / ref),
        "_name": ref.rpartition("/")[2],
        "_size": recorded_size(release_dir, ref, row.get("image_nbytes")),
        "_sha256": row.get("image_sha256") if isinstance(row.get("image_sha256"), str) else None,
        "_root": str(release_dir),  # the folder the opened file must stay in (image_read)
        "_one_name": False,  # a hard link (DVC's hardlink checkout) is told by the sha256 recorded
    }


def recorded_size(release_dir: Path, ref: str, size) -> int:
    """The image's bytes as rows.parquet records them (else its file's size; 0 for a member): a hint."""
    if size is None or pd.isna(size):
        path = release_dir / ref
        return path.stat().st_size if "!/" not in ref and path.is_file() else 0
    return int(size)


def metadata_records(release_dir: Path, split: str) -> list[dict]:
    """A split of a release built before rows.parquet, from its metadata.jsonl."""
    from scripts.lib.export import read_metadata

    folder = release_dir / split
    if not (folder / "metadata.jsonl").is_file():
        raise DataError(
            f"{release_dir}/rows.parquet: not found, nor {folder}/metadata.jsonl "
            f"(build the release first: `dvc repro release@{release_dir.name}`)"
        )
    release_file(folder, "metadata.jsonl", str(folder))
    records = read_metadata(folder, ("file_name", "id", "source", "text"))
    for record in records:  # no sha256 recorded here: the one-link rule keeps another file's bytes out
        path = release_file(folder, record["file_name"], f"{folder}/metadata.jsonl: id {record['id']}")
        if path is None:
            raise DataError(
                f"{folder}/metadata.jsonl: id {record['id']}: file {shown(repr(record['file_name']))} not found"
            )
        check_image_name(record["file_name"], f"{folder}/metadata.jsonl: id {record['id']}")
        record["_ref"], record["_name"], record["_size"] = str(path), path.name, path.stat().st_size
        record["_root"], record["_one_name"] = str(folder), True  # no sha256 here: the one-link rule, where it is read
    return records


def rows_with_images(records: Iterable[dict]) -> Iterator[tuple[tuple[dict, bytes], int]]:
    """Each row with its image's bytes, as read (never the size rows.parquet records: a wrong one would
    put every image in one shard), and the bytes it adds to a shard."""
    for record in records:
        data = recorded_bytes(record, image_read(record))
        yield (record, data), len(data) + len(record["text"].encode())


def image_read(record: dict) -> bytes:
    """The bytes of a row's image from ONE open, checked there (safe_paths.open_within: in its folder, a regular
    file, with one name where the record asks it): the record's checks were by name, and a link out or a file
    swapped in after them was read and uploaded. A member of an archive is read from its archive's one open,
    confined to the release (`_root`): given the whole ref against the working folder, a shard swapped for a
    `..` ref or link out of the release after the checks was read."""
    from scripts.lib.archive import DEFAULT_MAX_MEMBER_BYTES
    from scripts.lib.dvc_cache import is_cache_copy
    from scripts.lib.export import release_image_bytes
    from scripts.lib.safe_paths import open_within, read_capped

    ref = record["_ref"]
    if "!/" in ref:
        return release_image_bytes(Path(record["_root"]), os.path.relpath(ref, record["_root"]))
    try:
        with open_within(ref, record["_root"], one_name=record["_one_name"], links_ok=is_cache_copy) as file:
            return read_capped(file, DEFAULT_MAX_MEMBER_BYTES, ref)
    except FileNotFoundError:
        raise DataError(f"{shown(ref)}: image not found (removed while the release was read)") from None


def recorded_bytes(record: dict, data: bytes) -> bytes:
    """`data`, the image of `record`, if it is what rows.parquet recorded (its sha256): a file put under
    its name since the release was built (a hard link to a key or any file elsewhere keeps the name, and
    passes every path check) is refused instead of uploaded."""
    if record.get("_sha256") and hashlib.sha256(data).hexdigest() != record["_sha256"]:
        raise DataError(
            f"{shown(record['_ref'])}: not the image rows.parquet records (its sha256 differs): the file was "
            "replaced after the release was built (a hard link or copy of another file?); rebuild the release"
        )
    return data


def shard_groups(rows: Iterable[tuple[T, int]], max_bytes: int) -> Iterator[list[T]]:
    """(item, size) pairs grouped in order, each group's sizes summing to at most max_bytes (a bigger item
    alone): shard_tables's rule, for items that are not rows."""
    group: list[T] = []
    total = 0
    for item, size in rows:
        if group and total + size > max_bytes:
            yield group
            group, total = [], 0
        group.append(item)
        total += size
    if group:
        yield group


def plan_shards(sizes: list[int], max_bytes: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of shard_groups for known sizes (an empty split: one empty shard)."""
    groups = shard_groups(enumerate(sizes), max_bytes)
    return [(group[0], group[-1] + 1) for group in groups] or [(0, 0)]


def shard_table(rows: list[tuple[dict, bytes]]):
    """The rows with their images embedded (scripts/lib/export.py's image_table: datasets' Image layout)."""
    from scripts.lib.export import image_table

    return image_table([r for r, _ in rows], [(data, r["_name"]) for r, data in rows])


def shard_tables(rows: Iterable[tuple[tuple[dict, bytes], int]], max_bytes: int) -> Iterator:
    """The shards of `rows` ((row, image) and the bytes it adds) in order, each one contiguous Arrow table
    of at most max_bytes (a bigger row: a shard of its own; no row: one empty shard). A shard is yielded as
    soon as the next row would pass the limit; its rows wait as Arrow chunks (CHUNK_ROWS), so it holds its
    table's bytes, not a dict a row."""
    chunks: list = []
    pending: list[tuple[dict, bytes]] = []
    total = pending_bytes = 0
    for item, size in rows:
        if (chunks or pending) and total + size > max_bytes:
            table = whole_table(chunks, pending)
            chunks, pending, total, pending_bytes = [], [], 0, 0
            yield table
            del table  # held while the next shard's images are read, it would double the memory
        pending.append(item)
        total, pending_bytes = total + size, pending_bytes + size
        if len(pending) >= CHUNK_ROWS or pending_bytes >= CHUNK_BYTES:
            chunks.append(shard_table(pending))
            pending, pending_bytes = [], 0
    if chunks or pending:
        yield whole_table(chunks, pending)
    else:
        yield shard_table([])


def whole_table(chunks: list, pending: list[tuple[dict, bytes]]):
    """The chunks and the rows still pending as one contiguous table: the bytes and Arrow size (num_bytes)
    of the table built from every row at once."""
    import pyarrow as pa

    parts = [*chunks, shard_table(pending)] if pending else chunks
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()


def write_shards(records: Iterable[dict], split: str, data_dir: Path, max_bytes: int) -> dict:
    """Parquet shards of one split, each of at most max_bytes of images and text (one bigger image: a
    shard of its own), written as the rows stream past; returns {num_examples, num_bytes (Arrow, as
    datasets counts), files}. The shard count in each name is known last: written as parts, renamed."""
    import pyarrow.parquet as pq

    info: dict = {"num_examples": 0, "num_bytes": 0, "files": []}
    parts: list[Path] = []
    for table in shard_tables(rows_with_images(records), max_bytes):
        parts.append(data_dir / f".{split}-{len(parts):05d}.part")
        pq.write_table(table, parts[-1], row_group_size=ROW_GROUP_ROWS, compression="zstd")
        info["num_examples"] += table.num_rows
        info["num_bytes"] += table.nbytes
        del table  # held while the next shard's images are read, it would double the memory
    for index, part in enumerate(parts):
        name = f"{split}-{index:05d}-of-{len(parts):05d}.parquet"
        part.rename(data_dir / name)
        info["files"].append(name)
    return info
