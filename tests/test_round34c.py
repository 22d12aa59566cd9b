"""Round 34c: links git stores, read at a revision by pr-build, `dvc plots diff` and every git_entry reader, one
table per class (every row failed before its fix).

1. pr-build asked DVC's filesystem for the base's rows.parquet directly: one git stores as a link was
   "readable" (its blob, the target's path, was read), so the base's release was never built; a base
   params.yaml stored as a link was taken for none (every release new) at exit 0. Both are one line now
   (lock_text.git_entry, as diff asks; a params.yaml that is there but unreadable is said, as pr-comment says).
2. pr-comment's plots section let `dvc plots diff` read a plot file git stores as a link: the link's target
   text, a plot of no points at that revision, reported as data "only in PR" at exit 0. Each file the
   diff names is now asked of git at both commits first (lock_text.refuse_git_links).
3. A folder on the way stored in git as a link (`data/releases -> /elsewhere`) made its files "not found"
   (or none at all), never naming the link: git_entry now looks at each folder above the file too.
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
PLOT = "data/plots/a.csv"
PLOTS_YAML = "plots:\n  - data/plots:\n      x: x\n      y: y\n"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, env={**os.environ, **GIT_ENV})
    return done.stdout.decode().strip()


LINKS = {  # branch: (what is committed as a link, its target)
    "params-abs": ("params.yaml", "/etc/passwd"),
    "params-in": ("params.yaml", "data/summary.json"),
    "rows-abs": (ROWS, "/etc/passwd"),
    "rows-up": (ROWS, "../../../../../etc/passwd"),
    "rows-in": (ROWS, "../../summary.json"),
    "plot-abs": (PLOT, "/etc/hostname"),
    "plot-in": (PLOT, "b.csv"),
    "plot-up": (PLOT, "../../../../x.csv"),
    "releases-abs": ("data/releases", "/elsewhere"),
    "releases-up": ("data/releases", "../../outside"),
    "release-in": ("data/releases/r0", "r1"),
    "data-abs": ("data", "/tmp"),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository: main with release r0 (its rows in git), a plots folder of two CSVs declared in
    dvc.yaml, and a branch per LINKS case."""
    import pandas as pd

    root = tmp_path_factory.mktemp("r34c") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    dvc_init(root)
    (root / "params.yaml").write_text("releases:\n  r0: {}\n", encoding="utf-8")
    (root / "dvc.yaml").write_text(PLOTS_YAML, encoding="utf-8")
    for release in ("r0", "r1"):
        (root / "data" / "releases" / release).mkdir(parents=True)
        rows = {"id": ["a", "b"], "source": ["s", "s"], "split": ["train", "validation"], "text": ["x", release]}
        pd.DataFrame({**rows, "image": [None, None]}).to_parquet(root / f"data/releases/{release}/rows.parquet")
    (root / "data" / "summary.json").write_text('{"rows": {"r0": 2}}', encoding="utf-8")
    (root / "data" / "plots").mkdir()
    (root / PLOT).write_text("x,y\n1,2\n3,4\n", encoding="utf-8")
    (root / "data" / "plots" / "b.csv").write_text("x,y\n5,6\n", encoding="utf-8")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    for branch, (name, target) in LINKS.items():
        git(root, "checkout", "-q", "-b", branch, "main")
        git(root, "rm", "-rq", "--cached", name)
        subprocess.run(["rm", "-rf", str(root / name)], check=True)
        (root / name).symlink_to(target)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", branch)
    git(root, "checkout", "-q", "main")
    return root


def said(branch: str, path: str | None = None) -> str:
    """The one line for `path` at `branch`: the link itself, or the folder on its way that is one."""
    name = LINKS[branch][0]
    if path is None or path == name:
        return f"{branch}:{name}: is a symbolic link in git; refusing to read it"
    return f"{branch}:{path}: a folder on its way ({name}) is a symbolic link in git; refusing to read it"


# ---------------------------------------------------------------- 1. pr-build: the base's files that git stores as links


@pytest.mark.parametrize("branch", ["rows-abs", "rows-up", "rows-in", "releases-abs"])
def test_pr_build_readable_refuses_a_base_rows_table_git_stores_as_a_link(repo, branch):
    from scripts.tools.pr_build import readable

    sha = git(repo, "rev-parse", branch)
    with pytest.raises(DataError) as caught:  # was True: the link's target path read as the table's bytes
        readable(str(repo), sha, ROWS)
    assert str(caught.value) == said(branch, ROWS).replace(branch, sha, 1)


def test_pr_build_readable_still_reads_a_base_rows_table_in_git(repo):
    from scripts.tools.pr_build import readable

    assert readable(str(repo), git(repo, "rev-parse", "main"), ROWS)
    assert not readable(str(repo), git(repo, "rev-parse", "main"), "data/releases/r9/rows.parquet")


