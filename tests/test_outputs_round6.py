"""The sixth hostile round's output breaks, one table each (every row failed before its fix): a user's file
named as a folder the command writes was deleted; a release could mix two runs (a signal or a failure
between its entries' renames); an old copy that could not be deleted was left at exit 0 and blocked every
later run; simpletuner's outputs could nest; an input named through a link was not known as the output;
a failed run left the folders it made; a success line or a non-UTF-8 name printed raw or named a temp.
Real processes where the command is the subject, the step itself where a fault must land at one point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.repos import REPO
from helpers.trees import tree
from helpers.workspace import error_line, leftovers, make_splits, write_params
from helpers.workspace import run_scripts as run


def one_error(err: str) -> str:
    """The one `error:` line (a stage's progress summaries beside it), no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def refused(root: Path, *argv: str, says: str = "") -> str:
    before = tree(root)
    done = run(root, *argv)
    line = error_line(done.stderr)
    assert done.returncode == 2 and says in line, done.stderr
    assert tree(root) == before
    return line


# ---------------------------------------------------------------- a file named as a folder the command writes


def recipes_out(root: Path) -> list[str]:
    write_params(root)
    return ["recipes", "rec"]


def sample_data_out(root: Path) -> list[str]:
    write_params(root)
    return ["sample-data", "rec"]


NAMED_AS_FOLDERS = {  # (the command, the user's entry in its output folder: a file, or a link)
    "a file named as recipes' release/ folder": (recipes_out, "release", "file"),
    "a link named as recipes' compose/ folder": (recipes_out, "compose", "link"),
    "a file named as sample-data's chatgpt/ folder": (sample_data_out, "chatgpt", "file"),
    "a link named as sample-data's dalle3/ folder": (sample_data_out, "dalle3", "link"),
}


@pytest.mark.parametrize("make, name, kind", NAMED_AS_FOLDERS.values(), ids=NAMED_AS_FOLDERS)
def test_a_users_file_named_as_a_folder_the_command_writes_stays(tmp_path, make, name, kind):
    argv = make(tmp_path)
    (tmp_path / "rec").mkdir()
    if kind == "file":
        (tmp_path / "rec" / name).write_text("my notes\n", encoding="utf-8")
    else:
        (tmp_path / "notes.txt").write_text("my notes\n", encoding="utf-8")
        (tmp_path / "rec" / name).symlink_to(tmp_path / "notes.txt")
    refused(tmp_path, *argv, says="which this command did not write")


# ---------------------------------------------------------------- a release's entries, all or none


def two_entries(root: Path) -> list[tuple[Path, Path]]:
    """Three outputs (two folders, a file) with an old version in place and a new one staged."""
    from scripts.lib.marks import mark_file, mark_folder

    (root / "out").mkdir()
    (root / "new").mkdir()
    pairs = []
    for name in ("a", "b"):
        for side in ("out", "new"):
            (root / side / name).mkdir()
            (root / side / name / "x.txt").write_text(f"{side}\n", encoding="utf-8")
            mark_folder(root / side / name)
        pairs.append((root / "new" / name, root / "out" / name))
    for side in ("out", "new"):
        (root / side / "c.json").write_text(f"{side}\n", encoding="utf-8")
        mark_file(root / side / "c.json")
    pairs.append((root / "new" / "c.json", root / "out" / "c.json"))
    return pairs


def versions(root: Path) -> set[str]:
    return {(root / "out" / n).read_text(encoding="utf-8") for n in ("a/x.txt", "b/x.txt", "c.json")}


@pytest.mark.parametrize("at", [1, 3, 4, 6])  # renames: 3 aside, then 3 in
def test_a_failure_between_a_releases_renames_puts_every_name_back(tmp_path, at):
    """Each entry was replaced on its own: a failure at the next one left the release half new."""
    import scripts.lib.io as io

    pairs = two_entries(tmp_path)
    calls, real = {"n": 0}, os.replace

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == at:
            raise PermissionError(1, "Operation not permitted", str(args[0]))
        return real(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io.os, "replace", failing)
        with pytest.raises(OSError):
            io.replace_together(pairs)
    assert versions(tmp_path) == {"out\n"}
    assert all((tmp_path / "new" / name).exists() for name in ("a", "b", "c.json"))


@pytest.mark.parametrize("at", [1, 3, 5])
def test_a_signal_between_a_releases_renames_waits_for_the_last_one(tmp_path, at):
    import scripts.lib.io as io
    from scripts.cli import _install_signal_handlers, _restore_signal_handlers
    from scripts.lib.interrupts import Interrupted, forget
    from scripts.lib.temps import is_our_temp

    pairs = two_entries(tmp_path)
    calls, real = {"n": 0}, os.replace

    def signalled(*args):
        result = real(*args)
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    old = _install_signal_handlers()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(io.os, "replace", signalled)
            with pytest.raises(Interrupted):
                io.replace_together(pairs)
    finally:
        _restore_signal_handlers(old)
        forget()
    assert versions(tmp_path) == {"new\n"}
    assert all(is_our_temp(tmp_path / name) for name in leftovers(tmp_path))


def release_workspace(root: Path) -> None:
    write_params(root)
    make_splits(root)
    assert run(root, "release", "v2", "data/splits", "rel").returncode == 0


def patched_release(root: Path, patch: str) -> subprocess.CompletedProcess:
    """`release v2 data/splits rel` in a process that first runs `patch` (a fault at one exact point)."""
    script = (
        f"import sys\n{patch}\nfrom scripts.cli import main\nsys.exit(main(['release', 'v2', 'data/splits', 'rel']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


FAIL_AT = """
import os, scripts.lib.paths as paths
calls, moving = [0], [False]
def replace(a, b, _real=os.replace):  # the Nth rename while the release's entries move into place fails
    if moving[0]:
        calls[0] += 1
        if calls[0] == {n}:
            raise PermissionError(1, "Operation not permitted", str(b))
    return _real(a, b)
def move_into_place(*args, _real=paths.move_into_place):
    moving[0] = True
    try:
        return _real(*args)
    finally:
        moving[0] = False
os.replace, paths.move_into_place = replace, move_into_place
"""


# CI fails the second move; the later ones run in the slow tier (CI's 10 minutes)
@pytest.mark.parametrize("n", [2, pytest.param(7, marks=pytest.mark.slow), pytest.param(9, marks=pytest.mark.slow)])
def test_a_release_that_fails_half_way_keeps_the_previous_release_whole(tmp_path, n):
    """The run writes the same bytes again, so the files themselves (inodes) tell old from new."""
    release_workspace(tmp_path)
    before = inodes(tmp_path / "rel")
    done = patched_release(tmp_path, FAIL_AT.format(n=n))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert inodes(tmp_path / "rel") == before


def inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.lstat().st_ino for p in root.rglob("*")}


# ---------------------------------------------------------------- an old copy that cannot be deleted


NO_RMTREE = "import shutil\nshutil.rmtree = lambda *args, **kwargs: None  # a file in it is immutable\n"


def patched(root: Path, argv: list[str], patch: str) -> subprocess.CompletedProcess:
    script = f"import sys\n{patch}\nfrom scripts.cli import main\nsys.exit(main({argv!r}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


UNDELETABLE = {  # a command replacing its folder output, whose old copy stays
    "recipes": (recipes_out, ["recipes", "rec"], "rec"),
    "sample-data": (sample_data_out, ["sample-data", "rec"], "rec"),
    "release": (lambda root: release_workspace(root) or [], ["release", "v2", "data/splits", "rel"], "rel/train"),
}


@pytest.mark.parametrize("make, argv, output", UNDELETABLE.values(), ids=UNDELETABLE)
def test_an_old_copy_that_cannot_be_deleted_is_said_not_left(tmp_path, make, argv, output):
    """rmtree(ignore_errors=True) left `.T.tmp-old` at exit 0, and the next run failed `Directory not empty`."""
    make(tmp_path)
    assert run(tmp_path, *argv).returncode == 0
    done = patched(tmp_path, argv, NO_RMTREE)
    line = one_error(done.stderr)
    assert done.returncode == 2 and "cannot be deleted" in line and "delete it by hand" in line, done.stderr
    assert (tmp_path / output).is_dir() and leftovers(tmp_path)  # the new output in place, the old beside it
    assert run(tmp_path, *argv).returncode == 0  # the next run deletes the old copy, tagged as ours
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- simpletuner's outputs never nest


DALLE3 = REPO / "data" / "raw" / "dalle3"
NESTED = {  # simpletuner's extra arguments whose outputs nest
    "--txt-dir inside --data-dir": ["--data-dir", "sdata", "--txt-dir", "sdata/txt"],
    "--data-dir inside --txt-dir": ["--data-dir", "txt/data", "--txt-dir", "txt"],
    "--txt-dir the same folder as --data-dir": ["--data-dir", "sdata", "--txt-dir", "./sdata"],
}


@pytest.mark.parametrize("extra", NESTED.values(), ids=NESTED)
def test_simpletuner_refuses_outputs_inside_each_other(tmp_path, extra):
    refused(tmp_path, "simpletuner", str(DALLE3), "o.parquet", *extra, says="inside")


# ---------------------------------------------------------------- an input named through a link


def clean_text_own_output(root: Path) -> list[str]:
    write_params(root)
    (root / "in.txt").write_text("a red fox\n", encoding="utf-8")
    assert run(root, "clean-text", "in.txt", "out.jsonl").returncode == 0
    (root / "in2").symlink_to("out.jsonl")
    return ["clean-text", "in2", "out.jsonl"]


def dedup_text_own_output(root: Path) -> list[str]:
    (root / "in.txt").write_text("a red fox\na red fox\n", encoding="utf-8")
    assert run(root, "dedup-text", "in.txt", "flags.jsonl").returncode == 0
    os.symlink(root / "flags.jsonl", root / "abs-link")
    return ["dedup-text", "abs-link", "flags.jsonl"]


def ingest_into_a_linked_source(root: Path) -> list[str]:
    write_params(root, sources={"notes": {"kind": "text", "path": "rawlink", "text_only": True}})
    (root / "src").mkdir()
    (root / "src" / "prompts.txt").write_text("a red fox\n", encoding="utf-8")
    (root / "rawlink").symlink_to("src")
    return ["ingest", "notes", "src/x.parquet"]


LINKED_INPUTS = {
    "clean-text reading its own output through a link": clean_text_own_output,
    "dedup-text reading its own output through an absolute link": dedup_text_own_output,
    "ingest writing into its source folder, named through a link": ingest_into_a_linked_source,
}


@pytest.mark.parametrize("make", LINKED_INPUTS.values(), ids=LINKED_INPUTS)
def test_an_input_named_through_a_link_is_never_the_output(tmp_path, make):
    argv = make(tmp_path)
    refused(tmp_path, *argv, says="the output")


# ---------------------------------------------------------------- a failed run leaves no folder it made


def text_file(root: Path) -> None:
    (root / "in.txt").write_text(
        "".join(f"a red fox number {i} in the snow\n" for i in range(20_000)), encoding="utf-8"
    )


FAILED_IN_NEW_FOLDERS = {  # argv, a file-size limit (None: no limit), the first folder the run would make
    "clean-text on a full disk": (["clean-text", "in.txt", "np/a/b/out.jsonl"], 16 * 1024, "np"),
    "dedup-text on a full disk": (["dedup-text", "in.txt", "nd/a/flags.jsonl"], 1024, "nd"),
    "params-doc spelled as a folder": (["params-doc", "newdir/sub/"], None, "newdir"),
    "clean-text on an input that is not UTF-8": (["clean-text", "bad.txt", "nb/out.jsonl"], None, "nb"),
}


@pytest.mark.parametrize("argv, limit, made", FAILED_IN_NEW_FOLDERS.values(), ids=FAILED_IN_NEW_FOLDERS)
def test_a_failed_run_leaves_no_folder_it_made(tmp_path, argv, limit, made):
    write_params(tmp_path)
    text_file(tmp_path)
    (tmp_path / "bad.txt").write_bytes(b"a red fox\n\xff\xfe not text\n")
    done = run(tmp_path, *argv, limit=limit)
    assert done.returncode == 2, done.stderr
    error_line(done.stderr)
    assert not (tmp_path / made).exists(), sorted(os.listdir(tmp_path))


# ---------------------------------------------------------------- names and texts in what is printed


ESCAPED = {  # a success line naming an output path with control characters
    "params-doc: an OSC title and a bell": ("params-doc", "pd\x1b]0;pwned\x07.md"),
    "params-doc: a carriage return": ("params-doc", "pd\r.md"),
    "params-doc: a C1 CSI": ("params-doc", "pd\x9b2J.md"),
}


@pytest.mark.parametrize("command, name", ESCAPED.values(), ids=ESCAPED)
def test_a_success_line_never_sends_a_control_character(tmp_path, command, name):
    from scripts.lib.errors import shown

    done = run(tmp_path, command, name)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / name).is_file()
    assert shown(name) in done.stdout and all(ch == "\n" or ch.isprintable() for ch in done.stdout), done.stdout


