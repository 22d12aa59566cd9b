"""Round 39a: lock_text's git children at the open-file limit, tag on a dvc.yaml DVC cannot read, and the DVC-failure
lines' move to scripts/lib/failure_lines. Rows of 1-3 failed before their fix; 4 held (kept as guards):

1. lock_text.tree_listing (git_entry) and _blob_bytes at `ulimit -n` 5-8: `git ls-tree failed (OSError)`, the
   reason dropped, so no limit named. Now `cannot run `git ls-tree` (Too many open files)`, which cli's line
   completes with the limit's value (failure_lines.with_limit_hint). Each row a real child under a real limit.
2. tag on a dvc.yaml DVC cannot parse (a YAML error, a `foreach` of the wrong kind, an unknown `${var}`, a list of
   stages): `dvc.yaml: no stage release@v2 (is v2 in params.yaml: releases?)`, as if the release were missing. Now
   only DVC's StageNotFound says so; any other is one line with DVC's reason.
3. disk_hint, what_failed and dvc_index_line live in scripts/lib/failure_lines (diff and pr-build imported them
   from the tag command); their words are unchanged.
4. guards: replay-history into an immutable DEST (chattr +i) names DEST and the step; tag at `ulimit -n` 6-9 names
   the step and the limit.
5. replay-history at `ulimit -n` 10-12, its `git init` or `dvc remote modify` not started: `DEST: cannot write (Too
   many open files)`, no step named. Now `DEST: cannot start `dvc remote` there (...)` (a `_run` child).
"""

from __future__ import annotations

import errno
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, env
from helpers.repos import committed_dvc_repository
from helpers.workspace import error_line


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def limited(which: int, value: int):
    def set_limit() -> None:
        resource.setrlimit(which, (value, value))

    return set_limit


def run_python(code: str, cwd: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**env(), "PYTHONPATH": str(REPO)},
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_scripts(args: list[str], cwd: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *args],
        cwd=cwd,
        env={**env(), "PYTHONPATH": str(REPO)},
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------- 1. lock_text's git children at the open-file limit

# the limit is set after the imports (git's pipes are what cannot be made), as a command meets it mid-run
LS_TREE = """\
import resource
from scripts.tools.lock_text import git_entry, _blob_bytes
from scripts.lib.errors import DataError
resource.setrlimit(resource.RLIMIT_NOFILE, ({files}, {files}))
try:
    {call}
except DataError as exc:
    print(exc)
"""
CALLS = {
    "git_entry": "git_entry('.', 'HEAD', 'dvc.yaml', 'HEAD:dvc.yaml')",
    "_blob_bytes": "_blob_bytes('.', 'HEAD:dvc.yaml', 'HEAD:dvc.yaml')",
}


@pytest.mark.slow  # a child importing lock_text (scripts.lib.io, yaml): about 1 s a row
@pytest.mark.parametrize(
    ("call", "files", "step"),
    [("git_entry", 5, "ls-tree"), ("git_entry", 8, "ls-tree"), ("_blob_bytes", 5, "cat-file")],
    ids=["git_entry, ulimit -n 5", "git_entry, ulimit -n 8", "_blob_bytes, ulimit -n 5"],
)
def test_lock_text_at_the_open_file_limit_names_the_step_and_the_reason(tmp_path, call, files, step):
    root = committed_dvc_repository(tmp_path / "repo")
    done = run_python(LS_TREE.format(files=files, call=CALLS[call]), root)
    said = done.stdout.strip()
    assert done.returncode == 0 and said.startswith("HEAD:dvc.yaml: "), done.stderr
    assert f"cannot run `git {step}`" in said and "Too many open files" in said, said


def test_git_entry_at_the_open_file_limit_is_named_with_its_value_by_cli(tmp_path):
    """The same failure as cli prints it: the limit's value and `ulimit -n` (with_limit_hint reads the strerror)."""
    from scripts.lib.failure_lines import with_limit_hint
    from scripts.tools.lock_text import git_failure_line

    line = with_limit_hint(git_failure_line("HEAD:dvc.yaml", "ls-tree", OSError(errno.EMFILE, "Too many open files")))
    assert "cannot run `git ls-tree` (Too many open files)" in line and "ulimit -n" in line, line
    timed_out = git_failure_line("HEAD:dvc.yaml", "cat-file", subprocess.TimeoutExpired(["git"], 120))
    assert timed_out == "HEAD:dvc.yaml: `git cat-file` did not answer in 120 s", timed_out


# ---------------------------------------------------------------- 2. tag on a dvc.yaml DVC cannot read

BROKEN = {
    "YAML syntax": "stages:\n  release:\n    foreach: [v2]\n    do:\n      cmd: echo\n      outs: [out-${item}.txt]\n",
    "foreach a number": "stages:\n  release:\n    foreach: 5\n    do:\n      cmd: echo\n",
    "unknown ${var}": "stages:\n  release:\n    foreach: [v2]\n    do:\n      cmd: ${nope}\n",
    "stages a list": "stages: [1, 2]\n",
}