@pytest.mark.slow  # pr-build runs `dvc status`: the default tier has the readable rows
@pytest.mark.parametrize("branch", ["params-abs", "params-in", "rows-abs", "rows-in", "releases-up"])
def test_pr_build_refuses_a_base_file_git_stores_as_a_link(repo, monkeypatch, capfd, tmp_path, branch):
    out = tmp_path / "out"
    argv = ["pr-build", "--out", out, "--base-dir", tmp_path / "base", "--", branch]
    done = cli(argv, repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    assert error_line(done.stderr) == f"error: {said(branch, None if 'params' in branch else ROWS)}"
    assert not (out / "build.json").exists()
    assert not (tmp_path / "base").exists()


# ---------------------------------------------------------------- 2. pr-comment: plot files git stores as links


PLOT_ROWS = [("plot-abs", "base"), ("plot-in", "base"), ("plot-up", "base"), ("plot-abs", "head")]


def plots(repo: Path, base: str, head: str, tmp_path: Path) -> list[str]:
    from scripts.tools.pr_comment import plots_section

    return plots_section(str(repo), git(repo, "rev-parse", base), git(repo, "rev-parse", head), tmp_path / "out", None)


@pytest.mark.parametrize(
    ("branch", "side"),
    [pytest.param(b, s, marks=pytest.mark.slow) for b, s in PLOT_ROWS],  # `dvc plots diff`: seconds a row
)
def test_plots_section_refuses_a_plot_file_git_stores_as_a_link(repo, tmp_path, branch, side):
    revs = (branch, "main") if side == "base" else ("main", branch)
    with pytest.raises(DataError) as caught:  # was a plot of no points at the link's revision, at exit 0
        plots(repo, *revs, tmp_path)
    assert str(caught.value) == said(branch).replace(branch, git(repo, "rev-parse", branch), 1)
    assert not (tmp_path / "out" / "plots").exists()


@pytest.mark.slow  # pr-comment whole: diff, dvc metrics diff and dvc plots diff
@pytest.mark.parametrize(("branch", "side"), [("plot-in", "base"), ("plot-up", "head")])
def test_pr_comment_names_a_plot_file_git_stores_as_a_link(repo, monkeypatch, capfd, tmp_path, branch, side):
    revs = [branch, "main"] if side == "base" else ["main", branch]
    out = tmp_path / "out"
    done = cli(["pr-comment", "--out", out, "--", *revs], repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    assert error_line(done.stderr) == f"error: {said(branch)}"
    assert not (out / "comment.md").exists()


@pytest.mark.slow  # two `dvc plots diff` runs
def test_plots_section_still_compares_plot_files_in_git(repo, tmp_path):
    git(repo, "checkout", "-q", "-b", "plot-file", "main")
    try:
        (repo / PLOT).write_text("x,y\n1,2\n3,5\n", encoding="utf-8")
        git(repo, "commit", "-qam", "plot")
    finally:
        git(repo, "checkout", "-q", "main")
    lines = plots(repo, "main", "plot-file", tmp_path)
    assert any("1 plot(s) with changed data" in line for line in lines), lines


# ---------------------------------------------------------------- 3. a folder on the way that git stores as a link


@pytest.mark.parametrize(
    ("branch", "path"),
    [
        ("releases-abs", ROWS),
        ("releases-up", "data/releases/r0/stats.json"),
        ("release-in", ROWS),
        ("data-abs", "data/summary.json"),
        ("data-abs", PLOT),
    ],
)
def test_git_entry_names_a_folder_on_the_way_git_stores_as_a_link(repo, branch, path):
    from scripts.tools.lock_text import git_entry

    with pytest.raises(DataError) as caught:
        git_entry(str(repo), git(repo, "rev-parse", branch), path, f"{branch}:{path}")
    assert str(caught.value) == said(branch, path)


def test_git_entry_still_finds_a_file_under_folders_in_git(repo):
    from scripts.tools.lock_text import git_entry

    main = git(repo, "rev-parse", "main")
    assert git_entry(str(repo), main, ROWS, ROWS)[:2] == ("100644", "blob")  # type: ignore[index]
    assert git_entry(str(repo), main, "data/releases/r9/rows.parquet", "x") is None


@pytest.mark.parametrize(("branch", "side"), [("releases-abs", "a"), ("release-in", "a"), ("releases-up", "b")])
def test_diff_names_a_release_folder_git_stores_as_a_link(repo, monkeypatch, capfd, branch, side):
    revs = [branch, "main"] if side == "a" else ["main", branch]
    done = cli(["diff", "--", *revs], repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    assert error_line(done.stderr) == f"error: {said(branch, 'data/releases/r0/removed.parquet')}"
    assert done.stdout == ""
