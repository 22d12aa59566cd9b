"""Round 15c, one table per class (every row failed before its fix), on real processes and files:

1. A signal other than SIGINT and SIGTERM whose default action ends the process (SIGHUP: the terminal or
   ssh session closed; SIGQUIT: Ctrl-backslash; SIGXCPU: a CPU-time limit) killed a command silently: no
   line, exit -1/-3/-24, its `.tmp-new` output and `.tmp-lock` left behind. Each now stops the command as
   SIGINT does: exit 128 + signal, the one `interrupted (NAME)` line, nothing left.
2. A signal between the moment a temp was made and the `try` that removes it left it behind: the lock's
   `.T.tmp-lock.XXXXXXXX` (made by mkstemp, then linked to `.T.tmp-lock`; row 1 of class 1 hit it now and
   then), release's `.T.staging-XXXXXXXX` (untagged, so no later run could prove it its own) and an external
   sort's `.T.tmp-spill`. Each is now made inside `interrupts.held()`, in the `try` that removes it.
3. Standard output that cannot take what a command prints: its reader gone (`| head -1`) was exit 1 and no
   line (click's own EPIPE handling), closed (`>&-`) was exit 0 with the table lost, `> /dev/full` was
   `error: No space left on device`, naming no output. Each is now `error: standard output: REASON`, exit 2.
4. A MemoryError (a memory limit, `ulimit -v`) that a handler for a library's errors caught became a line
   blaming the data, or a traceback: release said its image "was replaced after ingest", a rule set's
   handler failed on the empty message (IndexError, 80 lines), split's input was "not a readable parquet
   file". Any failure a MemoryError caused is now the one `out of memory` line.
5. The terminal width from the environment laid out `--help` as given: COLUMNS=99999999 printed 500 MB in
   20 s and went on, 1e21 was an OverflowError traceback, 0 (or TERMINAL_WIDTH=0) printed the help as one
   empty line, TERMINAL_WIDTH=99999999 rendered for minutes. A width outside 40..1000 is now ignored.
6. A tool stopped by a signal sent to it alone (`kill PID`, a CI's cancel) left what its child started
   running: replay-history waited for the `dvc repro` it ran (Popen's exit only waits), minutes;
   pr-build's and pr-comment's dvc were SIGKILLed by subprocess.run, and the stage it ran went on. Each
   child now leads a process group of its own, ended (SIGTERM, then SIGKILL) when the tool stops
   (scripts/tools/child_group.py).
7. A bad value of a variable Arrow reads (ARROW_IO_THREADS=0, ARROW_DEFAULT_MEMORY_POOL=bogus,
   ARROW_USER_SIMD_LEVEL=bogus or max) was ignored by Arrow with a C++ line of its own on stderr, beside the
   command's output at exit 0. It is now one line naming the variable, as HF_HUB_ETAG_TIMEOUT's is.
8. A MemoryError while an image's header or EXIF block was read was taken for a broken block: no
   orientation (a phone photo's width and height recorded unturned) or an unknown size, at exit 0. It
   now goes on up, to the `out of memory` line.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.children import scripts_env, start_scripts
from helpers.commands import cli
from helpers.workspace import error_line, leftovers, make_splits, write_params
from scripts.lib import external_sort, interrupts
from scripts.lib.interrupts import Interrupted

LINE = "a red fox number {} jumping over the lazy dog {}\n"


def write_lines(path: Path, count: int) -> None:
    """`count` distinct prompts (a few seconds of clean-text on two cores at 200k)."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(LINE.format(i, i * 7919 % 100003))


def start(root: Path, argv: list[str], cpu_seconds: int | None = None) -> subprocess.Popen:
    """`python -m scripts ARGV` in its own session (a terminal's signals reach its whole group)."""

    def cpu_limit() -> None:
        if cpu_seconds is not None:  # a soft CPU limit: SIGXCPU when it is spent, no SIGKILL after
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, resource.RLIM_INFINITY))

    env = scripts_env(OMP_NUM_THREADS="1", T2I_PROGRESS_EVERY_S="3600")
    return start_scripts(root, *argv, env=env, preexec=cpu_limit)


