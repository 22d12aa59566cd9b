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
4. A memory limit (`ulimit -v`) in a library's own words was told as something else: the loader's `failed to map
   segment from shared object` as "a bad environment variable ..., or a broken install?", Arrow's `Failed to
   launch worker thread` as unreadable parquet data, and a MemoryError while the import's line was built was a
   traceback (exit 1). Each is the out-of-memory line (cli._library_out_of_memory, and main's MemoryError); a
   failed run also skips the interpreter's teardown, as an interrupted one did (dedup under `ulimit -v 250000`
   printed its line, then SIGSEGV, exit 139; measured by hand, the threshold is the machine's).
5. A descriptor limit (`ulimit -n`) was told as the file's fault: a split table pyarrow could not open (EMFILE) was
   "not a readable parquet file", and an old copy rmtree could not delete was "a file in it is immutable or a folder
   read-only" (release under `ulimit -n 6` left `.train.tmp-old` so named). Each line now gives the system's reason
   (tables.unreadable, temps.removal_failure).
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.children import start_scripts
from helpers.commands import cli
from helpers.repos import REPO
from helpers.tiers import fast_first
from helpers.workspace import error_line, make_splits, snapshot, write_params
from scripts import cli as cli_module
from scripts.lib import import_env, temps

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


# ---------------------------------------------------------------- 4. a memory limit in a library's own words

MAPPED = "/venv/site-packages/pandas/_libs/tslibs/timestamps.so: failed to map segment from shared object"
THREAD = "Unknown error: Failed to launch worker thread: Resource temporarily unavailable"


def _failing_import(monkeypatch, exc: Exception) -> None:
    real = cli_module.importlib.import_module

    def import_module(name, *args):
        if name == "scripts.compose":
            raise exc
        return real(name, *args)

    monkeypatch.setattr(cli_module.importlib, "import_module", import_module)


def loader_cannot_map(root: Path, monkeypatch) -> list:  # the command's module: its libraries' .so files
    _failing_import(monkeypatch, ImportError(MAPPED))
    return ["compose", "r", "data/splits", "data/compose/r"]


def memory_error_while_the_line_is_built(root: Path, monkeypatch) -> list:  # its lazy imports, under the limit
    _failing_import(monkeypatch, ImportError("No module named 'pandas'", name="pandas"))

    def no_memory(text: str) -> str:
        raise MemoryError

    monkeypatch.setattr(import_env, "exception_line", no_memory)  # what import_failure_line builds first
    return ["compose", "r", "data/splits", "data/compose/r"]


def _no_thread(*args, **kwargs):
    raise pa.lib.ArrowException(THREAD)


def dedup_read_without_a_thread(root: Path, monkeypatch) -> list:
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", _no_thread)
    return ["dedup", "diffusiondb", "data/splits/diffusiondb/train.parquet", "data/dedup/d.parquet"]


def ingest_read_without_a_thread(root: Path, monkeypatch) -> list:
    shutil.copytree(REPO / "data/raw/gustavosta", root / "data/raw/gustavosta")
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", _no_thread)
    return ["ingest", "gustavosta", "data/prompts/gustavosta.parquet"]


@pytest.mark.parametrize(
    "case",
    [
        loader_cannot_map,
        memory_error_while_the_line_is_built,
        dedup_read_without_a_thread,
        ingest_read_without_a_thread,
    ],
)
def test_a_memory_limit_in_a_library_s_own_words_is_the_out_of_memory_line(tmp_path, monkeypatch, capfd, case):
    write_params(tmp_path, releases=RELEASES)
    make_splits(tmp_path, n=8)
    argv = case(tmp_path, monkeypatch)
    before = snapshot(tmp_path / "data")
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == f"error: {cli_module.OUT_OF_MEMORY}"
    assert snapshot(tmp_path / "data") == before


# ---------------------------------------------------------------- 5. a descriptor limit told as the file's fault

EMFILE = OSError(errno.EMFILE, "Failed to open local file. Detail: [errno 24] Too many open files")


def _no_descriptor(*args, **kwargs):
    raise EMFILE


def _split_tables_out_of_descriptors(monkeypatch) -> None:
    real = pq.ParquetFile.__init__

    def init(self, source, *args, **kwargs):
        named = os.readlink(f"/proc/self/fd/{source.fileno()}") if hasattr(source, "fileno") else str(source)
        if "splits" in named:  # a split table is read from the file table_in's path opened (tables.parquet_source)
            raise EMFILE
        real(self, source, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "__init__", init)


def compose_cannot_open(root: Path, monkeypatch, capfd) -> list:
    _split_tables_out_of_descriptors(monkeypatch)
    return ["compose", "r", "data/splits", "data/compose/r"]


def _rmtree_out_of_descriptors(monkeypatch) -> None:
    real = shutil.rmtree

    def rmtree(path, ignore_errors=False, onerror=None, **kwargs):
        if ".tmp-old" not in str(path):
            return real(path, ignore_errors=ignore_errors, onerror=onerror, **kwargs)
        if onerror is not None:
            onerror(os.open, path, (OSError, EMFILE, None))
        elif not ignore_errors:  # ignore_errors: the folder is left, as rmtree leaves it, and no reason is told
            raise EMFILE

    monkeypatch.setattr(temps.shutil, "rmtree", rmtree)


def release_old_copy(root: Path, monkeypatch, capfd) -> list:
    argv = ["release", "r", "data/splits", "data/releases/r"]
    assert cli(argv, root, monkeypatch, capfd).returncode == 0
    _rmtree_out_of_descriptors(monkeypatch)
    return argv


def recipes_old_copy(root: Path, monkeypatch, capfd) -> list:
    assert cli(["recipes", "data/recipes"], root, monkeypatch, capfd).returncode == 0
    write_params(root, releases={**RELEASES, "q": copy.deepcopy(RELEASES["r"])})  # a new recipe: the folder is replaced
    _rmtree_out_of_descriptors(monkeypatch)
    return ["recipes", "data/recipes"]


@pytest.mark.parametrize("case", [compose_cannot_open, release_old_copy, recipes_old_copy])
def test_a_descriptor_limit_is_told_as_such_not_as_the_file_s_fault(tmp_path, monkeypatch, capfd, case):
    write_params(tmp_path, releases=RELEASES)
    make_splits(tmp_path, n=8)
    argv = case(tmp_path, monkeypatch, capfd)
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "Too many open files" in line, line  # the reason, whole (round 28d adds what it means for an old copy)
    assert "not a readable parquet" not in line and "immutable" not in line, line
