"""scripts/lib/dvc_cache.py: a directory output as dvc.lock records it, read from a real DVC cache; every
lock or cache it cannot read means "nothing known", and no listing names a path outside the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.lib.dvc_cache import cached_directory, locked_output_oid

MAKE = (
    "python -c \"import pathlib; p = pathlib.Path('out/sub'); p.mkdir(parents=True); "
    "pathlib.Path('out/a.txt').write_text('a'); (p / 'b.txt').write_text('b'); "
    "pathlib.Path('single.txt').write_text('s')\""
)


def dvc(root: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A DVC repo whose one stage wrote out/ (a folder) and single.txt (a file), both cached."""
    root = tmp_path_factory.mktemp("repo")
    stages = {"stages": {"make": {"cmd": MAKE, "outs": ["out", "single.txt"]}}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages), encoding="utf-8")
    dvc(root, "init", "--no-scm", "-q")
    dvc(root, "repro", "-q")
    return root


def copy(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "repo", symlinks=True)
    return tmp_path / "repo"


def test_a_folder_output_is_listed_from_the_cache_even_after_the_workspace_lost_it(built, tmp_path):
    repo = copy(built, tmp_path)
    shutil.rmtree(repo / "out")  # what DVC does before it runs the stage again
    listed = cached_directory(repo / "out", repo)
    assert sorted(listed) == ["a.txt", "sub/b.txt"]
    assert listed["a.txt"].read_text() == "a" and listed["sub/b.txt"].read_text() == "b"
    assert all(repo / ".dvc" / "cache" in path.parents for path in listed.values())


def doctor_lock(repo: Path, md5: str) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    next(o for o in lock["stages"]["make"]["outs"] if o["path"] == "out")["md5"] = md5
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")


def doctor_listing(repo: Path, md5: str) -> None:
    oid = locked_output_oid(repo / "out", repo)
    listing = repo / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]
    entries = json.loads(listing.read_text(encoding="utf-8"))
    entries[0]["md5"] = md5
    listing.chmod(0o644)
    listing.write_text(json.dumps(entries), encoding="utf-8")


NOTHING_KNOWN = [
    ("an output dvc.lock does not list", lambda repo: repo / "other"),
    ("a file output", lambda repo: repo / "single.txt"),
    ("a folder outside the repository", lambda repo: repo.parent / "out"),
    ("no dvc.lock", lambda repo: ((repo / "dvc.lock").unlink(), repo / "out")[1]),
    (
        "a dvc.lock that is not YAML",
        lambda repo: ((repo / "dvc.lock").write_text("stages: [", encoding="utf-8"), repo / "out")[1],
    ),
    (
        "a dvc.lock that is a list",
        lambda repo: ((repo / "dvc.lock").write_text("- 1\n", encoding="utf-8"), repo / "out")[1],
    ),
    ("a lock md5 that is a path", lambda repo: (doctor_lock(repo, "../../../../etc/passwd.dir"), repo / "out")[1]),
    ("a listing missing from the cache", lambda repo: (shutil.rmtree(repo / ".dvc" / "cache"), repo / "out")[1]),
    ("no .dvc folder", lambda repo: (shutil.rmtree(repo / ".dvc"), repo / "out")[1]),
]


@pytest.mark.parametrize("case, arrange", NOTHING_KNOWN, ids=[c[0] for c in NOTHING_KNOWN])
def test_whatever_cannot_be_read_means_nothing_known(built, tmp_path, case, arrange):
    repo = copy(built, tmp_path)
    assert cached_directory(arrange(repo), repo) == {}


def test_a_listing_entry_naming_a_path_is_skipped(built, tmp_path):
    repo = copy(built, tmp_path)
    doctor_listing(repo, "../../../../../etc/passwd")
    assert len(cached_directory(repo / "out", repo)) == 1  # the other entry only
