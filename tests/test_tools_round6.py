"""The sixth hostile round's side-tool breaks (diff, pr-build, pr-comment, publish, replay-history,
dedup-preview); every row failed before its fix. Real processes (`python -m scripts`) in real git and
DVC repositories in tmp folders, nothing mocked.

C1  pr-build passed a revision to `git show` unchecked: `-- --output=FILE` wrote FILE anywhere
C2  pr-build with an unknown base revision succeeded (every release "changed")
C3  pr-build's `git worktree add` failing was a traceback
C4  diff / pr-comment in a clone without the DVC cache: DVC's DataIndexDirError traceback
C5  diff on a corrupt removed / dropped / clusters table: pyarrow's traceback
C6  pr-comment copied a private JPEG into sheets/ through a linked release folder
C7  publish copied a linked README.md or preview.jpg, and a hard-linked image, into the Hub folder
C8  replay-history copied the target of a tracked link into DEST
C9  dedup-preview wrote SOURCE.preview.html outside --data for a source name with `/` or `..`
C10 pr-comment and diff hung forever on a FIFO (dvc.lock, params.yaml, preview.jpg, rows.parquet)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_refused_outputs import python

from helpers import REPO, dvc_init, env
from helpers.tiers import fast_first
from helpers.workspace import write_params

pytestmark = pytest.mark.usefixtures("no_proxy")
JPEG_BYTES = b"\xff\xd8\xff\xe0 a private picture"


def one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, (result.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def dvc_repo(root: Path, params: str = "releases:\n  r1: {}\n") -> Path:
    """A git repository with DVC, its params.yaml committed."""
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=root)
    dvc_init(root)
    (root / "params.yaml").write_text(params, encoding="utf-8")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def rows_table(folder: Path, source: str = "s1") -> None:
    """A release's rows.parquet (no images: text rows), two rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame(
        {"id": ["a", "b"], "source": [source] * 2, "split": ["train", "validation"], "text": ["x", "y"]}
    ).assign(image=None)
    rows.to_parquet(folder / "rows.parquet")


# ---------------------------------------------------------------- C1, C2. pr-build's base revision

INJECTED = {  # revisions git read as `git show` options: --output wrote FILE:dvc.lock wherever it named
    "--output= an absolute path": lambda tmp: f"--output={tmp}/inj",
    "--output= a path in the repository": lambda tmp: "--output=inj",
    "--output= a path up and out": lambda tmp: "--output=../inj-up",
}


@pytest.mark.parametrize("case", sorted(INJECTED))
def test_pr_build_never_passes_a_revision_as_an_option(tmp_path, case):
    repo = dvc_repo(tmp_path / "repo")
    rev = INJECTED[case](tmp_path)
    one_error_line(python(["pr-build", "--out", tmp_path / "o", "--", rev], repo), "not a git revision")
    assert not list(tmp_path.rglob("inj*")) and not (tmp_path / "o" / "build.json").exists()


UNKNOWN = ["no-such-rev", "HEAD~5", "0" * 40, "main@{99}"]


@pytest.mark.parametrize("rev", UNKNOWN)
def test_pr_build_refuses_an_unknown_base(tmp_path, rev):
    repo = dvc_repo(tmp_path / "repo")
    done = python(["pr-build", rev, "--out", tmp_path / "o"], repo)
    one_error_line(done, "not a git revision")
    assert b"$ dvc" not in done.stdout and not (tmp_path / "o").exists()  # refused before any work


# ---------------------------------------------------------------- C3. pr-build's worktree


def under_a_file(repo: Path, tmp: Path) -> Path:
    (tmp / "somefile").write_text("a file\n", encoding="utf-8")
    return tmp / "somefile" / "sub"


def stale_registered_worktree(repo: Path, tmp: Path) -> Path:
    git("worktree", "add", "-q", "--detach", str(tmp / "stale"), "HEAD", cwd=repo)
    shutil.rmtree(tmp / "stale")  # still registered: `git worktree add` refuses the path
    return tmp / "stale"


def under_a_dangling_link(repo: Path, tmp: Path) -> Path:
    (tmp / "dangling").symlink_to(tmp / "nowhere")
    return tmp / "dangling" / "sub"


