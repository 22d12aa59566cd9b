"""Round 31c: hostile inputs against the source readers (scripts/lib/readers).

1. A CSV record with a line longer than MAX_CSV_LINE characters stopped the whole source with one line, even
   under `on_error: skip`. It is now read past (a bounded chunk at a time, to the line where its quotes close)
   and is a `record_too_long` problem: counted under skip, the rows after it read; one line naming the file
   and row under fail. The cap is lowered here (readers.csv_sources.MAX_CSV_LINE) to keep the rows fast.
2. A manifest's shards were each walked through pathlib and lstat'ed part by part (250 us a shard): they are
   now checked by their text, each folder once, the shard itself where it is opened. The confinement stays:
   a `..`, an absolute path, a link out of the export are one line (benchmarks/manifest_bench.py: the cost).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_round16b import ingest, source

from helpers.archives import tar_bytes
from helpers.workspace import PNG

CAP = 4096  # characters: MAX_CSV_LINE for these rows
LONG = "x" * (CAP * 3)
GOOD = 'a red fox,"{}"\n'
AFTER = 'a blue cat,"{}"\n'

# case: the long record's text (between a good row and, unless it ends the file, another)
LONG_RECORDS = {
    "a long quoted field in the middle of its line": f'a fox,"{{""k"": ""{LONG}""}}"\n',
    "a long unquoted line": f"a fox{LONG},{{}}\n",
    "a long quoted field over lines": f'"a fox\nsecond {LONG}\nthird",{{}}\n',
    "a long line ending in CRLF": f"a fox{LONG},{{}}\r\n",
    "a long quoted field with escaped quotes over lines": f'"a ""fox"" \n{LONG}""\n",{{}}\n',
}
LAST = {"the last record long, no newline": f"a fox{LONG},{{}}", "the last quoted field never closes": f'"{LONG}\n,'}


def _csv(root: Path, middle: str, last: bool) -> None:
    (root / "raw").mkdir()
    text = "prompt,raw_data\n" + GOOD + middle + ("" if last else AFTER)
    (root / "raw" / "a.csv").write_bytes(text.encode())


@pytest.fixture
def small_cap(monkeypatch):
    from scripts.lib.readers import csv_sources

    monkeypatch.setattr(csv_sources, "MAX_CSV_LINE", CAP)


@pytest.mark.parametrize("case", [*LONG_RECORDS, *LAST])
def test_a_long_csv_record_is_skipped_and_counted_under_skip(tmp_path, monkeypatch, capfd, small_cap, case):
    last = case in LAST
    _csv(tmp_path, {**LONG_RECORDS, **LAST}[case], last)
    result, report = ingest(tmp_path, source("openprompts", on_error="skip"), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["skipped"] == {"record_too_long": 1}
    assert report["rows_written"] == (1 if last else 2)


@pytest.mark.parametrize("case", [*LONG_RECORDS, *LAST])
def test_a_long_csv_record_under_fail_is_one_line_naming_file_and_row(tmp_path, monkeypatch, capfd, small_cap, case):
    _csv(tmp_path, {**LONG_RECORDS, **LAST}[case], case in LAST)
    result, report = ingest(tmp_path, source("openprompts"), monkeypatch, capfd)
    assert result.returncode == 2 and report is None, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and len(line) < 400
    assert "a.csv: row 2 (line 3)" in line and "longer than" in line


# ---------------------------------------------------------------- 2. a manifest's shards, confined by their text


def _export(root: Path, listed: list[str], link: str | None = None) -> None:
    """raw/ holding a manifest listing `listed`, and `link` (a folder or shard under raw/) linked to a real
    shard's place outside the export."""
    meta = json.dumps({"target_w": 1, "target_h": 1}).encode()
    shard = tar_bytes([("a.png", PNG), ("a.txt", b"a red fox\n"), ("a.json", meta)])
    (root / "outside" / "b").mkdir(parents=True)
    (root / "outside" / "b" / "shard-0.tar").write_bytes(shard)
    (root / "raw" / "buckets" / "b").mkdir(parents=True)
    (root / "raw" / "buckets" / "b" / "shard-0.tar").write_bytes(shard)
    manifest = {"format": "bucketed_shards_v1", "buckets": {"b": {"shards": listed}}}
    (root / "raw" / "manifest.json").write_text(json.dumps(manifest))
    if link == "folder":
        os.symlink(root / "outside" / "b", root / "raw" / "buckets" / "out")
    elif link == "shard":
        os.symlink(root / "outside" / "b" / "shard-0.tar", root / "raw" / "buckets" / "b" / "shard-1.tar")


REFUSED_SHARDS = {  # case: (listed, link made, what the line says)
    "a '..' out of the export": (["buckets/../../outside/b/shard-0.tar"], None, "leaves the export folder"),
    "a '..' after a dot folder": (["./buckets/b/../../../x.tar"], None, "leaves the export folder"),
    "an absolute path": (["/etc/passwd"], None, "leaves the export folder"),
    "a folder linked out": (["buckets/b/shard-0.tar", "buckets/out/shard-0.tar"], "folder", "is a symbolic link"),
    "a shard linked out": (["buckets/b/shard-0.tar", "buckets/b/shard-1.tar"], "shard", "is a symbolic link"),
    "one shard listed twice": (["buckets/b/shard-0.tar", "buckets/b/./shard-0.tar"], None, "is listed twice"),
}


@pytest.mark.parametrize("case", REFUSED_SHARDS)
def test_a_manifest_shard_out_of_the_export_is_still_one_line(tmp_path, monkeypatch, capfd, case):
    listed, link, said = REFUSED_SHARDS[case]
    _export(tmp_path, listed, link)
    result, report = ingest(tmp_path, source("bucketed_webdataset", on_error="skip"), monkeypatch, capfd)
    assert result.returncode == 2 and report is None, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and said in line, line


@pytest.mark.parametrize("link", ["folder", "shard"])
def test_a_linked_shard_is_read_when_links_are_followed(tmp_path, monkeypatch, capfd, link):
    listed = ["buckets/b/shard-0.tar", "buckets/out/shard-0.tar" if link == "folder" else "buckets/b/shard-1.tar"]
    _export(tmp_path, listed, link)
    entry = source("bucketed_webdataset", follow_symlinks=True)
    result, report = ingest(tmp_path, entry, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["rows_written"] == 2 and report["shards"] == 2
