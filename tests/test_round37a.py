"""Round 37a: replay-history stopped by Ctrl-C or SIGTERM while its `dvc repro` child runs, and into an immutable
DEST, on real files and real runs of `python -m scripts` (a tiny source repository with one release whose one
stage marks data/started, then waits). Rows marked so failed before their fix:

1. Stopped mid-`dvc repro` (SIGINT to the group, as Ctrl-C sends it, or SIGTERM): dvc ends at once on SIGTERM,
   and child_group.stop_group returned once dvc, the group's leader, had ended: a stage that ignores SIGTERM
   (or is slow to end) went on alone after the run had removed DEST. The whole group is now waited for, and
   SIGKILLed after STOP_SECONDS. The stage that obeys passed before (no row had tried it).
2. An immutable DEST said `.git: Operation not permitted`, DEST unnamed: the line now names DEST.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers import REPO, env
from helpers.commands import cli
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")

IGNORES_SIGTERM = "signal.signal(signal.SIGTERM, signal.SIG_IGN); "


def stage(ignores_sigterm: bool) -> str:
    code = "import pathlib, signal, time; " + (IGNORES_SIGTERM if ignores_sigterm else "")
    code += "pathlib.Path('data/started').write_text('x'); time.sleep(60); pathlib.Path('data/out').write_text('x')"
    return f'python -c \\"{code}\\"'


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def tiny_history(root: Path, ignores_sigterm: bool = False) -> Path:
    """A git repository with .dvc/, one release and a dvc.yaml whose one stage marks data/started, then waits."""
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text("", encoding="utf-8")
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    cmd = stage(ignores_sigterm)
    (root / "dvc.yaml").write_text(f'stages:\n  wait:\n    cmd: "{cmd}"\n    outs:\n    - data/out\n', encoding="utf-8")
    (root / "README.md").write_text("readme\n", encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def start_replay(src: Path, dest: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts", "replay-history", str(dest)],
        cwd=src,
        env={**env(), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- 1. stopped while `dvc repro` runs


STOPPED = [  # (the stage ignores SIGTERM, the signal, sent to the group (Ctrl-C) or to the tool alone, exit)
    pytest.param(True, "SIGINT", True, 130, id="Ctrl-C, a stage ignoring SIGTERM (failed before)"),
    pytest.param(True, "SIGTERM", True, 143, id="SIGTERM to the group, a stage ignoring it (failed before)"),
    pytest.param(True, "SIGTERM", False, 143, id="SIGTERM to the tool alone, a stage ignoring it (failed before)"),
    pytest.param(True, "SIGINT", False, 130, id="SIGINT to the tool alone, a stage ignoring SIGTERM (failed before)"),
    pytest.param(False, "SIGINT", True, 130, id="Ctrl-C, a stage that obeys"),
    pytest.param(False, "SIGTERM", False, 143, id="SIGTERM to the tool alone, a stage that obeys"),
]


@pytest.mark.slow  # a real replay up to its stage, with dvc: 3-6 s a row
@pytest.mark.parametrize(("ignores", "signame", "to_group", "code"), STOPPED)
def test_replay_stopped_while_dvc_runs_leaves_no_child_and_nothing(tmp_path, ignores, signame, to_group, code):
    src = tiny_history(tmp_path / "src", ignores_sigterm=ignores)
    before = tree(src)
    out = tmp_path / "out"
    proc = start_replay(src, out / "dest")
    try:
        wait_for(out / "dest" / "data" / "started", proc)
        children = descendants(proc.pid)
        assert any("dvc" in " ".join(p.cmdline()) for p in children), children
        (os.killpg if to_group else os.kill)(proc.pid, getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
        left = alive(children)  # right as the tool exits: it waited for its whole child group
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for child in alive(descendants(proc.pid)) + alive(locals().get("children", [])):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    assert proc.returncode == code, err
    assert err.strip() == f"interrupted ({signame})", err  # one line
    assert left == [], [p.cmdline() for p in left]
    assert not out.exists()  # nothing of the run left
    assert tree(src) == before


# ---------------------------------------------------------------- 2. an immutable DEST is named


@contextlib.contextmanager
def immutable(folder: Path):
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("deep", ["dest", "a/dest", "a/b/dest", "my replay"])
def test_an_immutable_dest_is_named(tmp_path, monkeypatch, capfd, deep):
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    (src / "docs" / "a.md").write_text("a\n", encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "base", cwd=src)
    dest = tmp_path / "out" / deep
    dest.mkdir(parents=True)
    with immutable(dest):
        done = cli(["replay-history", str(dest)], src, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and str(dest) in line and "Operation not permitted" in line, done.stderr
    assert list(dest.iterdir()) == []