@pytest.mark.parametrize(
    "make", [under_a_file, stale_registered_worktree, under_a_dangling_link], ids=lambda f: f.__name__
)
def test_pr_build_failing_worktree_is_one_line(tmp_path, make):
    repo = dvc_repo(tmp_path / "repo")  # r1 at the base, its data nowhere: pr-build builds it there
    base_dir = make(repo, tmp_path)
    one_error_line(python(["pr-build", "HEAD", "--out", tmp_path / "o", "--base-dir", base_dir], repo), "worktree")


# ---------------------------------------------------------------- C4. no DVC cache (a fresh clone)


def without_cache(tmp: Path) -> Path:
    """r1's folder tracked by `dvc add` and committed, then the cache and the folder gone."""
    repo = dvc_repo(tmp / "repo")
    rows_table(repo / "data" / "releases" / "r1")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/releases/r1"], cwd=repo, check=True, env=env())
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "r1", cwd=repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "releases" / "r1")
    return repo


NO_CACHE = {
    "diff HEAD HEAD": ["diff", "HEAD", "HEAD"],
    "diff --release r1 HEAD HEAD": ["diff", "HEAD", "HEAD", "--release", "r1"],
    "diff --format json HEAD HEAD": ["diff", "HEAD", "HEAD", "--format", "json"],
}


@pytest.mark.parametrize("case", sorted(NO_CACHE))
def test_diff_without_the_dvc_cache_says_to_pull(tmp_path, case):
    repo = without_cache(tmp_path)
    one_error_line(python(NO_CACHE[case], repo), "dvc pull")


