"""Round 35f: leftovers of rounds 32a, 32c, 33d/34c and 34d in captions, dedup and lock_text.

1. captions@S copied a generate manifest's model, scheduler and format into each row's `generation` unchecked
   (round 34d): a NUL, an escape code, a 10 MB string or a number went into the caption table at exit 0. Each is
   one line naming the manifest and the row.
2. dedup-text looked at params.yaml by name (`PARAMS_FILE.exists()`) before loading it: a link to nothing, in a
   loop of links, or to a link to nothing is not there for exists(), so the defaults were used at exit 0. The
   file is loaded first; only a failed load asks (lstat) whether anything is there, and the load's line stands.
3. lock_text.git_entry ran one `git ls-tree` per file read at a revision (diff reads about four a release): one
   listing per commit now, kept for the process, with the same entries and the same link refusals.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.repos import GIT_ENV
from helpers.workspace import captions_error_line, error_line
from scripts.lib.errors import DataError

# ---------------------------------------------------------------- 1. captions: the manifest's settings as text


def _manifest(**columns) -> dict:
    manifest = {"id": ["a", "b"], "file": ["a.png", "b.png"], "width": [8, 8], "height": [8, 8]}
    settings = {"model": ["m", "m"], "scheduler": ["euler", "euler"], "format": ["png", "png"]}
    return manifest | settings | {"guidance": [7.5, 7.5], "steps": [1, 1], "seed": [1, 2]} | columns


SETTINGS = {  # case: (the manifest column, its values, the row named, what the one line says)
    "a NUL in model": ("model", ["m", "m\x00"], 2, "control character '\\x00'"),
    "an escape code in scheduler": ("scheduler", ["euler", "\x1b[31meuler"], 2, "control character '\\x1b'"),
    "a C1 control in format": ("format", ["png", "png\x85"], 2, "control character '\\x85'"),
    "a 10 MB model": ("model", ["m", "m" * (10 << 20)], 2, "10,485,760 characters"),
    "numbers for model": ("model", [5, 6], 1, "holds int 5, not text"),
    "lists for scheduler": ("scheduler", [["euler"], ["euler"]], 1, "holds a list ['euler'], not text"),
}


@pytest.mark.parametrize("case", SETTINGS)
def test_captions_refuses_a_manifest_setting_that_is_no_plain_text(tmp_path, monkeypatch, capfd, case):
    column, values, row, said = SETTINGS[case]
    line = captions_error_line(tmp_path, monkeypatch, capfd, _manifest(**{column: values}))
    assert f"images/manifest.parquet: row {row}: column {column!r}" in line and said in line, line
    assert len(line) < 400, line


# ---------------------------------------------------------------- 2. dedup-text: params.yaml loaded, not looked at


def _broken_params(root: Path, kind: str) -> None:
    if kind == "a link to nothing":
        os.symlink("gone.yaml", root / "params.yaml")
    elif kind == "a loop of links":
        os.symlink("other.yaml", root / "params.yaml")
        os.symlink("params.yaml", root / "other.yaml")
    else:  # a link to a link to nothing
        os.symlink("middle.yaml", root / "params.yaml")
        os.symlink("gone.yaml", root / "middle.yaml")


@pytest.mark.parametrize("kind", ["a link to nothing", "a loop of links", "a link to a link to nothing"])
def test_dedup_text_says_a_params_link_that_reaches_no_file(tmp_path, monkeypatch, capfd, kind):
    (tmp_path / "in.txt").write_text("a cat\na cat\n", encoding="utf-8")
    _broken_params(tmp_path, kind)
    result = cli(["dedup-text", "in.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "params.yaml: is a symbolic link" in error_line(result.stderr)
    assert not (tmp_path / "out.jsonl").exists()


def test_dedup_text_still_runs_without_any_params_file(tmp_path, monkeypatch, capfd):  # guard row
    (tmp_path / "in.txt").write_text("a cat\na cat\n", encoding="utf-8")
    result = cli(["dedup-text", "in.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.jsonl").read_text().splitlines()[1] == '{"keep": false, "duplicate_of": 0}'


# ---------------------------------------------------------------- 3. git_entry: one listing a commit


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, env={**os.environ, **GIT_ENV})
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[str, str]:
    """A commit with files, a folder, a file link and a folder link: (repository, commit id)."""
    root = tmp_path_factory.mktemp("repo")
    git(root, "init", "-q", "-b", "main")
    for name in ["params.yaml", "dvc.lock", "data/releases/r0/rows.parquet", "data/summary.json"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name, encoding="utf-8")
    os.symlink("/etc/passwd", root / "data" / "file-link")
    os.symlink("/elsewhere", root / "data" / "folder-link")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return str(root), git(root, "rev-parse", "HEAD")


READS = {  # case: (the paths read in turn, what the last read gives: its entry's kind, or the refusal it says)
    "four files": (["params.yaml", "dvc.lock", "data/summary.json", "data/releases/r0/rows.parquet"], "blob"),
    "a file, then one git does not hold": (["params.yaml", "data/releases/r0/missing.parquet"], None),
    "a file, then a folder": (["dvc.lock", "data/releases"], "tree"),
    "a file, then a file link": (["params.yaml", "data/file-link"], "is a symbolic link in git"),
    "a file, then one under a folder link": (["dvc.lock", "data/folder-link/x.parquet"], "(data/folder-link)"),
}


@pytest.mark.parametrize("case", READS)
def test_git_entry_lists_a_commit_once(repo, monkeypatch, case):
    from scripts.tools import lock_text

    paths, last = READS[case]
    root, commit = repo
    monkeypatch.setattr(lock_text, "_LISTINGS", {}, raising=False)  # the module's repository, read anew for this row
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counted(args, *rest, **options):
        calls.append(list(args))
        return real_run(args, *rest, **options)

    monkeypatch.setattr(subprocess, "run", counted)
    for path in paths[:-1]:
        assert lock_text.git_entry(root, commit, path, path) is not None
    if last is None or last in ("blob", "tree"):
        entry = lock_text.git_entry(root, commit, paths[-1], paths[-1])
        assert (entry and entry[1]) == last
    else:
        with pytest.raises(DataError, match=r"symbolic link in git") as caught:
            lock_text.git_entry(root, commit, paths[-1], paths[-1])
        assert last in str(caught.value)
    assert len([c for c in calls if c[0] == "git"]) == 1, calls


def test_git_entry_reads_the_same_entries_as_ls_tree_of_each_path(repo):  # guard row: identical results
    from scripts.tools.lock_text import git_entry

    root, commit = repo
    for path in ["params.yaml", "data", "data/releases/r0/rows.parquet"]:
        fields = git(Path(root), "ls-tree", "-l", "--full-tree", commit, "--", path).split("\t")[0].split()
        assert git_entry(root, commit, path, path) == (fields[0], fields[1], fields[3])
