"""Shared test fixtures: a real copy of this repository built with a real `dvc repro`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


def env() -> dict:
    """The test's interpreter first on PATH, so dvc.yaml's `python -m scripts` uses this venv."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **GIT_ENV, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str] | str, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    if isinstance(cmd, str):
        cmd = cmd.split()
    if cmd[0] in ("dvc", "python"):
        cmd = [sys.executable, "-m", *cmd[1:]] if cmd[0] == "python" else [sys.executable, "-m", "dvc", *cmd[1:]]
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def repo_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore: the tree as a fresh clone would get it."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    return sorted({f for f in out.decode().split("\0") if f and (REPO / f).is_file()})


def copy_repo(dest: Path) -> Path:
    """A fresh git repository holding this tree, committed, with no DVC outputs or cache."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in repo_files():
        if name == "dvc.lock":
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "test copy"], dest)
    return dest


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory) -> Path:
    """This repository, copied and built once per test session with `dvc repro`."""
    repo = copy_repo(tmp_path_factory.mktemp("built") / "repo")
    run("dvc repro", repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "built"], repo)
    return repo


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny SD2-architecture model, built once per test session (single-threaded, as in CI)."""
    import torch

    from scripts.tiny_model import save_tiny_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("model") / "tiny-sd2"
    save_tiny_model({}, out)
    return out


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is absent")
    return FIXTURES