@pytest.mark.parametrize("inside", ["x.parquet", "data/train-0.parquet", "a/b/c.json"])
def test_an_unencodable_name_inside_a_folder_temp_names_the_output(tmp_path, inside):
    """publish --out 'pz\\xff' blamed `.pz\\xff.tmp-new/data/...`: a temp path, not the output."""
    from scripts.lib.errors import DataError, shown
    from scripts.lib.io import atomic_path

    target = tmp_path / os.fsdecode(b"pz\xff")
    with pytest.raises(DataError) as caught, atomic_path(target, is_dir=True) as tmp:
        text = str(tmp / inside)
        text.encode("utf-8")
    assert ".tmp-" not in str(caught.value) and str(caught.value).startswith(shown(target)), caught.value
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(
    "text, named",
    [("out\udcff.parquet", True), ("x" * 10_000 + "\ud800", False), ('{\n "reply": "\ud800"\n}', False)],
    ids=["a file name", "10k characters", "a JSON document"],
)
def test_unencodable_text_is_named_only_when_it_is_a_name(text, named):
    """A reply with a lone surrogate was printed whole (64 MB at most) as 'a file name that is not UTF-8'."""
    from scripts.cli import _unencodable

    with pytest.raises(UnicodeEncodeError) as caught:
        text.encode("utf-8")
    line = _unencodable(caught.value)
    assert len(line) < 300 and "\n" not in line and ("rename it" in line) == named, line


