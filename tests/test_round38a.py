"""Round 38a: pr-build under a file size limit (`ulimit -f`) and on a local cache it cannot read, pr-comment-post at
the open-file and file size limits. Rows of 1 and 2 failed before their fix; 3 held (kept as guards):

1. a dvc child under a file size limit (killed by SIGXFSZ, or saying `File too large` / sqlite's `disk I/O error`):
   pr-build said `dvc repro --pull failed (see the log above)`, naming no limit. Now the line names it with its
   value (failure_lines.disk_hint's words). The dvc here is a fake package (a real child, the limit really set in it); one
   slow row runs the real DVC.
2. pr-build's `readable` took any failure to read the base's rows from DVC's cache as "missing" (and built the
   base in a worktree): a cache object that is a folder or a link loop. Now only FileNotFoundError (and a remote not
   reached) is missing; this machine's own failure is one line.
3. pr-comment-post at `ulimit -n` 5-16 and `ulimit -f` 0-64 KiB against a loopback GitHub: it posts, every request
   whole (it writes no file; at 4 and below the interpreter itself cannot start).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, dvc_init, env
from helpers.limits import limited
from helpers.repos import committed_dvc_repository
from helpers.tiers import fast_first

pytestmark = pytest.mark.usefixtures("no_proxy")

FAKE_DVC = """\
import os, signal, sys
if sys.argv[1:2] != ["repro"]:
    sys.exit(1)  # status and pull fail: pr-build goes on to `repro --pull --allow-missing`, then `repro --pull`
how = os.environ["FAKE_HOW"]
if how == "said":
    print("ERROR: unexpected error - disk I/O error", file=sys.stderr)
    sys.exit(255)
if how == "killed":
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # python ignores it; DVC's git and stage children do not
try:
    with open("out.bin", "wb") as f:
        f.write(b"x" * 200_000)
except OSError as exc:
    print(f"ERROR: failed to reproduce 'make': {exc.strerror}", file=sys.stderr)
sys.exit(1)
"""


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def the_error_line(stderr: str) -> str:
    """pr-build's own line (dvc's lines pass through before it): exactly one `error:` line, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def pr_build(tmp_path: Path, size: int, how: str, fake: bool = True) -> subprocess.CompletedProcess:
    root = tmp_path / "repo"
    path = [str(REPO)]
    if fake:
        committed_dvc_repository(root)
        (tmp_path / "fake" / "dvc").mkdir(parents=True)
        (tmp_path / "fake" / "dvc" / "__init__.py").write_text("", encoding="utf-8")
        (tmp_path / "fake" / "dvc" / "__main__.py").write_text(FAKE_DVC, encoding="utf-8")
        path.insert(0, str(tmp_path / "fake"))
    else:  # the real DVC: a stage whose output is over the limit
        root.mkdir()
        git("init", "-q", "-b", "main", cwd=root)
        dvc_init(root)
        stage = (
            "stages:\n  make:\n    cmd: python -c \"open('out.txt', 'w').write('x' * 200000)\"\n    outs: [out.txt]\n"
        )
        (root / "dvc.yaml").write_text(stage, encoding="utf-8")
        git("add", "-A", cwd=root)
        git("commit", "-q", "-m", "base", cwd=root)
    argv = ["pr-build", "HEAD", "--out", str(tmp_path / "out"), "--base-dir", str(tmp_path / "base")]
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env={**env(), "PYTHONPATH": os.pathsep.join(path), "FAKE_HOW": how},
        preexec_fn=limited(resource.RLIMIT_FSIZE, size),
        capture_output=True,
        text=True,
        timeout=180,
    )


# ---------------------------------------------------------------- 1. pr-build's dvc under a file size limit

FILE_SIZE = [  # (the limit in bytes, how the fake dvc fails, what the line says of it)
    pytest.param(4096, "wrote", "dvc could not write a file", id="File too large, ulimit -f 4 KiB"),
    pytest.param(0, "killed", "dvc was killed by SIGXFSZ", id="SIGXFSZ, ulimit -f 0"),
    pytest.param(65536, "said", "dvc could not write a file", id="disk I/O error, ulimit -f 64 KiB"),
    pytest.param(0, "wrote", "dvc could not write a file", id="File too large, ulimit -f 0"),
    pytest.param(65536, "killed", "dvc was killed by SIGXFSZ", id="SIGXFSZ, ulimit -f 64 KiB"),
]


@pytest.mark.slow  # an interpreter and four dvc children a row: 2-5 s
@pytest.mark.parametrize(("size", "how", "said"), FILE_SIZE)
def test_pr_build_names_the_file_size_limit_its_dvc_ran_into(tmp_path, size, how, said):
    done = pr_build(tmp_path, size, how)
    line = the_error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: dvc repro --pull failed (see the log above: "), line
    assert said in line and f"the file size limit ({size} bytes: `ulimit -f`)" in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "base").exists()  # nothing written


@pytest.mark.slow  # the real DVC: about 10 s a row
@pytest.mark.parametrize("size", [0, 4096, 65536])
def test_pr_build_names_the_file_size_limit_the_real_dvc_ran_into(tmp_path, size):
    done = pr_build(tmp_path, size, "", fake=False)
    line = the_error_line(done.stderr)
    assert done.returncode == 2 and f"the file size limit ({size} bytes: `ulimit -f`)" in line, line
    assert not (tmp_path / "out").exists()


