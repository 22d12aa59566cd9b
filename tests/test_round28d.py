"""Round 28d: resource exhaustion as a hostile user (a full disk, a descriptor limit, two runs at once) against
the commands the earlier rounds left (summary, plots, simpletuner-config, pr-build, pr-comment, sample-data,
recipes). Every row failed before its fix, on real files and real runs of the command:

1. A second run of the same command on the same output, while the first works, was refused only at its
   write, after its whole work: summary, plots and simpletuner-config read every input, pr-build ran `dvc
   status` and `dvc repro` in the repository the first was building, and pr-comment wrote its plots/ and
   contact sheets into the first's folder before it was refused at comment.md. Each now takes its output's
   lock (temps.output_lock, which the thread that holds it may take again) before its work.
2. pr-comment renamed each contact sheet, plots/ and comment.md in one by one as each was written, and went on
   when `dvc plots diff -o` failed: a full disk while DVC wrote the plots page was exit 0 with the page cut
   short, this run's contact sheet beside the previous run's comment. A failed render is now one line naming
   plots/, and the outputs appear together or not at all (io.outputs_together).
3. A descriptor limit (`ulimit -n`) just at the deletion of a folder output's old copy said "delete it by hand"
   of the `.T.tmp-old` that the next run deletes itself (it is tagged as ours); the line now says the new
   output is in place and the next run deletes the old copy (temps.cannot_remove).

The rows of 1 hold the output's lock in this process as a first run does, then start the second run on inputs
it cannot read: refused before its work, it names the lock; refused after, it named the missing input.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, dvc_init, env
from helpers.tiers import fast_first
from helpers.workspace import error_line, leftovers, write_params
from helpers.workspace import run_scripts as run
from scripts.lib.temps import output_lock

pytestmark = pytest.mark.usefixtures("no_proxy")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def release_repo(root: Path, preview: bytes | None = None) -> Path:
    """A git repository with DVC, release r1 in its params.yaml (committed) and r1's rows (and preview.jpg)."""
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    dvc_init(root)
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    release = root / "data" / "releases" / "r1"
    release.mkdir(parents=True)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    rows = {"id": ["a", "b"], "source": ["s1"] * 2, "split": ["train", "validation"], "text": ["x", "y"]}
    pd.DataFrame(rows).assign(image=[None, None]).to_parquet(release / "rows.parquet")
    if preview is not None:
        (release / "preview.jpg").write_bytes(preview)
    return root


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its inode and (a file's) bytes: a folder renamed in anew has another inode."""
    return {
        p.relative_to(root).as_posix(): (p.lstat().st_ino, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- 1. a second run at once, refused before its work


def summary_unread(root: Path) -> tuple[list[str], Path]:
    write_params(root)
    (root / "rel").mkdir()  # no release's stats.json: read, it is "input not found"
    return ["summary", "rel", "out.json"], root / "out.json"


def plots_unread(root: Path) -> tuple[list[str], Path]:
    write_params(root)
    (root / "rel").mkdir()
    return ["plots", "rel", "rel", "rel", "out"], root / "out"


def simpletuner_unread(root: Path) -> tuple[list[str], Path]:
    (root / "rel" / "train").mkdir(parents=True)  # no multidatabackend.json
    return ["simpletuner-config", "rel/train", "cfg.json", "--cache-dir", "sc"], root / "cfg.json"


def pr_build_unread(root: Path) -> tuple[list[str], Path]:
    release_repo(root / "repo")  # no dvc.yaml: `dvc status` runs, then every release is new
    return ["pr-build", "HEAD", "--out", str(root / "out"), "--base-dir", str(root / "base")], root / "out/build.json"


def pr_comment_unread(root: Path) -> tuple[list[str], Path]:
    release_repo(root / "repo", preview=b"\xff\xd8\xff" + b"x" * 100)
    argv = ["pr-comment", "HEAD", "workspace", "--out", str(root / "out"), "--repo", str(root / "repo")]
    return argv, root / "out/comment.md"


AT_ONCE = [  # (what makes the inputs and gives the command and the output it locks)
    pytest.param(summary_unread, id="summary"),
    pytest.param(simpletuner_unread, id="simpletuner-config"),
    pytest.param(plots_unread, id="plots"),
    pytest.param(pr_build_unread, id="pr-build: dvc status ran in the first's repository"),
    pytest.param(pr_comment_unread, id="pr-comment: its plots/ and sheets landed in the first's folder"),
]


@pytest.mark.parametrize("make", fast_first(AT_ONCE, keep=1))  # the rest: -m slow
def test_a_second_run_at_once_is_refused_before_its_work(tmp_path, make):
    argv, output = make(tmp_path)
    cwd = tmp_path / "repo" if (tmp_path / "repo").is_dir() else tmp_path
    before = tree(tmp_path)
    with output_lock(output):  # the first run, at work
        done = run(cwd, *argv)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "another run is writing it" in line and output.name in line, done.stderr
    assert done.stdout == ""  # nothing of its work ran (pr-build: no "dvc status reports ..." line)
    assert {k for k in tree(tmp_path) if not k.startswith("repo/")} == {k for k in before if not k.startswith("repo/")}


@pytest.mark.slow  # the other tests of the lock's owner taking it again: every command's own tests
def test_the_first_run_still_writes_its_output(tmp_path):
    """The lock taken again by the run that holds it (its own write) is no second run."""
    argv, output = simpletuner_unread(tmp_path)
    (tmp_path / "rel" / "train" / "multidatabackend.json").write_text(json.dumps([]), encoding="utf-8")
    done = run(tmp_path, *argv)
    assert done.returncode == 0 and json.loads(output.read_text()) == [], done.stderr
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- 2. pr-comment's outputs appear together on a full disk

LIMIT = 300_000  # DVC's own files (its 98 KB index) stay under it; the plots page (2.4 MB) does not


def plotted_repo(root: Path) -> Path:
    """release_repo with a plot of 20,000 points, committed: `dvc plots diff -o` writes a page of 2.4 MB."""
    repo = release_repo(root, preview=b"\xff\xd8\xff" + b"x" * 100)
    (repo / "dvc.yaml").write_text("plots:\n  - data/p.csv:\n      x: a\n      y: b\n", encoding="utf-8")
    (repo / "data" / "p.csv").write_text("a,b\n" + "".join(f"{i},{i % 13}\n" for i in range(20_000)))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "a plot", cwd=repo)
    return repo


FULL_DISK = {  # case: (the --out folder, whether a previous run wrote it)
    "a previous run's sheets, plots/ and comment stay": ("out", True),
    "a first run leaves no sheets and no folder": ("out", False),
    "a first run into a folder two deep leaves neither": ("new/deeper", False),
}


@pytest.mark.slow  # dvc plots diff: 20-60 s a run
@pytest.mark.parametrize("case", FULL_DISK)
def test_pr_comment_outputs_appear_together_on_a_full_disk(tmp_path, case):
    out, previous = FULL_DISK[case]
    repo = plotted_repo(tmp_path / "repo")
    argv = ["pr-comment", "HEAD", "workspace", "--out", str(tmp_path / out), "--repo", "."]
    if previous:
        assert run(repo, *argv).returncode == 0
    before = tree(tmp_path / out) if previous else None
    (repo / "data" / "releases" / "r1" / "preview.jpg").write_bytes(b"\xff\xd8\xff" + b"z" * 100)
    (repo / "data" / "p.csv").write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(20_000)))
    done = run(repo, *argv, limit=LIMIT)  # the sheet written, then the page cut short: exit 0 before
    line = error_line(done.stderr)
    assert done.returncode == 2 and "plots: cannot write (dvc plots diff: ERROR" in line, done.stderr
    assert "File too large" in line
    if previous:
        assert tree(tmp_path / out) == before  # the new sheet not renamed in beside the old comment
    else:
        assert not (tmp_path / out.split("/")[0]).exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- 3. a descriptor limit at the old copy's deletion


def no_more_descriptors(count: int):
    def child() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return child


DESCRIPTORS = {  # case: (the command, the descriptor limit that leaves its old copy undeleted; 4: no Python)
    "recipes at 6": (["recipes", "out"], 6),
    "recipes at 5": (["recipes", "out"], 5),
    "sample-data at 8": (["sample-data", "out"], 8),
    "sample-data at 6": (["sample-data", "out"], 6),  # its writes hold their folder open (round 32d)
}


@pytest.mark.parametrize("case", fast_first(DESCRIPTORS, keep=0))  # sample-data: 3 runs, 2-4 s
def test_an_old_copy_left_by_a_descriptor_limit_is_the_next_runs_to_delete(tmp_path, case):
    argv, count = DESCRIPTORS[case]
    write_params(tmp_path)
    assert run(tmp_path, *argv).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600"}
    done = subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=no_more_descriptors(count),
    )
    line = error_line(done.stderr)
    assert done.returncode == 2 and "ulimit -n" in line and "the next run deletes it" in line, line
    assert "the new out is in place" in line and "by hand" not in line
    again = run(tmp_path, *argv)
    assert again.returncode == 0 and leftovers(tmp_path) == [], again.stderr