# ---------------------------------------------------------------- a FIFO where a report is read


def stats_fifo(root: Path) -> list[str]:
    (root / "rel" / "v2").mkdir(parents=True)
    os.mkfifo(root / "rel" / "v2" / "stats.json")
    return ["history-table", "--releases", "rel"]


def summary_stats_fifo(root: Path) -> list[str]:
    write_params(root)
    assert run(root, "recipes", "rec").returncode == 0
    stats_fifo(root)
    return ["summary", "rel", "s.json", "--recipe", "rec/plots.json"]


def dedup_report_fifo(root: Path) -> list[str]:
    (root / "rel").mkdir()
    (root / "data" / "dedup").mkdir(parents=True)
    for source in ("diffusiondb", "chatgpt", "gustavosta", "openprompts", "kaggle_sd2", "gpt4_style"):
        os.mkfifo(root / "data" / "dedup" / f"{source}.report.json")
    return ["history-table", "--releases", "rel"]


@pytest.mark.parametrize("make", [stats_fifo, summary_stats_fifo, dedup_report_fifo], ids=lambda f: f.__name__)
def test_a_fifo_where_a_report_is_read_is_refused_not_waited_on(tmp_path, make):
    """history-table and summary opened a FIFO named as a release's stats.json or a dedup report and hung."""
    argv = make(tmp_path)
    done = run(tmp_path, *argv, timeout=60)
    assert done.returncode == 2 and "FIFO" in error_line(done.stderr), done.stderr