def test_a_dvc_failure_with_no_disk_sign_keeps_its_line(tmp_path, monkeypatch):
    """Guard: a plain failure (no limit, nothing said of a disk) adds nothing."""
    from scripts.tools import pr_build as module

    monkeypatch.setattr(module, "run_shown", lambda cmd, watch=None, **kwargs: 1)
    assert module.dvc_watched(["repro"], tmp_path) == (1, "")


# ---------------------------------------------------------------- 2. the base's rows in a cache that cannot be read


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Path:
    """A repository whose HEAD tracks data/releases/r1/rows.parquet with DVC (its .dvc file and cache copy written
    as `dvc add` writes them: no DVC process), its workspace copy absent."""
    root = tmp_path_factory.mktemp("tracked") / "repo"
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("", encoding="utf-8")
    (root / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n", encoding="utf-8")
    data = b"PAR1 rows"
    digest = hashlib.md5(data).hexdigest()
    stored = root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
    stored.parent.mkdir(parents=True)
    stored.write_bytes(data)
    release = root / "data" / "releases" / "r1"
    release.mkdir(parents=True)
    (release / ".gitignore").write_text("/rows.parquet\n", encoding="utf-8")
    pointer = f"outs:\n- md5: {digest}\n  size: {len(data)}\n  hash: md5\n  path: rows.parquet\n"
    (release / "rows.parquet.dvc").write_text(pointer, encoding="utf-8")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "rows", cwd=root)
    return root


def cache_object(repo: Path) -> Path:
    (found,) = [p for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file() or p.is_symlink()]
    return found


def object_a_folder(path: Path) -> None:
    path.mkdir()


def object_a_folder_of_files(path: Path) -> None:
    path.mkdir()
    (path / "rows.parquet").write_bytes(b"PAR1")


def object_a_link_loop(path: Path) -> None:
    path.symlink_to(path.name)


def object_a_link_to_a_folder(path: Path) -> None:
    path.symlink_to(path.parent)


UNREADABLE = [  # (how the cache's copy is broken, the OS's reason)
    pytest.param(object_a_folder, "Is a directory", id="a folder"),
    pytest.param(object_a_folder_of_files, "Is a directory", id="a folder of files"),
    pytest.param(object_a_link_loop, "Too many levels of symbolic links", id="a link to itself"),
    pytest.param(object_a_link_to_a_folder, "Is a directory", id="a link to a folder"),
]


@pytest.mark.parametrize(("breaks", "reason"), fast_first(UNREADABLE, keep=2, columns=2))
def test_pr_build_says_a_cache_it_cannot_read_not_missing(tracked, tmp_path, breaks, reason):
    from scripts.lib.errors import DataError
    from scripts.tools.pr_build import readable

    repo = tmp_path / "repo"
    shutil.copytree(tracked, repo, symlinks=True)
    target = cache_object(repo)
    target.unlink()
    breaks(target)
    with pytest.raises(DataError) as raised:
        readable(str(repo), "HEAD", "data/releases/r1/rows.parquet", "main:data/releases/r1/rows.parquet")
    line = str(raised.value)
    assert line == f"main:data/releases/r1/rows.parquet: cannot read it from DVC's cache ({reason})", line


def test_pr_build_still_takes_an_absent_cache_copy_as_missing(tracked, tmp_path):
    """Guard: no copy in the cache (and no remote) is "missing": the base's release is built."""
    from scripts.tools.pr_build import readable

    repo = tmp_path / "repo"
    shutil.copytree(tracked, repo, symlinks=True)
    cache_object(repo).unlink()
    assert readable(str(repo), "HEAD", "data/releases/r1/rows.parquet") is False


# ---------------------------------------------------------------- 3. pr-comment-post at the limits (held)

POST_LIMITS = [  # (the limit, its value)
    pytest.param(resource.RLIMIT_NOFILE, 8, id="ulimit -n 8"),
    pytest.param(resource.RLIMIT_FSIZE, 0, id="ulimit -f 0"),
    pytest.param(resource.RLIMIT_NOFILE, 5, id="ulimit -n 5"),
    pytest.param(resource.RLIMIT_NOFILE, 16, id="ulimit -n 16"),
    pytest.param(resource.RLIMIT_FSIZE, 4096, id="ulimit -f 4 KiB"),
    pytest.param(resource.RLIMIT_FSIZE, 65536, id="ulimit -f 64 KiB"),
]


@pytest.mark.slow  # an interpreter a row: about 2 s
@pytest.mark.parametrize(("which", "value"), POST_LIMITS)
def test_pr_comment_post_posts_whole_at_the_limits(tmp_path, which, value):
    from test_round8_github import TOKEN
    from test_round32e import RawServer
    from test_round33c import github_answers

    from scripts.tools.pr_comment import MARKER

    asked: list[tuple[str, str]] = []
    server = RawServer(lambda method, path: asked.append((method, path)) or github_answers(method, path))
    body = tmp_path / "body.md"
    body.write_text(f"{MARKER}\nhello\n", encoding="utf-8")
    names = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": server.url, "NO_PROXY": "*"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "scripts", "pr-comment-post", str(body), "--pr", "1"],
            cwd=tmp_path,
            env={**env(), **names, "PYTHONPATH": str(REPO)},
            preexec_fn=limited(which, value),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.close()
    assert done.returncode == 0 and "pr-comment-post: created" in done.stdout, done.stderr
    assert asked[-1] == ("POST", "/repos/o/r/issues/1/comments")  # the comment, whole (RawServer read it all)