def wait_for_temp(root: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the command has opened its output's temp file (it is mid-run), or it ended."""
    deadline = time.monotonic() + timeout
    while not leftovers(root) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


# row -> (signal, command, prompts in its input)
SIGNAL_ROWS = {
    "SIGHUP-clean-text": (signal.SIGHUP, ["clean-text", "in.txt", "out.jsonl"], 200_000),
    "SIGQUIT-clean-text": (signal.SIGQUIT, ["clean-text", "in.txt", "out.jsonl"], 200_000),
    "SIGHUP-dedup-text": (signal.SIGHUP, ["dedup-text", "in.txt", "out.jsonl"], 20_000),
    "SIGXCPU-clean-text": (signal.SIGXCPU, ["clean-text", "in.txt", "out.jsonl"], 200_000),
}


@pytest.mark.parametrize(
    "row", [pytest.param(row, marks=[pytest.mark.slow] if "dedup" in row else []) for row in SIGNAL_ROWS]
)
def test_a_signal_whose_default_kills_stops_the_command_with_one_line(tmp_path, row):
    signum, argv, prompts = SIGNAL_ROWS[row]
    write_params(tmp_path)
    write_lines(tmp_path / "in.txt", prompts)
    if signum == signal.SIGXCPU:  # the real thing: a CPU-time limit the run outlasts
        proc = start(tmp_path, argv, cpu_seconds=1)
    else:
        proc = start(tmp_path, argv)
        wait_for_temp(tmp_path, proc)
        assert proc.poll() is None, "the command ended before the signal"
        os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert error_line(err) == f"interrupted ({name})"
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "params.yaml"]


def signal_after(monkeypatch, owner, name: str, when) -> None:
    """`owner.name` does its work, then this process gets SIGINT (before the caller sees the result) when
    `when(args, kwargs)`: the signal lands right after the temp is made."""
    real = getattr(owner, name)

    def made_then_signalled(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(args, kwargs):
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(owner, name, made_then_signalled)


def prefixed(part: str):
    return lambda args, kwargs: part in kwargs.get("prefix", "")


# row -> (command, the tempfile function whose temp the signal follows, which of its calls)
TEMP_ROWS = {
    "clean-text-lock": (["clean-text", "in.txt", "out.jsonl"], "mkstemp", prefixed("tmp-lock")),
    "release-lock": (["release", "v2", "data/splits", "rel"], "mkstemp", prefixed("tmp-lock")),
    "release-staging": (["release", "v2", "data/splits", "rel"], "mkdtemp", prefixed("staging-")),
}


@pytest.mark.parametrize("row", TEMP_ROWS)
def test_a_signal_right_after_a_temp_is_made_leaves_nothing(tmp_path, monkeypatch, capfd, row):
    import tempfile

    argv, name, when = TEMP_ROWS[row]
    write_params(tmp_path)
    write_lines(tmp_path / "in.txt", 100)
    make_splits(tmp_path, n=8)
    signal_after(monkeypatch, tempfile, name, when)
    try:
        result = cli(argv, tmp_path, monkeypatch, capfd)
    finally:
        interrupts.forget()
    assert result.returncode == 130, result.stderr
    assert error_line(result.stderr) == "interrupted (SIGINT)"
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "rel").exists()


