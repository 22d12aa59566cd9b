"""Round 36f: hostile source files against ingest's readers (scripts/lib/readers, scripts/lib/text_lines.py).

1. A byte order mark in the middle of a file (two files joined with `cat`, the second saved by Notepad or Excel's
   "CSV UTF-8") stayed at the start of that line's or record's prompt: an invisible U+FEFF in the table, and a
   text line's "- " markup kept behind it. Read past where a line (text) or a record (CSV) starts, as the first
   file's mark always was.
2. Under `on_error: skip` report.json counted each skipped record by its reason only: which file and row a
   record_too_long, a malformed CSV record or a broken tar member was is in the `fail` line alone. The report now
   lists where the first skips are (`skipped_at`: reason, file, row or member, detail; at most SKIPS_NOTED).
"""

from __future__ import annotations

import json
import tarfile

import pytest
from test_round16b import ingest, source

from helpers.workspace import PNG

BOM = b"\xef\xbb\xbf"


def _prompts(root) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(root / "out" / "s.parquet", columns=["prompt"]).column("prompt").to_pylist()


# ---------------------------------------------------------------- 1. a byte order mark mid-file

JOINED = {  # case: (files under raw/, source entry, the prompts written)
    "openprompts: a joined CSV's row": (
        {"a.csv": b'prompt,raw_data\na fox,"{}"\n' + BOM + b'b cat,"{}"\n'},
        source("openprompts"),
        ["a fox", "b cat"],
    ),
    "openprompts: a quoted prompt after the mark": (
        {"a.csv": b'prompt,raw_data\na fox,"{}"\r\n' + BOM + b'"b, cat","{}"\r\n'},
        source("openprompts"),
        ["a fox", "b, cat"],
    ),
    "kaggle_sd2: the mark before a row": (
        {"a.csv": b"prompt\na fox\n" + BOM + b"b cat\n", "0.png": PNG, "1.png": PNG},
        source("kaggle_sd2"),
        ["a fox", "b cat"],
    ),
    "gustavosta csv: the mark before a row": (
        {"train.csv": b"Prompt,image_path\na fox,0.png\n" + BOM + b"b cat,0.png\n", "0.png": PNG},
        source("gustavosta"),
        ["a fox", "b cat"],
    ),
    "text: a joined file's first line": ({"a.txt": b"a fox\n" + BOM + b"b cat\n"}, source("text"), ["a fox", "b cat"]),
    "text: its list markup behind the mark": (
        {"a.txt": b"- a fox\r" + BOM + b"- b cat\r"},
        source("text"),
        ["a fox", "b cat"],
    ),
    "text: the last line, no newline": ({"a.txt": b"a fox\n" + BOM + b"b cat"}, source("text"), ["a fox", "b cat"]),
}


@pytest.mark.parametrize("case", JOINED)
def test_a_byte_order_mark_mid_file_is_no_part_of_the_prompt(tmp_path, monkeypatch, capfd, case):
    files, entry, prompts = JOINED[case]
    (tmp_path / "raw").mkdir()
    for name, data in files.items():
        (tmp_path / "raw" / name).write_bytes(data)
    result, _ = ingest(tmp_path, entry, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _prompts(tmp_path) == prompts


# ---------------------------------------------------------------- 2. where a skipped record is, in report.json


def _lying_tar() -> bytes:
    """a.json, then a.png whose size header says 1 GB: it runs past the end of the shard."""
    meta = json.dumps({"image_name": "a.png", "short_caption": "a fox", "width": 1, "height": 1}).encode()
    members = b""
    for name, data, size in (("a.json", meta, len(meta)), ("a.png", PNG, 10**9)):
        info = tarfile.TarInfo(name)
        info.size = size
        members += info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)
    return members


SKIPPED = {  # case: (files under raw/, source kind, the first skip noted: (reason, file, where))
    "an unclosed quoted field": (
        {"a.csv": b'prompt,raw_data\na fox,"{}"\n"never closed, {}\nb,{}\n'},
        "openprompts",
        ("bad_csv", "raw/a.csv", "row 2 (line 4)"),
    ),
    "a row of too many fields": (
        {"a.csv": b'prompt,raw_data\na fox,"{}",x\nb cat,"{}"\n'},
        "openprompts",
        ("bad_row", "raw/a.csv", "row 1 (line 2)"),
    ),
    "a record past the line cap": (
        {"a.csv": b'prompt,raw_data\na fox,"{}"\nb' + b"x" * 5000 + b',"{}"\n'},
        "openprompts",
        ("record_too_long", "raw/a.csv", "row 2 (line 3)"),
    ),
    "malformed raw_data JSON": (
        {"a.csv": b'prompt,raw_data\na fox,"{}"\nb cat,"{nope"\n'},
        "openprompts",
        ("bad_json", "raw/a.csv", "row 2"),
    ),
    "a tar member whose size lies": (
        {"a.tar": _lying_tar()},
        "dalle3",
        ("corrupt_archive", "raw/a.tar", ""),
    ),  # its detail names the byte
    "a text line past max_prompt_bytes": (
        {"a.txt": b"a fox\n" + b"x" * 70000 + b"\n"},
        "text",
        ("line_too_long", "raw/a.txt", "line 2"),
    ),
}


@pytest.mark.parametrize("case", SKIPPED)
def test_a_skipped_record_is_named_with_its_file_and_row_in_the_report(tmp_path, monkeypatch, capfd, case):
    from scripts.lib.readers import csv_sources

    monkeypatch.setattr(csv_sources, "MAX_CSV_LINE", 4096)
    files, kind, (reason, file, where) = SKIPPED[case]
    (tmp_path / "raw").mkdir()
    for name, data in files.items():
        (tmp_path / "raw" / name).write_bytes(data)
    result, report = ingest(tmp_path, source(kind, on_error="skip"), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    noted = next(noted for noted in report["skipped_at"] if noted["reason"] == reason)
    assert (noted["reason"], noted["file"], noted["where"]) == (reason, file, where), noted
    assert report["skipped"][reason] >= 1 and "\n" not in noted["detail"]


def test_the_report_notes_at_most_skips_noted_places(tmp_path, monkeypatch, capfd):
    from scripts.lib.readers.base import SKIPS_NOTED

    (tmp_path / "raw").mkdir()
    rows = b"".join(b'p%d,"{nope"\n' % i for i in range(SKIPS_NOTED + 50))
    (tmp_path / "raw" / "a.csv").write_bytes(b"prompt,raw_data\n" + rows)
    result, report = ingest(tmp_path, source("openprompts", on_error="skip"), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["skipped"] == {"bad_json": SKIPS_NOTED + 50}
    assert len(report["skipped_at"]) == SKIPS_NOTED and report["skipped_at"][-1]["where"] == f"row {SKIPS_NOTED}"


def test_a_blank_line_is_no_skip_noted(tmp_path, monkeypatch, capfd):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.txt").write_bytes(b"a fox\n\n" + BOM + b"\nb cat\n")
    result, report = ingest(tmp_path, source("text", on_error="skip"), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["skipped_at"] == [] and report["skipped"] == {"blank_line": 2}
