"""Round 43c: diff's row comparison holds a bounded number of rows, not every row of both releases.

diff.compare set both releases' rows as indexed frames, copied them split by split and sorted every
added and removed id in Python: its memory grew with rows on top of the snapshots (+165 MB at 200k
rows). diff_rows merges the two id-sorted streams a chunk at a time, with the same counts, id lists
and listed samples (the repo's releases diff byte-identically, md and json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scripts.tools import diff

ROOT = Path(__file__).resolve().parents[1]


def snapshot(rev: str, rows: list[tuple], md5: dict | None = None) -> diff.Snapshot:
    frame = pd.DataFrame(rows, columns=["id", "source", "split", "text"])
    return diff.Snapshot(rev, "r", frame, pd.DataFrame(columns=["id", "reason"]), md5 or {})


OLD = [
    ("z", "s1", "train", "zed"),
    ("é", "s1", "train", "accent"),
    ("Z", "s2", "train", None),
    ("a", "s1", "train", "moves"),
    ("m", "s2", "validation", "same"),
    ("gone", "s2", "validation", "bye"),
]
NEW = [
    ("Z", "s2", "train", None),  # missing both sides: unchanged
    ("z", "s1", "train", "zed!"),
    ("é", "s1", "train", None),  # a caption that went missing: changed
    ("a", "s1", "validation", "moves"),  # another split: removed from train, added to validation
    ("m", "s2", "validation", "same"),
    ("new", "s3", "train", "hi"),
]


def split_moves_missing_text_and_code_point_order():
    splits = diff.compare(snapshot("A", OLD), snapshot("B", NEW), {"gone": "dedup:x jaccard=1"})["splits"]
    train, validation = splits["train"], splits["validation"]
    assert (train["rows_a"], train["rows_b"], validation["rows_a"], validation["rows_b"]) == (4, 4, 2, 2)
    assert train["removed_ids"] == ["a"] and train["added_ids"] == ["new"]
    assert validation["added_ids"] == ["a"] and validation["removed_ids"] == ["gone"]
    assert [s["id"] for s in train["samples_text_changed"]] == ["z", "é"]  # code point order: z < é
    assert train["text_changed"] == 2 and validation["removed_by_reason"] == {"dedup:x": 1}
    assert train["samples_removed"] == [{"id": "a", "source": "s1", "text": "moves", "reason": "recipe"}]


def merge_reads_each_side_one_row_ahead_at_most():
    from scripts.tools.diff_rows import merged

    seen = {"a": 0, "b": 0}

    def counted(side, n):
        for i in range(n):
            seen[side] += 1
            yield (f"{i * (2 if side == 'a' else 3):06d}", "s", "train", "t")

    pairs = merged(counted("a", 10_000), counted("b", 10_000))
    for k, _ in enumerate(pairs, 1):
        assert seen["a"] <= k + 1 and seen["b"] <= k + 1
        if k == 50:
            break


def samples_are_the_first_by_id_and_capped():
    from scripts.tools.diff_rows import SAMPLES

    old = [(f"id{i:03d}", "s", "train", "x") for i in range(100, 0, -1)]
    new = [(f"id{i:03d}", "s", "train", "y") for i in range(1, 101, 2)]
    train = diff.compare(snapshot("A", old), snapshot("B", new), {})["splits"]["train"]
    assert [s["id"] for s in train["samples_removed"]] == [f"id{i:03d}" for i in range(2, 2 + 2 * SAMPLES, 2)]
    assert [s["id"] for s in train["samples_text_changed"]] == [f"id{i:03d}" for i in range(1, 2 * SAMPLES, 2)]
    assert train["removed_ids"] == sorted(train["removed_ids"]) and len(train["removed_ids"]) == 50


def guard_image_hashes_of_one_kind_compared():
    md5_a = {"m": "md5:1", "z": "md5:1", "Z": "sha256:1"}
    md5_b = {"m": "md5:2", "z": "md5:1", "Z": "md5:9"}
    report = diff.compare(snapshot("A", OLD, md5_a), snapshot("B", NEW, md5_b), {})
    assert report["splits"]["validation"]["image_changed"] == 1 and report["splits"]["train"]["image_changed"] == 0
    json.dumps(report)  # the report is plain JSON


def leaks_without_a_python_set_of_captions():
    from scripts.tools.diff_rows import leaks

    rows = [
        ("t1", "s", "train", "fox"),
        ("t2", "s", "train", None),
        ("v1", "s", "validation", "fox"),
        ("v2", "s", "validation", None),
        ("v3", "s", "validation", "owl"),
    ]
    assert leaks(snapshot("B", rows).rows) == 2  # a missing caption matches a missing one, as isin did
    assert diff.compare(snapshot("A", rows), snapshot("B", rows), {})["leaks_b"] == 2


def guard_leaks_of_an_object_column_from_metadata_jsonl():
    frame = snapshot("B", [("t", "s", "train", "fox"), ("v", "s", "validation", "fox")]).rows.astype(object)
    assert diff.compare(snapshot("A", []), diff.Snapshot("B", "r", frame, pd.DataFrame(), {}), {})["leaks_b"] == 1


def python_peak_mb(old: list[tuple], new: list[tuple]) -> float:
    """tracemalloc's peak (MB) of Python objects diff.compare allocates over its two snapshots."""
    import tracemalloc

    a, b = snapshot("A", old), snapshot("B", new)
    tracemalloc.start()
    try:
        diff.compare(a, b, {})
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


