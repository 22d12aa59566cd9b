"""Round 40a: plots, summary and history-table on hostile report files (docs/guarantees.md, round 36e's "not tried").

1. A release's stats.json and a clean report were read up to the 64 MB cap of a config file, then parsed whole: 60 MB of
   `[]` (or `{}`) became 1.5 GB of Python lists and took 13-19 s at summary, history-table and plots, at exit 0; a
   50 MB string or 10^6 keys was read too. Such a file is under a kilobyte (the repository's largest: 656 bytes), so
   each is now read with a cap of 1 MiB (nesting.MAX_REPORT_BYTES, one cap for both since session 35): one line naming the
   file, exit 2, the previous summary.json and plots/ byte for byte, nothing printed by history-table.

Held, tried by hand (one line, exit 2, or history-table's `unreadable`): a stats.json nested 10^4 deep, NaN or
Infinity, a count of a million digits, a FIFO, a folder, a link out of the folder or to /dev/zero, bytes not UTF-8,
an empty file; a release named with a newline, an escape code or U+202E (params.yaml refuses the name); a releases
folder so named (escaped in the line).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line
from scripts.lib.tables import write_parquet

CAP = 1 << 20
RELEASES = ("r1", "r2")
HISTORY = ("v2", "v3", "v4", "v4-a", "v4-b")  # the names history-table reads


def _padded(report: dict, pad: str) -> str:
    """`report` as JSON with one more field `pad`, of one of PADS' shapes: every row is past the cap."""
    values = {
        "lists": "[" + "[]," * 400_000 + "[]]",  # 1.2 MB: 60 MB of it was 1.5 GB of lists, 14 s
        "objects": "[" + "{}," * 400_000 + "{}]",
        "keys": "{" + ",".join(f'"k{i:08d}":1' for i in range(100_000)) + "}",  # 1.3 MB of keys
        "a 50 MB string": '"' + "a" * 50_000_000 + '"',
    }
    return json.dumps(report)[:-1] + f', "pad": {values[pad]}}}'


PADS = fast_first(("lists", "objects", "keys", pytest.param("a 50 MB string", marks=pytest.mark.slow)))  # a run each


def _workspace(root) -> None:
    """Two releases of 3 rows (metadata.jsonl, stats.json), a clean report and a clusters table of source s."""
    for release in RELEASES:
        for split in ("train", "validation"):
            folder = root / "data" / "releases" / release / split
            folder.mkdir(parents=True)
            rows = [{"file_name": f"{i}.jpg", "text": "x" * i, "source": "s", "id": f"{split}{i}"} for i in range(3)]
            (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (root / "data" / "releases" / release / "stats.json").write_text('{"rows": {"total": 6}}', encoding="utf-8")
    (root / "data" / "clean").mkdir(parents=True)
    (root / "data" / "clean" / "s.report.json").write_text('{"dropped_by_reason": {"empty": 1}}', encoding="utf-8")
    write_parquet(
        pd.DataFrame({"id": ["a", "b"], "duplicate_of": ["k", "k"], "jaccard": [0.9, 0.8]}),
        root / "data" / "dedup" / "s.clusters.parquet",
    )
    params = {
        "sources": {"s": {"kind": "text", "path": "x"}},
        "releases": {name: {"components": [{"source": "s"}]} for name in RELEASES},
        "preview": {"length_bin": 4},
        "dedup": {"threshold": 0.7},
    }
    (root / "params.yaml").write_text(json.dumps(params), encoding="utf-8")


def _refused(done, named: str) -> None:
    line = error_line(done.stderr)
    assert done.returncode == 2 and f"{named}: larger than {CAP} bytes; refusing to read it" in line, done.stderr


@pytest.mark.parametrize("pad", PADS)
def test_summary_refuses_a_stats_json_past_a_mebibyte(tmp_path, monkeypatch, capfd, pad):
    _workspace(tmp_path)
    assert cli(["summary", "data/releases", "summary.json"], tmp_path, monkeypatch, capfd).returncode == 0
    previous = (tmp_path / "summary.json").read_bytes()
    stats = tmp_path / "data" / "releases" / "r2" / "stats.json"
    stats.write_text(_padded({"rows": {"total": 6}}, pad), encoding="utf-8")
    done = cli(["summary", "data/releases", "summary.json"], tmp_path, monkeypatch, capfd)
    _refused(done, "data/releases/r2/stats.json")
    assert (tmp_path / "summary.json").read_bytes() == previous


@pytest.mark.parametrize("pad", PADS)
def test_history_table_refuses_a_stats_json_past_a_mebibyte(tmp_path, monkeypatch, capfd, pad):
    for name in HISTORY:
        (tmp_path / "rel" / name).mkdir(parents=True)
        (tmp_path / "rel" / name / "stats.json").write_text('{"rows": {"train": 5}}', encoding="utf-8")
    (tmp_path / "rel" / "v3" / "stats.json").write_text(_padded({"rows": {"train": 5}}, pad), encoding="utf-8")
    done = cli(["history-table", "--releases", "rel"], tmp_path, monkeypatch, capfd)
    _refused(done, "rel/v3/stats.json")
    assert done.stdout == ""  # no table, not even its heading


@pytest.mark.parametrize("pad", PADS)
def test_plots_refuses_a_clean_report_past_a_mebibyte(tmp_path, monkeypatch, capfd, pad):
    _workspace(tmp_path)
    argv = ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"]
    assert cli(argv, tmp_path, monkeypatch, capfd).returncode == 0
    previous = {p.name: p.read_bytes() for p in (tmp_path / "data" / "plots").iterdir()}
    report = tmp_path / "data" / "clean" / "s.report.json"
    report.write_text(_padded({"dropped_by_reason": {"empty": 1}}, pad), encoding="utf-8")
    done = cli(argv, tmp_path, monkeypatch, capfd)
    _refused(done, "data/clean/s.report.json")
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "plots").iterdir()} == previous
