"""Round 37d: tag, publish, diff, pr-comment and pr-build at the open-file limit (`ulimit -n`) and under a file size
limit (`ulimit -f`), each a real `python -m scripts` run with the limit set in the child (preexec_fn). Every row
failed before its fix:

1. git not started (its pipes, at `ulimit -n` 8-9): tag and `publish --out`
   said a bare `Too many open files`, naming nothing; diff the same. Now one line naming the git step (and diff the
   repository) and the limit (failure_lines.with_limit_hint).
2. DVC's index of the repository (sqlite) under a file size limit: diff and pr-comment said
   `.: cannot open revision 'HEAD' (OperationalError: disk I/O error)`, as if the revision were at fault. Now
   `DVC's index of REPO: ...`, with the limit's value (`ulimit -f`). Nothing is written: no --out folder.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, dvc_init, env
from helpers.limits import run_limited
from helpers.repos import committed_dvc_repository
from helpers.tiers import fast_first
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def release_repo(root: Path) -> Path:
    """A git repository with DVC and release r1 (params.yaml and rows.parquet), committed."""
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    dvc_init(root)
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    release = root / "data" / "releases" / "r1"
    release.mkdir(parents=True)
    rows = {"id": ["a", "b"], "source": ["s1"] * 2, "split": ["train", "validation"], "text": ["x", "y"]}
    pd.DataFrame(rows).assign(image=[None, None]).to_parquet(release / "rows.parquet")
    (release / "preview.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 100)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def tag_args(root: Path) -> tuple[Path, list[str]]:
    return committed_dvc_repository(root / "repo"), ["tag", "v2"]


def publish_args(root: Path) -> tuple[Path, list[str]]:
    repo = committed_dvc_repository(root / "repo")
    shutil.copyfile(REPO / "params.yaml", repo / "params.yaml")  # its releases: publish reads them before git
    return repo, ["publish", "v2", "--repo-id", "me/x", "--dry-run", "--out", str(root / "out" / "hub")]


def diff_args(root: Path) -> tuple[Path, list[str]]:
    return release_repo(root / "repo"), ["diff", "HEAD", "workspace"]


def pr_comment_args(root: Path) -> tuple[Path, list[str]]:
    return release_repo(root / "repo"), ["pr-comment", "HEAD", "workspace", "--out", str(root / "out" / "c")]


# ---------------------------------------------------------------- 1. git not started at the open-file limit

NO_GIT = [  # (the command, the descriptor limit, what the line names)
    pytest.param(tag_args, 8, "cannot start `git rev-parse`", id="tag at ulimit -n 8"),
    pytest.param(tag_args, 9, "cannot start `git rev-parse`", id="tag at ulimit -n 9"),
    pytest.param(publish_args, 8, "cannot start `git rev-parse`", id="publish --out at ulimit -n 8"),
    pytest.param(publish_args, 9, "cannot start `git rev-parse`", id="publish --out at ulimit -n 9"),
    pytest.param(diff_args, 8, ".: cannot start `git rev-parse` to look up 'HEAD'", id="diff at ulimit -n 8"),
]


@pytest.mark.parametrize(("make", "files", "names"), fast_first(NO_GIT, keep=1, columns=3))
def test_git_not_started_at_the_open_file_limit_is_named(tmp_path, make, files, names):
    repo, argv = make(tmp_path)
    done = run_limited(argv, repo, resource.RLIMIT_NOFILE, files)
    line = error_line(done.stderr)
    assert done.returncode == 2 and names in line and f"may hold {files} open files" in line, line
    assert "ulimit -n" in line
    assert not (tmp_path / "out").exists()  # nothing written
    assert subprocess.run(["git", "tag", "-l"], cwd=repo, capture_output=True, text=True).stdout == ""


# ---------------------------------------------------------------- 2. DVC's index under a file size limit

INDEX = [  # (the command, the file size limit in bytes)
    pytest.param(diff_args, 0, id="diff, ulimit -f 0"),
    pytest.param(diff_args, 1024, id="diff, ulimit -f 1 KiB"),
    pytest.param(diff_args, 4096, id="diff, ulimit -f 4 KiB"),
    pytest.param(pr_comment_args, 0, id="pr-comment, ulimit -f 0"),
    pytest.param(pr_comment_args, 4096, id="pr-comment, ulimit -f 4 KiB"),
    pytest.param(pr_comment_args, 100_000, id="pr-comment, ulimit -f 100 KB"),
]


@pytest.mark.slow  # DVC opens its repository: 2-4 s a row
@pytest.mark.parametrize(("make", "size"), INDEX)
def test_dvc_index_under_a_file_size_limit_is_named_with_the_limit(tmp_path, make, size):
    repo, argv = make(tmp_path)
    done = run_limited(argv, repo, resource.RLIMIT_FSIZE, size)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: DVC's index of "), line
    assert f"file size limit ({size} bytes: `ulimit -f`)" in line and "disk I/O error" in line, line
    assert "cannot open revision" not in line
    assert not (tmp_path / "out").exists()  # nothing written