@pytest.mark.parametrize("head", fast_first(["HEAD", "main", "workspace"]))
def test_pr_comment_without_the_dvc_cache_notes_it(tmp_path, head):
    repo = without_cache(tmp_path)
    if head == "workspace":  # the workspace's lock differs from HEAD's: r1 is read at both
        (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    done = python(["pr-comment", "HEAD", head, "--out", tmp_path / "o"], repo)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()[-2000:]
    assert "dvc pull" in (tmp_path / "o" / "comment.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- C5. corrupt tables diff reads

TABLES = ["data/releases/r1/removed.parquet", "data/clean/s1.dropped.parquet", "data/dedup/s1.clusters.parquet"]
CORRUPT = {"garbage": b"not parquet at all", "parquet magic only": b"PAR1PAR1", "truncated": None}


@pytest.mark.parametrize("how", sorted(CORRUPT))
@pytest.mark.parametrize("table", fast_first(TABLES))
def test_diff_names_a_corrupt_table(tmp_path, table, how):
    repo = dvc_repo(tmp_path / "repo")
    rows_table(repo / "data" / "releases" / "r1")
    path = repo / table
    path.parent.mkdir(parents=True, exist_ok=True)
    whole = (repo / "data" / "releases" / "r1" / "rows.parquet").read_bytes()
    path.write_bytes(CORRUPT[how] if CORRUPT[how] is not None else whole[: len(whole) // 2])
    one_error_line(python(["diff", "workspace", "workspace"], repo), Path(table).name, "workspace")


# ---------------------------------------------------------------- C6. pr-comment's sheets through links


def release_folder_linked(repo: Path, private: Path) -> None:
    (repo / "data" / "releases").mkdir(parents=True)
    (repo / "data" / "releases" / "r1").symlink_to(private)


def releases_folder_linked(repo: Path, private: Path) -> None:
    (repo / "data").mkdir()
    (private.parent / "rels").mkdir()
    (private.parent / "rels" / "r1").symlink_to(private)
    (repo / "data" / "releases").symlink_to(private.parent / "rels")


def data_folder_linked(repo: Path, private: Path) -> None:
    (private.parent / "d" / "releases").mkdir(parents=True)
    (private.parent / "d" / "releases" / "r1").symlink_to(private)
    (repo / "data").symlink_to(private.parent / "d")


@pytest.mark.parametrize(
    "link", [release_folder_linked, releases_folder_linked, data_folder_linked], ids=lambda f: f.__name__
)
def test_pr_comment_copies_no_sheet_from_outside_the_repository(tmp_path, link):
    from PIL import Image

    repo = dvc_repo(tmp_path / "repo", "releases: {}\n")
    (repo / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")  # r1 new in the workspace
    private = tmp_path / "privrel"
    private.mkdir()
    Image.new("RGB", (8, 8), "red").save(private / "preview.jpg")
    link(repo, private)
    one_error_line(python(["pr-comment", "--out", tmp_path / "o", "HEAD", "workspace"], repo), "preview.jpg")
    assert not (tmp_path / "o" / "sheets").exists()


# ---------------------------------------------------------------- C7. publish reads only the release


def readme_linked_out(release: Path, tmp: Path) -> str:
    (tmp / "notes.txt").write_text("my private notes\n", encoding="utf-8")
    (release / "README.md").unlink()
    (release / "README.md").symlink_to(tmp / "notes.txt")
    return "README.md"


def preview_linked_out(release: Path, tmp: Path) -> str:
    (tmp / "private.jpg").write_bytes(JPEG_BYTES)
    (release / "preview.jpg").unlink()
    (release / "preview.jpg").symlink_to(tmp / "private.jpg")
    return "preview.jpg"


def image_hard_linked(release: Path, tmp: Path) -> str:
    image = next((release / "train" / "images" / "diffusiondb").iterdir())
    shutil.copyfile(image, tmp / "private.png")  # any file of the user's, under the image's name
    image.unlink()
    os.link(tmp / "private.png", image)
    return image.name


def readme_hard_linked(release: Path, tmp: Path) -> str:
    (tmp / "notes.md").write_text("# my private notes\n", encoding="utf-8")
    (release / "README.md").unlink()
    os.link(tmp / "notes.md", release / "README.md")
    return "README.md"


@pytest.mark.parametrize(
    "make", [readme_linked_out, preview_linked_out, image_hard_linked, readme_hard_linked], ids=lambda f: f.__name__
)
def test_publish_reads_no_file_from_outside_the_release(tmp_path, make):
    from test_publish import tiny_release

    root = tiny_release(tmp_path / "repo")
    name = make(root / "data" / "releases" / "v2", tmp_path)
    args = ["publish", "v2", "--repo-id", "a/b", "--dry-run", "--out", tmp_path / "hub"]
    one_error_line(python(args, root), name)
    assert not (tmp_path / "hub").exists()


def cache_linked(root: Path, cache: Path) -> None:
    """Every file of the release hard-linked into `cache` under its md5, as `dvc checkout` with
    cache.type hardlink leaves a workspace."""
    import hashlib

    for file in (root / "data" / "releases" / "v2").rglob("*"):
        if file.is_file():
            md5 = hashlib.md5(file.read_bytes(), usedforsecurity=False).hexdigest()
            cached = cache / "files" / "md5" / md5[:2] / md5[2:]
            cached.parent.mkdir(parents=True, exist_ok=True)
            if cached.exists():  # equal bytes: one cache file, both workspace files linked to it
                file.unlink()
                os.link(cached, file)
            else:
                os.link(file, cached)


def test_publish_reads_a_release_hard_linked_into_its_own_dvc_cache(tmp_path):
    from test_publish import tiny_release

    root = tiny_release(tmp_path / "repo")
    git("init", "-q", "-b", "main", cwd=root)
    dvc_init(root)
    cache_linked(root, root / ".dvc" / "cache")
    args = ["publish", "v2", "--repo-id", "a/b", "--dry-run", "--out", tmp_path / "hub"]
    done = python(args, root)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert (tmp_path / "hub" / "README.md").is_file()


def test_publish_reads_a_release_hard_linked_into_a_cache_set_by_dvc_cache_dir(tmp_path):
    """`dvc cache dir` puts the cache anywhere (a shared disk): the proof is the cache DVC reads."""
    from test_publish import tiny_release

    root = tiny_release(tmp_path / "repo")
    git("init", "-q", "-b", "main", cwd=root)
    dvc_init(root)
    subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", str(tmp_path / "shared")], cwd=root, check=True)
    cache_linked(root, tmp_path / "shared")
    args = ["publish", "v2", "--repo-id", "a/b", "--dry-run", "--out", tmp_path / "hub"]
    done = python(args, root)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert (tmp_path / "hub" / "README.md").is_file()


# ---------------------------------------------------------------- C8. replay-history keeps tracked links

LINKS = {  # a tracked link -> its target
    "absolute, to a secret": lambda tmp: str(tmp / "secret.txt"),
    "relative, up and out to a secret": lambda tmp: "../secret.txt",
    "to a tracked file": lambda tmp: "params.yaml",
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_replay_history_copies_a_tracked_link_as_a_link(tmp_path, case):
    (tmp_path / "secret.txt").write_text("the secret\n", encoding="utf-8")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(REPO / "params.yaml", src / "params.yaml")
    data = yaml.safe_load((src / "params.yaml").read_text(encoding="utf-8"))
    data["releases"] = {}  # nothing to replay: only the copy of the tracked files runs
    (src / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    target = LINKS[case](tmp_path)
    (src / "notes.txt").symlink_to(target)
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "src", cwd=src)
    done = python(["replay-history", tmp_path / "dest"], src)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    copied = tmp_path / "dest" / "notes.txt"
    assert copied.is_symlink() and os.readlink(copied) == target


# ---------------------------------------------------------------- C9. dedup-preview's source name


def _tables(folder: Path, stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ["a", "b"], "text": ["x", "x!"]}).to_parquet(folder / f"{stem}.parquet")
    pd.DataFrame({"id": ["b"], "duplicate_of": ["a"], "jaccard": [0.9]}).to_parquet(folder / f"{stem}.clusters.parquet")


SOURCES = {  # the source name -> where its tables lie (the page landed beside them)
    "up and out of --data": ("../../w/evil", "w"),
    "an absolute path": ("{tmp}/abs/evil", "abs"),
    "down then up and out": ("x/../../../w/evil", "w"),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_dedup_preview_takes_only_a_plain_source_name(tmp_path, case):
    name, folder = SOURCES[case]
    write_params(tmp_path)
    (tmp_path / "data" / "clean" / "x").mkdir(parents=True)
    (tmp_path / "data" / "dedup" / "x").mkdir(parents=True)
    _tables(tmp_path / folder, "evil")
    one_error_line(python(["dedup-preview", name.format(tmp=tmp_path)], tmp_path), "not a source name")
    assert not list(tmp_path.rglob("*.preview.html"))


# ---------------------------------------------------------------- C10. FIFOs never read


def fifo_dvc_lock(repo: Path) -> tuple[list, str]:
    os.mkfifo(repo / "dvc.lock")
    return ["pr-comment", "--out", repo.parent / "o", "HEAD", "workspace"], "dvc.lock"


def fifo_params_for_diff(repo: Path) -> tuple[list, str]:
    (repo / "params.yaml").unlink()
    os.mkfifo(repo / "params.yaml")
    return ["diff", "HEAD", "workspace"], "params.yaml"


def fifo_params_for_pr_comment(repo: Path) -> tuple[list, str]:
    (repo / "params.yaml").unlink()
    os.mkfifo(repo / "params.yaml")
    return ["pr-comment", "--out", repo.parent / "o", "HEAD", "workspace"], "params.yaml"


def fifo_preview(repo: Path) -> tuple[list, str]:
    (repo / "data" / "releases" / "r2").mkdir(parents=True)
    (repo / "params.yaml").write_text("releases:\n  r1: {}\n  r2: {}\n", encoding="utf-8")
    os.mkfifo(repo / "data" / "releases" / "r2" / "preview.jpg")
    return ["pr-comment", "--out", repo.parent / "o", "HEAD", "workspace"], "preview.jpg"


def fifo_rows(repo: Path) -> tuple[list, str]:
    (repo / "data" / "releases" / "r1").mkdir(parents=True)
    os.mkfifo(repo / "data" / "releases" / "r1" / "rows.parquet")
    return ["diff", "workspace", "workspace"], "rows.parquet"


@pytest.mark.parametrize(
    "make",
    fast_first([fifo_dvc_lock, fifo_params_for_diff, fifo_params_for_pr_comment, fifo_preview, fifo_rows], keep=2),
    ids=lambda f: f.__name__,
)
def test_a_fifo_is_refused_never_read(tmp_path, make):
    repo = dvc_repo(tmp_path / "repo")
    args, word = make(repo)
    one_error_line(python(args, repo, timeout=40), word, "not a regular file")