@pytest.mark.slow  # DVC opens its repository: 1-2 s a row
@pytest.mark.parametrize("text", list(BROKEN.values()), ids=list(BROKEN))
def test_tag_on_a_dvc_yaml_dvc_cannot_read_says_so(tmp_path, text):
    root = committed_dvc_repository(tmp_path / "repo", text)
    done = run_scripts(["tag", "v2"], root)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: dvc.yaml: DVC cannot read release@v2 there ("), line
    assert "no stage" not in line
    assert subprocess.run(["git", "tag", "-l"], cwd=root, capture_output=True, text=True).stdout == ""


@pytest.mark.slow  # DVC opens its repository
def test_tag_of_a_release_dvc_yaml_lacks_still_says_no_stage(tmp_path):
    root = committed_dvc_repository(
        tmp_path / "repo", "stages:\n  release:\n    foreach: [v3]\n    do:\n      cmd: echo\n"
    )
    line = error_line(run_scripts(["tag", "v2"], root).stderr)
    assert line == "error: dvc.yaml: no stage release@v2 (is v2 in params.yaml: releases?)", line


# ---------------------------------------------------------------- 3. the DVC-failure lines in failure_lines

HINTS = [
    ("OSError(errno.EMFILE, 'Too many open files')", None, ""),
    ("sqlite3.OperationalError('unable to open database file')", None, "is the open-file limit ("),
    ("OSError(errno.EFBIG, 'File too large')", 4096, "the file size limit (4096 bytes: `ulimit -f`) too low?"),
    ("sqlite3.OperationalError('disk I/O error')", None, "a file size limit (`ulimit -f`) set?"),
]


@pytest.mark.parametrize(("exc", "size", "said"), HINTS, ids=["EMFILE", "sqlite unable to open", "EFBIG", "disk I/O"])
def test_disk_hint_lives_in_failure_lines_with_its_words(tmp_path, exc, size, said):
    """A set file size limit in a child (the limit is read from the process); the others in this process."""
    if size is None and resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY:
        from scripts.lib.failure_lines import disk_hint

        hint = disk_hint(eval(exc))  # the table's own expressions
    else:
        code = f"import errno, sqlite3\nfrom scripts.lib.failure_lines import disk_hint\nprint(disk_hint({exc}))\n"
        done = run_python(code, tmp_path, limited(resource.RLIMIT_FSIZE, size or resource.RLIM_INFINITY))
        hint = done.stdout.strip()
        assert done.returncode == 0, done.stderr
    assert (hint == "") if not said else (said in hint), hint


def test_dvc_index_line_lives_in_failure_lines_and_diff_and_pr_build_import_it_there():
    from scripts.lib import failure_lines

    line = failure_lines.dvc_index_line("/r\x1b[31m", "main", sqlite3.OperationalError("disk I/O error"))
    assert line.startswith("DVC's index of /r\\x1b[31m: cannot read or write it to open revision 'main'"), line
    assert line.endswith(
        "(OperationalError: disk I/O error); is the disk full, or a file size limit (`ulimit -f`) set?"
    )
    for importer in ("diff", "pr_build", "tag"):  # read, not imported: diff imports pandas (a second)
        text = (REPO / "scripts" / "tools" / f"{importer}.py").read_text(encoding="utf-8")
        assert "from scripts.tools.tag import" not in text and "def disk_hint" not in text, importer
        assert "from scripts.lib.failure_lines import" in text, importer


# ---------------------------------------------------------------- 4. guards: immutable DEST, tag at the limit


def source_repo(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    (root / "docs" / "a.md").write_text("a\n", encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def immutable(folder: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


@pytest.mark.slow  # a real replay-history run
@pytest.mark.parametrize("name", ["dest", "d\x1b[31m", "dé st"], ids=["plain", "escape code", "unicode, space"])
def test_replay_history_into_an_immutable_dest_names_it(tmp_path, name):
    src = source_repo(tmp_path / "src")
    dest = tmp_path / name
    dest.mkdir()
    if not immutable(dest):
        pytest.skip("chattr +i is not available here (needs root and a file system that has it)")
    try:
        done = run_scripts(["replay-history", str(dest)], src)
    finally:
        subprocess.run(["chattr", "-i", str(dest)], check=True)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.endswith(": cannot write .git there (Operation not permitted)"), line
    assert str(dest).encode("unicode_escape").decode().replace("\\xe9", "é") in line or "\\x1b" in line, line
    assert list(dest.iterdir()) == []


@pytest.mark.slow  # DVC opens its repository at the higher limits
@pytest.mark.parametrize("files", [6, 8, 9], ids=lambda n: f"ulimit -n {n}")
def test_tag_at_the_open_file_limit_names_the_step_and_the_limit(tmp_path, files):
    root = committed_dvc_repository(tmp_path / "repo")
    done = run_scripts(["tag", "v2"], root, limited(resource.RLIMIT_NOFILE, files))
    line = error_line(done.stderr)
    assert done.returncode == 2 and f"this process may hold {files} open files at most" in line, line
    assert "cannot start `git" in line or "/.dvc: DVC cannot read or write its own files" in line, line


# ---------------------------------------------------------------- 5. replay-history's children not started


@pytest.mark.slow  # a real replay-history run: 1-2 s a row
@pytest.mark.parametrize("files", [10, 11, 12], ids=lambda n: f"ulimit -n {n}")
def test_replay_history_names_the_child_it_cannot_start(tmp_path, files):
    """`git init` or `dvc remote modify` not started (their pipes not made) said `DEST: cannot write (Too many open
    files)`, as if DEST were at fault, the step unnamed."""
    src = source_repo(tmp_path / "src")
    dest = tmp_path / "out" / "dest"
    args = ["replay-history", str(dest), "--remote", str(tmp_path / "remote")]
    done = run_scripts(args, src, limited(resource.RLIMIT_NOFILE, files))
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith(f"error: {dest}: cannot start `"), line
    assert "` there (Too many open files)" in line and "ulimit -n" in line, line
