"""Round 29a: a second run at once, and a run killed half way, for the side tools round 28d left
(replay-history, recipes, dedup-preview, params-doc, publish --out, sample-data). Every row failed before its
fix, on real files and real runs of the command:

1. A second run on the same output while the first worked was refused only at its write, after its work:
   replay-history read params.yaml and listed git's files (its emptiness check passed for both of two runs
   into one empty DEST), recipes read params.yaml, dedup-preview read the dedup tables, publish ran git and
   read the release, params-doc marked the first's output as its own. Each now takes the output's lock
   (temps.output_lock, whole_run) before its work: the second is refused at once, in one line naming it.
   The rows hold the lock in this process as a first run does, then start the second on inputs it cannot
   read: refused before its work it names the lock; after, it named the missing input. One row runs the
   first as a real process, stopped while it holds the lock, and lets it finish after the second's refusal.
2. replay-history, failing after DEST was made, deleted all of DEST's contents (it was checked empty): the
   other run's work, or what a user put there meanwhile. It now deletes only the names a replay writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO, env
from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line, leftovers, write_params
from scripts.lib.temps import output_lock
from scripts.tools.params_doc import render

pytestmark = pytest.mark.usefixtures("no_proxy")


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its inode, (a file's) bytes and extended attributes (a mark is one)."""
    return {
        p.relative_to(root).as_posix(): (
            p.lstat().st_ino,
            p.read_bytes() if p.is_file() and not p.is_symlink() else None,
            sorted(os.listxattr(p, follow_symlinks=False)),
        )
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- 1. a second run at once, refused before its work


def replay_into(dest: str, make: bool = False):
    def setup(root: Path) -> tuple[list[str], Path]:
        write_params(root)  # read, then `git ls-files` fails: root is no git repository
        if make:
            (root / dest).mkdir(parents=True)
        return ["replay-history", dest], root / dest

    return setup


def recipes_unread(out: str, params: str | None = None):
    def setup(root: Path) -> tuple[list[str], Path]:
        if params is not None:
            (root / "params.yaml").write_text(params, encoding="utf-8")
        return ["recipes", out], root / out

    return setup


def dedup_preview_unread(*argv: str, output: str):
    def setup(root: Path) -> tuple[list[str], Path]:
        (root / "data" / "dedup").mkdir(parents=True)  # no clean/ nor dedup tables: read, "not found"
        return ["dedup-preview", "s", *argv], root / output

    return setup


def publish_unread(*argv: str, out: str):
    def setup(root: Path) -> tuple[list[str], Path]:
        write_params(root)  # no git repository: its HEAD or tag check fails
        return ["publish", "v2", "--repo-id", "a/b", "--out", out, *argv], root / out

    return setup


def params_doc_unmarked(out: str):
    def setup(root: Path) -> tuple[list[str], Path]:
        (root / out).parent.mkdir(parents=True, exist_ok=True)
        (root / out).write_text(render(), encoding="utf-8")  # a clone's reference: no mark, proved by its text
        return ["params-doc", out], root / out

    return setup


AT_ONCE = {  # case: what makes the inputs and gives the command and the output it locks
    "replay-history into an empty DEST": replay_into("dest", make=True),
    "replay-history into a new DEST": replay_into("dest"),
    "replay-history into a DEST two folders deep": replay_into("a/b/dest"),
    "recipes, no params.yaml": recipes_unread("out"),
    "recipes two deep, no params.yaml": recipes_unread("deep/er/out"),
    "recipes, params.yaml not YAML": recipes_unread("out", params="{[\n"),
    "dedup-preview --output": dedup_preview_unread("--output", "p.html", output="p.html"),
    "dedup-preview's default output": dedup_preview_unread(output="data/dedup/s.preview.html"),
    "dedup-preview --data": dedup_preview_unread("--data", "d2", "--output", "x/p.html", output="x/p.html"),
    "publish --dry-run --out": publish_unread("--dry-run", out="hub"),
    "publish --dry-run --tag --out": publish_unread("--dry-run", "--tag", "v2", out="hub"),
    "publish --out two deep": publish_unread(out="deep/hub"),
    "params-doc marked the first's output": params_doc_unmarked("params.md"),
    "params-doc docs/params.md": params_doc_unmarked("docs/params.md"),
    "params-doc ref.md": params_doc_unmarked("ref.md"),
}


@contextlib.contextmanager
def first_run_at_work(argv: list[str], output: Path) -> Iterator[None]:
    """The output's lock held as a first run holds it: replay-history flocks DEST itself (round 32d: a lock
    file beside it refused a DEST in a read-only parent), the others take temps.output_lock."""
    if argv[0] != "replay-history":
        with output_lock(output):
            yield
        return
    fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.mark.parametrize("case", AT_ONCE)
def test_a_second_run_at_once_is_refused_before_its_work(tmp_path, monkeypatch, capfd, case):
    argv, output = AT_ONCE[case](tmp_path)
    if argv[0] == "replay-history":
        output.mkdir(parents=True, exist_ok=True)  # the first run made it, to lock it
    before = tree(tmp_path)
    with first_run_at_work(argv, output):
        done = cli(argv, tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "another run is writing it" in line and output.name in line, done.stderr
    assert done.stdout == ""
    assert tree(tmp_path) == before  # nothing made, read-and-marked or deleted


def start(cwd: Path, *argv: str) -> subprocess.Popen:
    environment = {**env(), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600"}
    return subprocess.Popen(
        [sys.executable, "-m", "scripts", *argv],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stopped_holding(proc: subprocess.Popen, lock: Path, timeout: float = 60) -> None:
    """Stop `proc` (SIGSTOP) once its output's lock file is there: it holds the lock, at work."""
    deadline = time.monotonic() + timeout
    while not lock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)


TWO_RUNS = [  # (case, the first run's argv, in a folder with params.yaml; the output, from tmp_path)
    pytest.param(["recipes", "{out}"], "out", id="recipes"),
    pytest.param(["recipes", "{out}"], "a/b/out", id="recipes two deep"),
    pytest.param(["recipes", "{out}"], "new/out", id="recipes into a new folder"),
]


@pytest.mark.parametrize(("argv", "out"), fast_first(TWO_RUNS, keep=1, columns=2))
def test_two_real_runs_the_second_refused_the_first_unharmed(tmp_path, argv, out):
    first_root, second_root = tmp_path / "first", tmp_path / "second"
    first_root.mkdir()
    second_root.mkdir()  # no params.yaml: refused after its work, it named that
    write_params(first_root)
    output = tmp_path / out
    argv = [a.format(out=output) for a in argv]
    first = start(first_root, *argv)
    try:
        stopped_holding(first, output.parent / f".{output.name}.tmp-lock")
        second = start(second_root, *argv)
        _, err = second.communicate(timeout=60)
        line = error_line(err)
        assert second.returncode == 2 and "another run is writing it" in line and output.name in line, err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0 and output.exists(), err
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- 2. a failed replay deletes only what it wrote


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def replay_source(root: Path) -> Path:
    """A git repository with the params and no dvc.yaml: a replay copies it, then its `dvc repro` fails."""
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    write_params(root)
    (root / "README.md").write_text("r\n", encoding="utf-8")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def a_file(dest: Path) -> None:
    (dest / "mine.txt").write_text("mine\n", encoding="utf-8")


def a_folder(dest: Path) -> None:
    (dest / "notes").mkdir()
    (dest / "notes" / "n.txt").write_text("n\n", encoding="utf-8")


def a_link(dest: Path) -> None:
    (dest / "elsewhere").symlink_to("/nonexistent")


FOREIGN = {"a user's file": a_file, "a user's folder": a_folder, "a user's link": a_link}


@pytest.mark.slow  # dvc repro runs: 2-4 s a row
@pytest.mark.parametrize("case", FOREIGN)
def test_a_failed_replay_keeps_what_it_did_not_write(tmp_path, case):
    src, dest = replay_source(tmp_path / "src"), tmp_path / "dest"
    dest.mkdir()
    proc = start(src, "replay-history", str(dest))
    try:
        deadline = time.monotonic() + 60
        while not (dest / "README.md").exists():  # git init done, the tracked files copied
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)
        FOREIGN[case](dest)
        before = {p.name: p.lstat().st_ino for p in dest.iterdir() if p.name in ("mine.txt", "notes", "elsewhere")}
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "dvc repro" in error_line(err), err
    left = {p.name: p.lstat().st_ino for p in dest.iterdir()}
    assert left == before  # the user's entry, as it was; the replay's own (.git, README.md, params.yaml) gone
    assert leftovers(tmp_path) == []