N = 20_000
CAPTION = "a caption long enough to count " * 3


def python_objects_bounded_rows_all_changed():
    old = [(f"id{i:06d}", "s", "train", f"{CAPTION}{i}") for i in range(N)]
    new = [(f"id{i:06d}", "s", "train", f"{CAPTION}{i}!") for i in range(N)]
    assert python_peak_mb(old, new) < 7  # before: every row's id and both texts as objects (about 20 MB)


def python_objects_bounded_train_captions():
    rows = [(f"id{i:06d}", "s", "train", f"{CAPTION}{i}") for i in range(N)]
    rows.append(("v", "s", "validation", CAPTION))
    assert python_peak_mb(rows, rows) < 7  # before: a Python set of every train caption


def python_objects_bounded_all_removed():
    old = [(f"id{i:06d}", "s", "validation", f"{CAPTION}{i}") for i in range(N)]
    assert python_peak_mb(old, [("x", "s", "train", "t")]) < 4  # the id list is output; the texts are not


ROWS = {
    "python-objects-bounded-all-changed": python_objects_bounded_rows_all_changed,
    "python-objects-bounded-train-captions": python_objects_bounded_train_captions,
    "python-objects-bounded-all-removed": python_objects_bounded_all_removed,
    "guard-split-moves-missing-text-code-point-order": split_moves_missing_text_and_code_point_order,
    "merge-reads-one-row-ahead": merge_reads_each_side_one_row_ahead_at_most,
    "samples-first-by-id-capped": samples_are_the_first_by_id_and_capped,
    "leaks-without-python-set": leaks_without_a_python_set_of_captions,
    "guard-image-hashes-of-one-kind": guard_image_hashes_of_one_kind_compared,
    "guard-leaks-object-column": guard_leaks_of_an_object_column_from_metadata_jsonl,
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_comparison(row):
    row()


CHILD = """
import resource, sys
import pandas as pd
from scripts.tools import diff
n = int(sys.argv[1])
a = pd.DataFrame({"id": [f"id{i:09d}" for i in range(n)], "source": "s", "split": "train",
                  "text": [f"caption {i} " * 4 for i in range(n)]})
b = a[a.index % 7 != 0].copy()
b.loc[b.index % 11 == 0, "text"] = "rewritten"
sa = diff.Snapshot("A", "r", a, pd.DataFrame(), {})
sb = diff.Snapshot("B", "r", b, pd.DataFrame(), {})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = diff.compare(sa, sb, {})
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, report["splits"]["train"]["removed"])
"""


@pytest.mark.slow
def test_comparison_memory_bounded_at_200k_rows():
    """Before: the comparison raised peak RSS by about 160 MB over the snapshots at 200k rows; now about 20."""
    done = subprocess.run([sys.executable, "-c", CHILD, "200000"], cwd=ROOT, capture_output=True, text=True, check=True)
    raised_mb, removed = map(int, done.stdout.split())
    assert removed == 200000 // 7 + 1
    assert raised_mb < 70, f"the comparison raised peak RSS by {raised_mb} MB"
