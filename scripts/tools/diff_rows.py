"""diff's comparison core: two releases' rows merged in id order, one row of each side at a time.

The rows of each side arrive sorted by id (rows_by_id: pyarrow's sort, UTF-8 byte order, which is
Python's code point order, as sorted() was), so a row is added, removed or in both the moment the
two streams meet, and the first SAMPLES of each kind seen are the first SAMPLES by id: no set index,
no per-split copies of both tables, no sorted() of every id. The counts and listed rows are those
of the whole-table comparison it replaces (the repo's releases diff byte-identically).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib.io import SPLITS

SAMPLES = 5
SORT_CHUNK = 8_192  # rows taken from the table at a time in id order: what the stream holds beyond it
Row = tuple  # (id, source, split, text, image digest or None)
ROW = ("id", "source", "split", "text")


def rows_by_id(frame, image_md5: dict | None = None) -> Iterator[Row]:
    """The (id, source, split, text, digest) rows of DataFrame `frame` (digests: image_md5's), in id order,
    a chunk at a time."""
    order = pc.sort_indices(pa.array(frame["id"], type=pa.string())).to_numpy()
    frame = frame[list(ROW)]
    digests = image_md5 or {}
    for start in range(0, len(order), SORT_CHUNK):  # a chunk's cells become Python objects, never all rows'
        chunk = frame.iloc[order[start : start + SORT_CHUNK]]
        for row in zip(*(chunk[c].to_numpy() for c in ROW)):
            yield (*row, digests.get(row[0]))


def leaks(frame) -> int:
    """Validation rows of DataFrame `frame` whose text is some train row's too (a missing text matches a
    missing one, as pandas' isin did). Arrow hashes the train texts in its own buffers: a Python set of
    them held every train caption as an object."""
    train = pa.array(frame.loc[frame["split"] == "train", "text"], type=pa.string(), from_pandas=True)
    validation = pa.array(frame.loc[frame["split"] == "validation", "text"], type=pa.string(), from_pandas=True)
    return int(pc.sum(pc.is_in(validation, value_set=train, skip_nulls=False)).as_py() or 0)


def merged(old: Iterable[Row], new: Iterable[Row]) -> Iterator[tuple[Row | None, Row | None]]:
    """(old row, new row) pairs of two id-sorted streams joined by id; None for the side that lacks it."""
    old_rows, new_rows = iter(old), iter(new)
    a, b = next(old_rows, None), next(new_rows, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a, None
            a = next(old_rows, None)
        elif a is None or b[0] < a[0]:
            yield None, b
            b = next(new_rows, None)
        else:
            yield a, b
            a, b = next(old_rows, None), next(new_rows, None)


@dataclass
class SplitDiff:
    """One split's differences, filled a row at a time in id order."""

    rows_a: int = 0
    rows_b: int = 0
    added_ids: list = field(default_factory=list)
    removed_ids: list = field(default_factory=list)
    text_changed: int = 0
    image_changed: int = 0
    added_by_source: Counter = field(default_factory=Counter)
    removed_by_source: Counter = field(default_factory=Counter)
    removed_by_reason: Counter = field(default_factory=Counter)
    samples_added: list = field(default_factory=list)
    samples_removed: list = field(default_factory=list)
    samples_text_changed: list = field(default_factory=list)


def _missing(text) -> bool:
    return text is None or (isinstance(text, float) and math.isnan(text))


def text_changed(before, after) -> bool:
    """pandas' `before != after` but both missing: a missing caption against any other differs."""
    if _missing(before) or _missing(after):
        return not (_missing(before) and _missing(after))
    return bool(before != after)


def image_changed(old: str | None, new: str | None) -> bool:
    """Two hashes of the same kind that differ (an md5 and a sha256 cannot be compared)."""
    return bool(old and new) and old.split(":", 1)[0] == new.split(":", 1)[0] and old != new


def compare_rows(old: Iterable[Row], new: Iterable[Row], explain: dict) -> dict:
    """{split: SplitDiff} of two id-sorted row streams (each row with its image digest); explain maps a
    removed id to its reason."""
    splits = {split: SplitDiff() for split in SPLITS}
    for a, b in merged(old, new):
        if a is not None:
            splits[a[2]].rows_a += 1
        if b is not None:
            splits[b[2]].rows_b += 1
        if a is not None and b is not None and a[2] == b[2]:
            _both(splits[a[2]], a, b)
            continue
        if a is not None:
            _removed(splits[a[2]], a, explain.get(a[0], "recipe"))
        if b is not None:
            _added(splits[b[2]], b)
    return splits


def _both(s: SplitDiff, a: Row, b: Row) -> None:
    if text_changed(a[3], b[3]):
        s.text_changed += 1
        if len(s.samples_text_changed) < SAMPLES:
            s.samples_text_changed.append({"id": a[0], "before": a[3], "after": b[3]})
    s.image_changed += image_changed(a[4], b[4])


def _removed(s: SplitDiff, a: Row, reason: str) -> None:
    s.removed_ids.append(a[0])
    s.removed_by_source[a[1]] += 1
    s.removed_by_reason[reason.split(" ")[0]] += 1
    if len(s.samples_removed) < SAMPLES:
        s.samples_removed.append({"id": a[0], "source": a[1], "text": a[3], "reason": reason})


def _added(s: SplitDiff, b: Row) -> None:
    s.added_ids.append(b[0])
    s.added_by_source[b[1]] += 1
    if len(s.samples_added) < SAMPLES:
        s.samples_added.append({"id": b[0], "source": b[1], "text": b[3]})


def split_report(s: SplitDiff) -> dict:
    """The report's entry for one split, keys in the order the JSON contract lists them."""
    return {
        "rows_a": s.rows_a,
        "rows_b": s.rows_b,
        "added": len(s.added_ids),
        "removed": len(s.removed_ids),
        "text_changed": s.text_changed,
        "image_changed": s.image_changed,
        "added_by_source": _counts(s.added_by_source),
        "removed_by_source": _counts(s.removed_by_source),
        "removed_by_reason": _counts(s.removed_by_reason),
        "added_ids": s.added_ids,
        "removed_ids": s.removed_ids,
        "samples_added": s.samples_added,
        "samples_removed": s.samples_removed,
        "samples_text_changed": s.samples_text_changed,
    }


def _counts(counter: Counter) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(counter.items())}
