"""Round 36e: summary copied any whole number into the metrics as a release's row count.

1. A stats.json whose rows.total is past what any table of ours holds (2**63, 2**70, a 4,000-digit number) was
   copied into data/summary.json whole at exit 0, which `dvc exp show` and history-table (int64) cannot hold;
   history-table already showed such a count as `unreadable`. summary and history-table now share one rule
   (summary.is_count: 0 to 2**63-1) and summary refuses the file in one line, the previous summary.json kept.
2. A refused rows.total was named by its Python type only ("rows.total is int" for -5, "is NoneType" for
   null): the line now says the value (nesting.json_found), so the file's mistake is visible in it.
"""

from __future__ import annotations

import pytest

from helpers.commands import cli
from helpers.workspace import error_line, write_params

RELEASES = ("v2", "v3", "v4", "v4-a", "v4-b")


def _workspace(tmp_path, monkeypatch, capfd, total_text: str) -> bytes:
    """summary.json written from 5 rows a release, then v3's rows.total rewritten as `total_text`: the previous
    summary's bytes."""
    write_params(tmp_path)
    for name in RELEASES:
        (tmp_path / "rel" / name).mkdir(parents=True)
        (tmp_path / "rel" / name / "stats.json").write_text('{"rows": {"total": 5}}', encoding="utf-8")
    assert cli(["summary", "rel", "summary.json"], tmp_path, monkeypatch, capfd).returncode == 0
    (tmp_path / "rel" / "v3" / "stats.json").write_text('{"rows": {"total": ' + total_text + "}}", encoding="utf-8")
    return (tmp_path / "summary.json").read_bytes()


@pytest.mark.parametrize("total", [str(2**63), str(2**70), "1" + "0" * 4000])
def test_a_count_past_int64_is_refused_not_copied_into_the_metrics(tmp_path, monkeypatch, capfd, total):
    previous = _workspace(tmp_path, monkeypatch, capfd, total)
    done = cli(["summary", "rel", "summary.json"], tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "rel/v3/stats.json: rows.total is a number" in line, done.stderr
    assert "not a count of rows" in line and len(line) < 400  # a 4,000-digit number is cut short
    assert (tmp_path / "summary.json").read_bytes() == previous  # the previous metrics, untouched


@pytest.mark.parametrize(
    ("total", "named"),
    [("-5", "a number -5"), ("-1", "a number -1"), ("true", "a boolean True"), ('"5"', "text '5'"), ("null", "null")],
)
def test_a_refused_count_is_named_by_its_value(tmp_path, monkeypatch, capfd, total, named):
    previous = _workspace(tmp_path, monkeypatch, capfd, total)
    done = cli(["summary", "rel", "summary.json"], tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and f"rel/v3/stats.json: rows.total is {named}, not a count" in line, done.stderr
    assert (tmp_path / "summary.json").read_bytes() == previous
