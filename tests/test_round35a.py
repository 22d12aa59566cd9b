"""Round 35a: replay-history's DEST between two runs at once, and tag and replay-history on hostile systems, on
real files and real runs of `python -m scripts` (a hook on replay-history's lock call starts the second run,
for real, where a row needs it at one exact point). Every row of section 1 failed before its fix:

1. Two replay-history runs into a missing DEST: the one that made DEST (and the folders above it) but lost the
   lock to the other left them, and the winner, finding them there, took them as the user's: a failed winner
   left DEST empty, for good. A run now tags each folder it makes (temps.mark_temp) and whichever run holds the
   lock and fails removes the tagged ones still empty; the loser removes nothing (DEST is the winner's to use).
2. tag under a file size limit (`ulimit -f`, as a full disk): DVC's sqlite state database failing was an internal
   error at exit 1, or git killed by SIGXFSZ was `git status failed: exit status -25`; replay-history's git
   killed so was `(no output)`; and replay-history at `ulimit -n` 8-9, where `git ls-files` cannot start, said
   the source was not a git repository. Each is now one line naming the limit, exit 2, nothing left.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, env
from helpers.commands import cli
from helpers.limits import run_limited
from helpers.repos import committed_dvc_repository
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def source_repo(root: Path) -> Path:
    """A git repository with no releases and no .dvc: a replay of it with `--remote` fails at `dvc remote modify`
    (for real), after `git init` and the copy."""
    (root / "docs").mkdir(parents=True)
    (root / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    (root / "docs" / "a.md").write_text("a\n", encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def start_replay(src: Path, dest: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts", "replay-history", str(dest), *extra],
        cwd=src,
        env={**env(), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


# ---------------------------------------------------------------- 1. the loser of DEST's lock leaves nothing


def winner_ends(how: str):
    """How the winner, stopped while it holds DEST's lock, ends once resumed: a signal, or its own failure."""

    def end(proc: subprocess.Popen) -> None:
        if how != "its own failure":
            os.killpg(proc.pid, getattr(signal, how))
        os.killpg(proc.pid, signal.SIGCONT)

    return end


TWO_RUNS = [  # (DEST under out/, how the winner ends)
    pytest.param("dest", "SIGTERM", id="DEST, the winner stopped by SIGTERM"),
    pytest.param("a/dest", "SIGINT", id="a/DEST (both made by the loser), the winner interrupted"),
    pytest.param("a/b/dest", "SIGTERM", id="a/b/DEST, the winner stopped by SIGTERM"),
    pytest.param("dest", "its own failure", id="DEST, the winner fails on its own (dvc remote modify)"),
]


@pytest.mark.slow  # a second real replay-history run: 1-3 s a row
@pytest.mark.parametrize(("deep", "how"), TWO_RUNS)
def test_the_run_that_made_dest_and_lost_its_lock_leaves_nothing(tmp_path, monkeypatch, capfd, deep, how):
    from scripts.tools import replay_history

    src = source_repo(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    dest = out / deep
    real = replay_history.flock_or_refuse
    winner: list[subprocess.Popen] = []

    def the_other_run_locks_first(fd: int, busy: str, close: bool = False) -> None:
        # this run has made DEST (and the folders above it): the other one, started now, finds them and locks DEST
        proc = start_replay(src, dest, "--remote", str(tmp_path / "remote"))
        winner.append(proc)
        deadline = time.monotonic() + 60
        while not (dest / ".git").exists():  # made once it holds the lock
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGSTOP)
        real(fd, busy, close)

    monkeypatch.setattr(replay_history, "flock_or_refuse", the_other_run_locks_first)
    try:
        done = cli(["replay-history", str(dest)], src, monkeypatch, capfd)
        assert done.returncode == 2 and "another run is writing it" in error_line(done.stderr), done.stderr
        assert (dest / ".git").is_dir()  # the winner's DEST, untouched by the loser
        winner_ends(how)(winner[0])
        _, err = winner[0].communicate(timeout=120)
    finally:
        for proc in winner:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert winner[0].returncode != 0, err
    assert sorted(p.name for p in out.iterdir()) == []  # neither run left DEST or a folder above it


# ---------------------------------------------------------------- 2. tag and replay-history on a hostile system


@pytest.mark.slow  # DVC opens its repository: 1-2 s a row
@pytest.mark.parametrize("size", [0, 100, 4096], ids=lambda n: f"ulimit -f {n} bytes")
def test_tag_under_a_file_size_limit_is_one_line(tmp_path, size):
    """DVC's state database (sqlite) could not be written: `OperationalError: disk I/O error` at exit 1; or git,
    killed by SIGXFSZ, said nothing: `git status failed: exit status -25`."""
    root = committed_dvc_repository(tmp_path / "repo")
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    done = run_limited(["tag", "v2"], root, resource.RLIMIT_FSIZE, size, timeout=120)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "ulimit -f" in line, line  # DVC's database, or git killed by SIGXFSZ
    assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == before
    assert subprocess.run(["git", "tag", "-l"], cwd=root, capture_output=True, text=True).stdout == ""


@pytest.mark.slow  # a real replay-history run: 1-2 s a row
@pytest.mark.parametrize("size", [0, 100, 2000], ids=lambda n: f"ulimit -f {n} bytes")
def test_replay_history_under_a_file_size_limit_names_it(tmp_path, size):
    """git, killed by SIGXFSZ, printed nothing: the line said `(no output)`, no cause."""
    src = source_repo(tmp_path / "src")
    dest = tmp_path / "out" / "dest"
    done = run_limited(["replay-history", str(dest)], src, resource.RLIMIT_FSIZE, size, timeout=120)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "killed by SIGXFSZ" in line and "ulimit -f" in line, line
    assert not (tmp_path / "out").exists()  # nothing the run made is left


@pytest.mark.slow  # a real replay-history run: 1-2 s a row
@pytest.mark.parametrize(
    ("files", "deep"), [(8, "dest"), (9, "dest"), (8, "a/b/dest")], ids=["ulimit -n 8", "ulimit -n 9", "8, a/b/DEST"]
)
def test_replay_history_at_the_open_file_limit_says_so(tmp_path, files, deep):
    """`git ls-files` could not be started (EMFILE): the line said the source was not a git repository."""
    src = source_repo(tmp_path / "src")
    done = run_limited(
        ["replay-history", str(tmp_path / "out" / deep)], src, resource.RLIMIT_NOFILE, files, timeout=120
    )
    line = error_line(done.stderr)
    assert done.returncode == 2 and "cannot run `git ls-files`" in line and "ulimit -n" in line, line
    assert "not a git repository" not in line
    assert not (tmp_path / "out").exists()
