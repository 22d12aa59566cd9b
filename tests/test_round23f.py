"""Round 23f: a hostile environment rather than hostile files, one table per class (every row failed before its
fix), each a real `python -m scripts` process (the standard descriptors are the process's own) or a real file:

1. A standard error that cannot take the line (`2>/dev/full`, `2>&-`, its reader gone) was exit 1 (the error
   line's OSError became a traceback no one could read), or, closed, sent the command's error and progress
   lines to standard output (Python's print(file=None)). The exit code now stands with the line lost
   (cli._say); a closed descriptor is held by /dev/null before anything is opened
   (__main__._hold_closed_standard_descriptors), so no output file takes its number.
2. A closed standard output (`>&-`) was found at the success line, after the outputs were in place: exit 2 with
   the output written. It is now refused before the work, the output as it was (cli.main).
3. An input whose name is not UTF-8 (`x\\xff.parquet`, a split folder so named) was "not a readable parquet file
   (UnicodeEncodeError: ...)", blaming a file that is fine: pyarrow opens UTF-8 paths only. The line now says
   the name is the cause (tables.unreadable, for every parquet reader of the stages).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.children import start_scripts
from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line, make_splits, snapshot, write_params

RELEASES = {"r": {"components": [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]}}


def _closing(*fds: int):
    """A child's preexec: `fds` closed before it executes, as a shell's `>&-` / `2>&-` leaves them."""

    def close() -> None:
        for fd in fds:
            os.close(fd)

    return close


def _run(root: Path, argv: list[str], **options) -> tuple[int, str, str]:
    process = start_scripts(root, *argv, **options)
    out, err = process.communicate(timeout=120)
    return process.returncode, out or "", err or ""


# ---------------------------------------------------------------- 1. a standard error that cannot take the line

FAILING = ["recipes", "blocker/recipes"]  # a folder output under a regular file: one line, at once


def stderr_full(root: Path) -> dict:
    return {"stderr": open("/dev/full", "w")}  # closed by the test


def stderr_closed(root: Path) -> dict:
    return {"preexec": _closing(2)}


def stdout_and_stderr_closed(root: Path) -> dict:
    return {"preexec": _closing(1, 2)}


def stderr_reader_gone(root: Path) -> dict:
    read, write = os.pipe()
    os.close(read)  # EPIPE on every write (Python ignores SIGPIPE)
    return {"stderr": os.fdopen(write, "w")}


@pytest.mark.parametrize(
    "case", fast_first([stderr_full, stderr_closed, stdout_and_stderr_closed, stderr_reader_gone], keep=1)
)
def test_a_standard_error_that_cannot_take_the_line_keeps_exit_2_and_stdout_clean(tmp_path, case):
    write_params(tmp_path)
    (tmp_path / "blocker").write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    options = case(tmp_path)
    try:
        code, out, _ = _run(tmp_path, FAILING, **options)
    finally:
        if "stderr" in options:
            options["stderr"].close()
    assert code == 2
    assert out == ""  # the error line never falls onto standard output
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- 2. a closed standard output, refused first


@pytest.mark.parametrize(
    "argv",
    fast_first(
        [["recipes", "data/recipes"], ["clean-rules", "data/clean/rules.json"], ["sample-data", "data/raw"]], keep=1
    ),
)
def test_a_closed_standard_output_is_refused_before_the_work(tmp_path, argv):
    write_params(tmp_path)
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    code, _, err = _run(tmp_path, argv, preexec=_closing(1))
    assert code == 2, err
    assert error_line(err) == "error: standard output: closed (`>&-`)"
    assert snapshot(tmp_path) == before  # no output, no temp, no lock


# ---------------------------------------------------------------- 3. an input name that is not UTF-8

NAME = os.fsdecode(b"x\xff")  # Python's surrogate escape of the byte, as os.listdir gives it


def clean_input(root: Path, run) -> list:
    table = root / "data" / f"{NAME}.parquet"
    shutil.copy(root / "data/splits/diffusiondb/train.parquet", table)
    return ["clean", "diffusiondb", table, "data/clean/d.parquet"]


def dedup_input(root: Path, run) -> list:
    table = root / "data" / f"{NAME}.parquet"
    shutil.copy(root / "data/splits/diffusiondb/train.parquet", table)
    return ["dedup", "diffusiondb", table, "data/dedup/d.parquet"]


def compose_splits(root: Path, run) -> list:
    shutil.copytree(root / "data/splits", root / "data" / NAME)
    return ["compose", "r", root / "data" / NAME, "data/compose/r"]


def release_splits(root: Path, run) -> list:
    shutil.copytree(root / "data/splits", root / "data" / NAME)
    return ["release", "r", root / "data" / NAME, "data/releases/r"]


@pytest.mark.parametrize("case", [clean_input, dedup_input, compose_splits, release_splits])
def test_an_input_name_that_is_not_utf8_is_named_as_the_cause(tmp_path, monkeypatch, capfd, case):
    write_params(tmp_path, releases=RELEASES)
    make_splits(tmp_path, n=8)
    argv = case(tmp_path, lambda argv: cli(argv, tmp_path, monkeypatch, capfd))
    before = snapshot(tmp_path / "data")
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.endswith("its name is not UTF-8, which pyarrow cannot open; rename it"), line
    assert "x\\xff" in line  # the name, printable-escaped
    assert snapshot(tmp_path / "data") == before
