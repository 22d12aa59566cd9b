"""Round 44a: diff reads a release's rows in bounded memory (the class: memory that grows with rows).

read_snapshot held rows.parquet whole: a pandas frame of id/source/split/text (every caption a Python
object), pandas' duplicated() over every id, a dict of every row's image digest, and the train captions
in Arrow for the leak count. It now reads the file twice a byte-bounded batch at a time: checked and
ranked by id (external_sort.key_ranks), then spilled in id order to a temp folder (diff_stream). Rows:
Python memory (tracemalloc) of reading a release whose bulk is captions, image digests or many rows
stays under a bound the whole-table read passed; a duplicate id, a leak count and the comparison stay
as they were (guards).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.lib.errors import DataError
from scripts.tools import diff

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


def Workspace(root: Path):  # read_snapshot's filesystem for a folder (as test_plots' rows)
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem

    return DirFileSystem(str(root), fsspec.filesystem("file"))


def release(root: Path, rows: dict, name: str = "r", row_group_size: int | None = None) -> Path:
    folder = root / "data" / "releases" / name
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "rows.parquet", row_group_size=row_group_size)
    return root


def rows_of(n: int, text: str = "c", image=None, sha=None, prefix: str = "id") -> dict:
    rows = {
        "id": [f"{prefix}{i:08d}" for i in range(n)],
        "source": ["s"] * n,
        "split": ["validation" if i % 10 == 0 else "train" for i in range(n)],
        "text": [f"{i} {text}" for i in range(n)],
        "image": [image(i) if image else None for i in range(n)],
    }
    if sha:
        rows["image_sha256"] = [sha(i) for i in range(n)]
    return rows


def python_peak_mb(root: Path) -> float:
    tracemalloc.start()
    try:
        snapshot = diff.read_snapshot(Workspace(root), "W", "r")
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    getattr(snapshot, "close", lambda: None)()
    return peak


def shard(i: int) -> str:
    return f"s{i % 9}.tar!/{i}.png"


BOUNDED = [  # (id, rows, MB of Python objects the read may allocate at most; the whole-table read's was more)
    ("shard-digests-are-not-a-dict-of-every-row", lambda: rows_of(60_000, image=shard, sha=lambda i: f"{i:064x}"), 10),
    (
        "long-image-names-are-not-a-dict",
        lambda: rows_of(40_000, image=lambda i: f"{'deep/' * 20}{i}.tar!/{i}.png", sha=lambda i: f"{i:064x}"),
        6,
    ),
    ("guard-captions-never-become-python-strings", lambda: rows_of(20_000, "x" * 1000), 8),
    ("guard-many-short-rows", lambda: rows_of(120_000, "a caption"), 24),
]
SLOW = {"long-image-names-are-not-a-dict", "guard-captions-never-become-python-strings", "guard-many-short-rows"}


@pytest.mark.parametrize(
    "rows,bound_mb",
    [pytest.param(*r[1:], id=r[0], marks=[pytest.mark.slow] if r[0] in SLOW else []) for r in BOUNDED],
)  # one row in CI's tier: each traces a read of 20,000-120,000 rows (1-4 s)
def test_reading_a_release_holds_no_python_object_per_row(tmp_path, rows, bound_mb):
    assert python_peak_mb(release(tmp_path, rows())) < bound_mb


def test_guard_duplicate_id_across_row_groups_is_the_same_line(tmp_path):
    rows = rows_of(3_000)
    rows["id"][2_500], rows["id"][2_900] = rows["id"][7], rows["id"][9]  # groups of 1,000: repeats far apart
    root = release(tmp_path, rows, row_group_size=1_000)
    with pytest.raises(DataError) as raised:
        diff.read_snapshot(Workspace(root), "W", "r")
    assert str(raised.value) == (
        "W:data/releases/r/rows.parquet: duplicate id 'id00000007' at row 2501 (first at row 8; 2 repeated rows)"
    )


def test_guard_leaks_count_equal_texts_and_missing_ones(tmp_path):
    rows = {
        "id": ["a", "b", "c", "d", "e", "f"],
        "source": ["s"] * 6,
        "split": ["train", "train", "train", "validation", "validation", "validation"],
        "text": ["same", None, "other", "same", None, "new"],
        "image": [None] * 6,
    }
    snapshot = diff.read_snapshot(Workspace(release(tmp_path, rows)), "W", "r")
    try:
        assert snapshot.leaks == 2 == diff.leaks(pd.DataFrame(rows))
    finally:
        getattr(snapshot, "close", lambda: None)()


def test_guard_streamed_comparison_equals_the_frames_and_leaves_no_temp(tmp_path):
    old, new = rows_of(5_000, "old"), rows_of(5_000, "old", prefix="id")
    new["text"][::7] = ["changed"] * len(new["text"][::7])
    a = diff.read_snapshot(Workspace(release(tmp_path / "a", old)), "A", "r")
    b = diff.read_snapshot(Workspace(release(tmp_path / "b", new)), "B", "r")
    folders = [Path(s.rows._folder.name) for s in (a, b)]
    streamed = diff.compare(a, b, {})
    frames = [
        diff.Snapshot(rev, "r", pd.DataFrame(r)[["id", "source", "split", "text"]], a.removed, {})
        for rev, r in (("A", old), ("B", new))
    ]
    assert streamed == diff.compare(*frames, {})
    for snapshot in (a, b):
        getattr(snapshot, "close", lambda: None)()
    assert not any(folder.exists() for folder in folders)
