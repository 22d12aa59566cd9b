"""Round 38c: hostile names given to `tag` and `publish`; every row failed before its fix.

A  `tag NAME` with a name git cannot take as a tag (a newline, an escape code, U+202E, `..`, `-x`, 300 characters,
   `a..b`, `a.lock`, `@{`): tag locked .git/t2i-tag.lock and opened DVC first, then said `dvc.yaml: no stage ...`
   (or, for a release of that name, refused only at `git tag` after the whole DVC check; `-x` went to git as an
   option); now one line naming the name and why, before any git command or file
B  `publish --repo-id` the Hub refuses (a leading or trailing '-' or '.'): the folder was written, its card naming
   the id, and every request refused; now one line before any file or request
C  `publish --tag` a name git cannot take (`-x`, `a..b`, a newline, U+202E): checked only against the refs after
   --out's lock was taken; now one line before
D  `publish --out` a path with a newline or an escape code: the folder was made under that name; now one line
Held (rows here, passing before): an existing tag of the user's (`tag already exists`, the tag left as it was);
--repo-id `../x`, `a/b/c`, 200 characters, unicode, an empty owner (the Hub's pattern refused them already); an
upload with a hostile name sent no request (the tag's check came before it, and still does: now the names' first).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from test_publish import TOKEN, FakeHub, tiny_release

from helpers import REPO, env
from helpers.commands import cli

LOCK = Path(".git") / "t2i-tag.lock"


def git_repo(root: Path) -> Path:
    """A DVC-looking git repository with one commit and the user's own tag `mine`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".dvc").mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"], ["tag", "mine"]):
        subprocess.run(["git", *args], cwd=root, env=env(), check=True, capture_output=True)
    return root


def user_tags(root: Path) -> str:
    return subprocess.run(["git", "show-ref", "--tags"], cwd=root, capture_output=True, text=True).stdout


def one_escaped_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].isprintable(), lines[0]
    return lines[0]


TAG_NAMES = {
    "newline": "v2\nv3",
    "escape code": "v2\x1b[31m",
    "U+202E": "v2\u202e3v",
    "dot dot": "..",
    "option": "-x",
    "300 characters": "v" * 300,
    "a..b": "a..b",
    "a.lock": "a.lock",
    "@{": "a@{b",
    "space": "v 2",
}


@pytest.mark.parametrize("name", TAG_NAMES.values(), ids=TAG_NAMES.keys())
def test_a_tag_name_git_cannot_take_is_one_line_before_any_git_write(tmp_path, monkeypatch, capfd, name):
    root = git_repo(tmp_path / "repo")
    before = user_tags(root)
    result = cli(["tag", "--", name], root, monkeypatch, capfd)
    assert result.returncode == 2
    assert "not a valid git tag name" in one_escaped_line(result.stderr)
    assert not (root / LOCK).exists()  # before any git command or file
    assert user_tags(root) == before


@pytest.mark.slow  # held before: opens DVC (a second of imports)
def test_an_existing_tag_of_the_users_is_left_as_it_was(tmp_path, monkeypatch, capfd):  # held before
    root = git_repo(tmp_path / "repo")
    before = user_tags(root)
    result = cli(["tag", "mine"], root, monkeypatch, capfd)
    assert result.returncode == 2 and "tag mine already exists" in one_escaped_line(result.stderr)
    assert user_tags(root) == before


def publish_args(extra: list[str], repo_id: str = "me/v2") -> list[str]:
    return ["publish", "v2", f"--repo-id={repo_id}", "--dry-run", "--out", "hub", *extra]


REPO_IDS = {
    "leading dash": "-me/v2",
    "trailing dash": "me-/v2",
    "leading dot": ".me/v2",
    "trailing dot": "me/v2.",
    "dot name": "me/.v2",
}
HELD_REPO_IDS = {
    "dot dot": "../x",
    "three parts": "a/b/c",
    "200 characters": "me/" + "v" * 200,
    "unicode": "mé/v2",
    "empty owner": "/v2",
}
TAGS = {"option": "-x", "a..b": "a..b", "newline": "v2\nv3", "U+202E": "v2\u202e3v", "a.lock": "v2.lock"}
OUTS = {"newline": "hub\nx", "escape code": "hub\x1b[31m", "U+202E": "hub\u202ex"}


@pytest.mark.parametrize(
    ("argv", "said"),
    [pytest.param(publish_args([], r), "--repo-id", id=f"repo-id {k}") for k, r in REPO_IDS.items()]
    + [pytest.param(publish_args(["--tag", t]), "not a valid git tag name", id=f"tag {k}") for k, t in TAGS.items()]
    + [pytest.param(publish_args(["--out", o]), "--out", id=f"out {k}") for k, o in OUTS.items()],
)
def test_a_publish_name_the_hub_or_git_refuses_is_one_line_before_any_file(tmp_path, monkeypatch, capfd, argv, said):
    root = tiny_release(tmp_path / "repo")
    made = set(root.iterdir())
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 2
    assert said in one_escaped_line(result.stderr)
    assert set(root.iterdir()) == made  # no folder, lock or card written


@pytest.mark.slow  # held before; the default tier's time is the rows that failed
@pytest.mark.parametrize("repo_id", HELD_REPO_IDS.values(), ids=HELD_REPO_IDS.keys())
def test_a_repo_id_of_another_shape_is_refused_as_before(tmp_path, monkeypatch, capfd, repo_id):  # held before
    root = tiny_release(tmp_path / "repo")
    result = cli(publish_args([], repo_id), root, monkeypatch, capfd)
    assert result.returncode == 2 and "--repo-id" in one_escaped_line(result.stderr)


@pytest.mark.slow  # real processes: python -m scripts publish takes seconds to import on two cores
@pytest.mark.parametrize(
    "extra",
    [["--repo-id=-me/v2"], ["--repo-id=me/v2", "--tag=-x"], ["--repo-id=me/v2", "--out=hub\nx"]],
    ids=["repo-id", "tag", "out"],
)
def test_an_upload_with_a_hostile_name_sends_no_request(tmp_path, extra):
    root = tiny_release(tmp_path / "repo")
    FakeHub.requests, FakeHub.files = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    environ = {k: v for k, v in env().items() if not k.startswith("HF_")}
    environ.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", HF_TOKEN=TOKEN, NO_PROXY="127.0.0.1")
    environ.update(PYTHONPATH=str(REPO))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scripts", "publish", "v2", *extra],
            cwd=root,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert result.returncode == 2
    one_escaped_line(result.stderr)
    assert FakeHub.requests == []
    assert not (root / "dist").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["-x", "a..b", "v2\x1b[31m"], ids=["option", "a..b", "escape code"])
def test_tag_as_a_process_refuses_a_hostile_name_in_one_line(tmp_path, name):
    root = git_repo(tmp_path / "repo")
    before = user_tags(root)
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "tag", "--", name],
        cwd=root,
        env={**env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "not a valid git tag name" in one_escaped_line(result.stderr)
    assert not (root / LOCK).exists() and user_tags(root) == before
