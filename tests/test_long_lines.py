"""An error line is at most about 2,000 characters (cli._capped): its start (what failed, the file) and its end
(what to do) kept, the middle cut and counted. A value quoted whole (a 100 KB column name, a 50 KB option, a
path) made an error line of that size wherever no message cut it itself."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.workspace import write_params

LONG = 100_000


def _raiser(exc: BaseException):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


def a_column_named_twice(root: Path, monkeypatch) -> list[str]:
    """A parquet input whose 100 KB column name appears twice (pyarrow writes such files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = "c" * LONG
    texts = pa.array(["a red fox", "a blue boat"])
    table = pa.Table.from_arrays([pa.array(["a", "b"]), texts, texts, texts], names=["id", "text", name, name])
    pq.write_table(table, root / "in.parquet")
    write_params(root, sources={})
    return ["dedup", "s", "in.parquet", "out.parquet"]


def an_unknown_long_option(root: Path, monkeypatch) -> list[str]:
    return ["split", "--" + "o" * LONG, "x"]


def a_long_data_error(root: Path, monkeypatch) -> list[str]:
    import scripts.cli
    from scripts.lib.errors import DataError

    failure = DataError("in.parquet: row 7: " + "v" * LONG + " is no prompt; fix the row")
    monkeypatch.setattr(scripts.cli, "build_app", lambda argv: _raiser(failure))
    return ["summary", "x"]


def a_long_path_os_error(root: Path, monkeypatch) -> list[str]:
    import scripts.cli

    failure = FileNotFoundError(errno.ENOENT, "No such file or directory", "d/" * (LONG // 2))
    monkeypatch.setattr(scripts.cli, "build_app", lambda argv: _raiser(failure))
    return ["summary", "x"]


@pytest.mark.parametrize(
    ("make", "start", "end"),
    [
        pytest.param(
            a_column_named_twice, "error: in.parquet: column 'ccc", "must be unique", id="a 100 KB column name twice"
        ),
        pytest.param(an_unknown_long_option, "error: No such option: --ooo", "", id="a 100 KB option"),
        pytest.param(
            a_long_data_error,
            "error: in.parquet: row 7: vvv",
            "is no prompt; fix the row",
            id="a data error quoting 100 KB",
        ),
        pytest.param(
            a_long_path_os_error, "error: d/d/d/", "No such file or directory", id="a 100 KB path in an OSError"
        ),
    ],
)
def test_an_error_line_quoting_a_huge_value_is_cut_to_its_head_and_tail(make, start, end, tmp_path, monkeypatch, capfd):
    argv = make(tmp_path, monkeypatch)
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr[:500]
    line = result.stderr.strip()
    assert "\n" not in line and len(line) <= 2100, len(line)
    assert line.startswith(start) and line.endswith(end), (line[:200], line[-200:])
    assert "characters cut" in line or len(line) < 1000, line[:300]
    assert not (tmp_path / "out.parquet").exists()


def test_a_line_under_the_cap_is_printed_whole(tmp_path, monkeypatch, capfd):
    import scripts.cli
    from scripts.lib.errors import DataError

    text = "in.parquet: row 7: " + "v" * 1900
    monkeypatch.setattr(scripts.cli, "build_app", lambda argv: _raiser(DataError(text)))
    result = cli(["summary", "x"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and result.stderr == f"error: {text}\n"
