"""Round 33d: files read at a git revision that git stores as symbolic links, and history-table's links out,
one table per class (every row failed before its fix).

1. A revision's params.yaml, dvc.lock, rows table or metrics file that git stores as a symbolic link (mode
   120000) was read as its blob, the link's target path: params.yaml "expected a mapping", a dvc.lock of no
   stages at exit 0, a rows.parquet "not a readable parquet table". Each is now asked of git first
   (lock_text.git_entry: `git ls-tree`) and refused in one line, as the workspace's link out is.
2. history-table read a release's stats.json (or a dedup/prefilter report.json) through a link out of its
   folder, and printed another file's counts as the release's; summary refuses the same link. It now
   refuses it in one line (safe_paths.check_stays_in).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.repos import GIT_ENV, dvc_init
from helpers.workspace import error_line
from scripts.lib.errors import DataError

pytestmark = pytest.mark.usefixtures("no_proxy")

ROWS = "data/releases/r0/rows.parquet"
REMOVED = "data/releases/r0/removed.parquet"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, env={**os.environ, **GIT_ENV})
    return done.stdout.decode().strip()


LINKS = {  # branch: (file committed as a link, its target)
    "params-abs": ("params.yaml", "/etc/passwd"),
    "params-up": ("params.yaml", "../../../../etc/passwd"),
    "params-in": ("params.yaml", "data/summary.json"),
    "rows-abs": (ROWS, "/etc/passwd"),
    "rows-in": (ROWS, "../../summary.json"),
    "removed-abs": (REMOVED, "/etc/passwd"),
    "lock-up": ("dvc.lock", "../x"),
    "lock-abs": ("dvc.lock", "/etc/passwd"),
    "lock-in": ("dvc.lock", "params.yaml"),
    "summary-up": ("data/summary.json", "../../outside.json"),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository: main with release r0 (its rows.parquet in git), a branch per LINKS case."""
    import pandas as pd

    root = tmp_path_factory.mktemp("r33d") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    dvc_init(root)
    (root / "params.yaml").write_text("releases:\n  r0: {}\n", encoding="utf-8")
    (root / "data" / "releases" / "r0").mkdir(parents=True)
    (root / "data" / "summary.json").write_text('{"rows": {"r0": 2}}', encoding="utf-8")
    rows = {"id": ["a", "b"], "source": ["s", "s"], "split": ["train", "validation"], "text": ["x", "y"]}
    pd.DataFrame({**rows, "image": [None, None]}).to_parquet(root / ROWS)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    for branch, (name, target) in LINKS.items():
        git(root, "checkout", "-q", "-b", branch, "main")
        if (root / name).exists():
            (root / name).unlink()
        (root / name).symlink_to(target)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", branch)
    git(root, "checkout", "-q", "main")
    return root


def said(branch: str) -> str:
    return f"error: {branch}:{LINKS[branch][0]}: is a symbolic link in git; refusing to read it"


# ---------------------------------------------------------------- 1. a file git stores as a link, at a revision

DIFF_LINKS = ["params-abs", "params-up", "params-in", "rows-abs", "rows-in", "removed-abs"]


@pytest.mark.parametrize(("branch", "side"), [(b, "a") for b in DIFF_LINKS] + [("params-up", "b"), ("rows-in", "b")])
def test_diff_refuses_a_revision_s_file_that_git_stores_as_a_link(repo, monkeypatch, capfd, branch, side):
    revs = [branch, "main"] if side == "a" else ["main", branch]
    done = cli(["diff", "--", *revs], repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    assert error_line(done.stderr) == said(branch)
    assert done.stdout == ""


@pytest.mark.parametrize("branch", ["lock-up", "lock-abs", "lock-in"])
def test_a_revision_s_dvc_lock_that_git_stores_as_a_link_is_one_line(repo, branch):
    from scripts.tools.lock_text import lock_at

    with pytest.raises(DataError) as caught:
        lock_at(str(repo), branch)
    assert f"error: {caught.value}" == said(branch)


def test_a_revision_s_dvc_lock_that_is_a_file_is_still_read(repo):
    from scripts.tools.lock_text import lock_at

    git(repo, "checkout", "-q", "-b", "lock-file", "main")
    try:
        (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
        git(repo, "add", "dvc.lock")
        git(repo, "commit", "-q", "-m", "lock")
    finally:
        git(repo, "checkout", "-q", "main")
    assert lock_at(str(repo), "lock-file") == "schema: '2.0'\nstages: {}\n"
    assert lock_at(str(repo), "main") is None


@pytest.mark.slow  # pr-comment's imports and dvc: the default tier has the lock_at and diff rows
@pytest.mark.parametrize("branch", ["params-abs", "lock-up", "lock-in", "summary-up"])
def test_pr_comment_refuses_a_base_file_that_git_stores_as_a_link(repo, monkeypatch, capfd, tmp_path, branch):
    out = tmp_path / "out"
    done = cli(["pr-comment", "--out", out, "--", branch, "main"], repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    assert error_line(done.stderr) == said(branch)
    assert not (out / "comment.md").exists()


# ---------------------------------------------------------------- 2. history-table: a link out of its folder

RELEASE_FILES = {  # case: (file under the folder, how the link out is made)
    "stats.json to an absolute path": ("releases/v3/stats.json", lambda p, o: p.symlink_to(o)),
    "stats.json up and out": ("releases/v3/stats.json", lambda p, o: p.symlink_to(os.path.relpath(o, p.parent))),
    "a release folder linked out": ("releases/v3", lambda p, o: p.symlink_to(o.parent)),
    "a dedup report linked out": ("dedup/chatgpt.report.json", lambda p, o: p.symlink_to(o)),
    "a prefilter report linked out": ("prefilter/openprompts.report.json", lambda p, o: p.symlink_to(o)),
}


@pytest.mark.parametrize("case", sorted(RELEASE_FILES))
def test_history_table_refuses_a_file_linked_out_of_its_folder(tmp_path, monkeypatch, capfd, case):
    name, link = RELEASE_FILES[case]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "v3").mkdir(parents=True)
    outside = elsewhere / "v3" / "stats.json"
    outside.write_text('{"rows": {"train": 5, "validation": 1}, "rows_in": 9, "kept": 3}', encoding="utf-8")
    work = tmp_path / "work"
    for folder in ("releases/v3", "dedup", "prefilter"):
        (work / folder).mkdir(parents=True)
    path = work / name
    if path.is_dir():
        path.rmdir()
    link(path, outside)
    argv = ["history-table", "--releases", "releases", "--dedup", "dedup", "--prefilter", "prefilter"]
    done = cli(argv, work, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    file = name if name.endswith(".json") else f"{name}/stats.json"
    root = file.split("/")[0]
    assert error_line(done.stderr) == f"error: {file}: a link on its way leads out of {root}; refusing to read it"
    assert done.stdout == ""


def test_history_table_still_reads_a_link_within_its_folder(tmp_path, monkeypatch, capfd):
    (tmp_path / "releases" / "v2").mkdir(parents=True)
    (tmp_path / "releases" / "v3").mkdir()
    (tmp_path / "releases" / "v2" / "stats.json").write_text('{"rows": {"train": 7}}', encoding="utf-8")
    (tmp_path / "releases" / "v3" / "stats.json").symlink_to("../v2/stats.json")
    done = cli(["history-table", "--releases", "releases"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert "| v3 | train rows | 193,994 | 7 |" in done.stdout
