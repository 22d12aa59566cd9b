"""Round 32f: pr-comment and diff run whole against hostile git revisions, one table per class (every row
failed before its fix).

1. diff opened a revision with DVC's filesystem as given: one naming a tree or a blob (`HEAD^{tree}`,
   `HEAD:params.yaml`, a tag of a blob) was one line quoting DVC's own text ("AttributeError: '_pygit2.Tree'
   object has no attribute 'tree'"), and a name holding a line break was cut mid-line. The commit is now
   asked of git first (side_inputs.commit_of, as pr-comment does): "REV: not a git revision in REPO".
2. pr-comment took a base params.yaml that is there but unreadable (not UTF-8, nested too deep, a link git
   stores as its target's text) for none: every release of the PR was "new, nothing to compare with", at
   exit 0. Only a base with no params.yaml has no releases now; the rest is diff's one line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.repos import GIT_ENV, dvc_init
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, env={**os.environ, **GIT_ENV})
    return done.stdout.decode().strip()


BASE_PARAMS = {  # branch: how its params.yaml is written (the base revision of the PR)
    "latin": lambda p: p.write_bytes(b"releases:\n  r0: {}\n# caf\xe9\n"),
    "deep": lambda p: p.write_text("releases: " + "[" * 300 + "]" * 300 + "\n", encoding="utf-8"),
    "link": lambda p: p.symlink_to("/etc/passwd"),
    "link-up": lambda p: p.symlink_to("../../../../../etc/passwd"),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository: main with release r0, a branch per BASE_PARAMS case, tags of a tree and a blob."""
    root = tmp_path_factory.mktemp("r32f") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    dvc_init(root)
    (root / "params.yaml").write_text("releases:\n  r0: {}\n", encoding="utf-8")
    (root / "data").mkdir()
    (root / "data" / "summary.json").write_text('{"rows": {"r0": 3}}', encoding="utf-8")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    git(root, "tag", "-a", "tree-tag", "-m", "t", "HEAD^{tree}")
    git(root, "tag", "-a", "blob-tag", "-m", "t", "HEAD:params.yaml")
    for branch, write in BASE_PARAMS.items():
        git(root, "checkout", "-q", "-b", branch, "main")
        (root / "params.yaml").unlink()
        write(root / "params.yaml")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", branch)
    git(root, "checkout", "-q", "main")
    return root


# ---------------------------------------------------------------- 1. diff: a revision that is no commit

NO_COMMIT = ["HEAD^{tree}", "HEAD:params.yaml", "blob-tag", "tree-tag", "HEAD\nx"]


@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("rev", NO_COMMIT)
def test_diff_says_a_revision_that_names_no_commit_in_one_line(repo, monkeypatch, capfd, rev, side):
    revs = [rev, "HEAD"] if side == "a" else ["HEAD", rev]
    done = cli(["diff", "--", *revs], repo, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr
    assert error_line(done.stderr) == f"error: {rev.replace(chr(10), chr(92) + 'n')}: not a git revision in ."


# ---------------------------------------------------------------- 2. pr-comment: an unreadable base params.yaml

BASE_SAID = {  # branch -> what the one line says after "BRANCH:params.yaml: "
    "latin": "not UTF-8 text",
    "deep": "nested deeper than 200 levels",
    "link": "is a symbolic link in git; refusing to read it",  # round 33d: was "expected a mapping ..."
    "link-up": "is a symbolic link in git; refusing to read it",
}


@pytest.mark.parametrize("branch", sorted(BASE_SAID))
def test_pr_comment_says_an_unreadable_base_params_yaml_not_every_release_new(
    repo, monkeypatch, capfd, tmp_path, branch
):
    out = tmp_path / "out"
    done = cli(["pr-comment", "--out", out, "--", branch, "HEAD"], repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stderr, done.stdout)
    assert error_line(done.stderr) == f"error: {branch}:params.yaml: {BASE_SAID[branch]}"
    assert not (out / "comment.md").exists()