def test_a_signal_right_after_the_spill_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    """The external sort of captions and compose: its spill folder made, then the signal."""
    from scripts.cli import _install_signal_handlers, _restore_signal_handlers

    signal_after(monkeypatch, external_sort, "mark_temp", lambda args, kwargs: True)
    handlers = _install_signal_handlers()
    try:
        with pytest.raises(Interrupted), external_sort.sorted_rows_to(tmp_path / "out.parquet", np.arange(3)) as spill:
            spill.add(pa.table({"x": [3, 2, 1]}), 0)
    finally:
        _restore_signal_handlers(handlers)
        interrupts.forget()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def run_with_stdout(root: Path, argv: list[str], stdout: str) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` whose standard output is a pipe its reader closed, closed, or /dev/full."""
    env = scripts_env()
    command = [sys.executable, "-m", "scripts", *argv]
    if stdout == "reader-gone":
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # type: ignore[union-attr]
        err = proc.stderr.read()  # type: ignore[union-attr]
        return subprocess.CompletedProcess(command, proc.wait(timeout=120), "", err)
    if stdout == "closed":
        return subprocess.run(
            command, cwd=root, env=env, stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1)
        )
    with open("/dev/full", "w") as full:
        return subprocess.run(command, cwd=root, env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)


EMPTY_HISTORY = ["history-table", "--releases", "e", "--dedup", "e", "--prefilter", "e"]
# row -> (command, its standard output, the reason its line gives)
STDOUT_ROWS = {
    "history-table-reader-gone": (EMPTY_HISTORY, "reader-gone", "Broken pipe"),
    "split-help-reader-gone": (["split", "--help"], "reader-gone", "Broken pipe"),
    "history-table-closed": (EMPTY_HISTORY, "closed", "closed"),
    "compose-help-closed": (["compose", "--help"], "closed", "closed"),
    "history-table-full": (EMPTY_HISTORY, "full", "No space left on device"),
    "summary-help-full": (["summary", "--help"], "full", "No space left on device"),
}


@pytest.mark.parametrize("row", STDOUT_ROWS)
def test_standard_output_that_cannot_be_written_is_one_line_naming_it(tmp_path, row):
    argv, stdout, reason = STDOUT_ROWS[row]
    (tmp_path / "e").mkdir()
    result = run_with_stdout(tmp_path, argv, stdout)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert error_line(result.stderr).startswith(f"error: standard output: {reason}")


def memory_error(*args, **kwargs):
    raise MemoryError


# row -> (command, (module, attribute) that runs out of memory)
MEMORY_ROWS = {
    "release-image-check": (["release", "v2", "data/splits", "rel"], ("scripts.lib.pixels", "opened")),
    "release-rule-set": (["release", "v2", "data/splits", "rel"], ("scripts.lib.cleaning.rule_sets", "config_text")),
    "split-input": (
        ["split", "diffusiondb", "data/splits/diffusiondb/train.parquet", "out"],
        ("pyarrow.parquet", "ParquetFile"),
    ),
}


@pytest.mark.parametrize("row", MEMORY_ROWS)
def test_a_memory_error_is_the_out_of_memory_line_whatever_caught_it(tmp_path, monkeypatch, capfd, row):
    import importlib

    from scripts.lib.cleaning import rule_sets

    argv, (module, name) = MEMORY_ROWS[row]
    write_params(tmp_path)
    make_splits(tmp_path, n=8)
    rule_sets._read_rule_set.cache_clear()  # read again, by the patched reader
    monkeypatch.setattr(importlib.import_module(module), name, memory_error)
    try:
        result = cli(argv, tmp_path, monkeypatch, capfd)
    finally:
        rule_sets._read_rule_set.cache_clear()
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == "error: out of memory (a smaller input, batch_rows or workers may fit)"
    assert leftovers(tmp_path) == [] and not (tmp_path / "rel").exists() and not (tmp_path / "out").exists()


# row -> (environment, command)
WIDTH_ROWS = {
    "COLUMNS-0": ({"COLUMNS": "0"}, ["split", "--help"]),
    "COLUMNS-99999999": ({"COLUMNS": "99999999"}, ["summary", "--help"]),
    "COLUMNS-1e21": ({"COLUMNS": "999999999999999999999"}, ["compose", "--help"]),
    "TERMINAL_WIDTH-0": ({"TERMINAL_WIDTH": "0"}, ["release", "--help"]),
    "TERMINAL_WIDTH-99999999": ({"TERMINAL_WIDTH": "99999999"}, ["captions", "--help"]),
}


@pytest.mark.parametrize("row", WIDTH_ROWS)
def test_a_terminal_width_out_of_range_still_prints_the_help(tmp_path, row):
    variables, argv = WIDTH_ROWS[row]
    env = scripts_env(**variables)

    def one_mb_at_most() -> None:  # the old 500 MB of help stops here (EFBIG) instead of filling the disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    with (tmp_path / "help.txt").open("w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "scripts", *argv],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            preexec_fn=one_mb_at_most,
        )
    text = (tmp_path / "help.txt").read_text(encoding="utf-8")
    assert (result.returncode, result.stderr) == (0, "")
    assert f"Usage: python -m scripts {argv[0]}" in text and "--help" in text and len(text) < 20_000


GRANDCHILD = "sleep 10 & echo $! > grandchild; echo started; wait"  # a child of 10 s with a child of its own


def replay_run(tmp_path: Path, monkeypatch) -> None:
    from scripts.tools.replay_history import _run

    _run(["bash", "-c", GRANDCHILD], tmp_path, say="replay-history: v2 (1/5)")


def as_python(tmp_path: Path, monkeypatch) -> None:
    """`python -m dvc ...` (sys.executable) runs GRANDCHILD instead."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/bash\n{GRANDCHILD}\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))


def pr_build_dvc(tmp_path: Path, monkeypatch) -> None:
    from scripts.tools import pr_build

    as_python(tmp_path, monkeypatch)
    pr_build.dvc(["repro"], tmp_path)


def pr_comment_dvc(tmp_path: Path, monkeypatch) -> None:
    from scripts.tools import pr_comment

    as_python(tmp_path, monkeypatch)
    pr_comment.dvc(["pull"], str(tmp_path))


# row -> (the signal, sent to this process alone as `kill PID` sends it; a tool's call that runs a child)
CHILD_ROWS = {
    "replay-history-SIGTERM": (signal.SIGTERM, replay_run),
    "replay-history-SIGINT": (signal.SIGINT, replay_run),
    "replay-history-SIGHUP": (signal.SIGHUP, replay_run),
    "pr-build-dvc-SIGTERM": (signal.SIGTERM, pr_build_dvc),
    "pr-build-dvc-SIGHUP": (signal.SIGHUP, pr_build_dvc),
    "pr-comment-dvc-SIGINT": (signal.SIGINT, pr_comment_dvc),
}


@pytest.mark.parametrize("row", CHILD_ROWS)
def test_a_tool_stopped_by_a_signal_stops_what_it_runs_at_once(tmp_path, monkeypatch, row):
    """The tool's child runs 10 s and has a child of its own: both end within seconds of the signal."""
    from scripts.cli import _install_signal_handlers, _restore_signal_handlers

    signum, call = CHILD_ROWS[row]

    def signal_once_started() -> None:
        while not (tmp_path / "grandchild").exists():
            time.sleep(0.02)
        time.sleep(0.2)
        os.kill(os.getpid(), signum)

    ignored = signal.signal(signum, signal.SIG_DFL)  # under nohup (SIGHUP) or a script's `&` (SIGINT): a terminal's
    handlers = _install_signal_handlers()
    sender = threading.Thread(target=signal_once_started, daemon=True)
    start = time.monotonic()
    try:
        sender.start()
        with pytest.raises(Interrupted):
            call(tmp_path, monkeypatch)
    finally:
        _restore_signal_handlers(handlers)
        signal.signal(signum, ignored)
        interrupts.forget()
    assert time.monotonic() - start < 5
    grandchild = int((tmp_path / "grandchild").read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{grandchild}/status")  # gone, or dead and not reaped yet
    assert not status.exists() or "zombie" in status.read_text(), status.read_text()


ARROW_ROWS = {
    "ARROW_IO_THREADS-0": ("ARROW_IO_THREADS", "0"),
    "ARROW_IO_THREADS-too-many": ("ARROW_IO_THREADS", "99999999999"),
    "ARROW_DEFAULT_MEMORY_POOL-bogus": ("ARROW_DEFAULT_MEMORY_POOL", "bogus"),
    "ARROW_USER_SIMD_LEVEL-max": ("ARROW_USER_SIMD_LEVEL", "max"),
}


@pytest.mark.parametrize("row", ARROW_ROWS)
def test_a_bad_arrow_variable_is_one_line_naming_it(tmp_path, row):
    name, value = ARROW_ROWS[row]
    write_params(tmp_path)
    make_splits(tmp_path, n=8)
    env = scripts_env(**{name: value})
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "release", "v2", "data/splits", "rel"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.startswith(f"error: {name}: must be ") and value not in line
    assert not (tmp_path / "rel").exists() and leftovers(tmp_path) == []


def jpeg_turned() -> bytes:
    """A 4x2 JPEG whose EXIF orientation (6) shows it 2x4."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def shown_size_of_jpeg(run_out_of_memory) -> object:
    import io

    from scripts.lib.pixels import opened, shown_size

    with opened(io.BytesIO(jpeg_turned()), "x.jpg") as image:
        run_out_of_memory()  # PIL reads the EXIF block when shown_size asks for it, not before
        return shown_size(image)


def orientation_of_jpeg(run_out_of_memory) -> object:
    import io

    from PIL import Image

    from scripts.lib.pixels import exif_orientation

    block = Image.open(io.BytesIO(jpeg_turned())).info["exif"]
    run_out_of_memory()
    return exif_orientation(block)


def size_of_jpeg_head(run_out_of_memory) -> object:
    from scripts.lib.pixels import image_size

    run_out_of_memory()
    return image_size(jpeg_turned(), "x.jpg")


# row -> (what reads the header, (module, attribute) that runs out of memory)
HEADER_ROWS = {
    "shown_size": (shown_size_of_jpeg, ("PIL.Image", "Image.getexif")),
    "exif_orientation": (orientation_of_jpeg, ("PIL.Image", "Exif.load")),
    "image_size": (size_of_jpeg_head, ("scripts.lib.pixels", "opened")),
}


@pytest.mark.parametrize("row", HEADER_ROWS)
def test_a_memory_error_reading_an_image_header_is_no_broken_block(monkeypatch, row):
    import importlib

    read, (module, path) = HEADER_ROWS[row]
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    with pytest.raises(MemoryError):
        read(lambda: monkeypatch.setattr(owner, name, memory_error))


# ---------------------------------------------------------------- params-doc in a clone
def reference(edit) -> str:
    """docs/params.md as the generator writes it, then `edit`ed (an older version of it, as a clone holds)."""
    from scripts.tools.params_doc import render

    return edit(render())


DOC_ROWS = {  # row -> (what the output path holds, whether params-doc may replace it)
    "a clone's reference, one key's row older": (lambda t: t.replace("1 to 2^24", "1 to 2^20", 1), True),
    "a clone's reference, a section fewer": (lambda t: t[: t.rindex("\n## ")] + "\n", True),
    "a clone's reference, a description older": (lambda t: t.replace("longer", "long", 1), True),
    "params.yaml": (lambda t: "dedup:\n  threshold: 0.7\n", False),
    "the reference's title over a user's notes": (lambda t: "# params.yaml reference\n\nmy notes\n", False),
}


@pytest.mark.parametrize("row", DOC_ROWS)
def test_params_doc_regenerates_a_clones_reference_and_nothing_else(tmp_path, monkeypatch, capfd, row):
    """CONTRIBUTING says to run `params-doc docs/params.md` after changing a model, but a clone's
    reference carries no mark (git keeps none) and its bytes are no longer what it would write: it was
    refused. A file opening with the generated reference's title and its "Generated by" line is the
    command's own; any other stays refused."""
    from scripts.tools.params_doc import render

    edit, replaceable = DOC_ROWS[row]
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "params.md"
    target.write_text(reference(edit), encoding="utf-8")
    before = target.read_text(encoding="utf-8")
    result = cli(["params-doc", "docs/params.md"], tmp_path, monkeypatch, capfd)
    if replaceable:
        assert result.returncode == 0, result.stderr
        assert target.read_text(encoding="utf-8") == render() != before
    else:
        assert result.returncode == 2 and "cannot prove it wrote it" in error_line(result.stderr)
        assert target.read_text(encoding="utf-8") == before
