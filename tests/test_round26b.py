"""Round 26b: outputs inside the repository's own stores, one table per class (every row failed before its
fix), on real files and runs of the command:

1. Only pr-comment, pr-build, publish and replay-history refused an output under `.git` or `.dvc`
   (side_inputs.check_outside_stores): every other command wrote where it was told, whatever the spelling:
   `params-doc .git/x.md`, through a link to .git, into .dvc/tmp or .dvc/cache, into the DVC cache that
   `dvc cache dir` moved or a local remote's folder (.dvc/config). Refused now in one line naming the output
   and the store, where every output is locked (temps.output_lock -> temps.check_outside_stores), so every
   command and stage inherits it.
2. An output named as a file git or DVC reads in the repository, absent there (`params-doc dvc.yaml`, `a/dvc.yaml`,
   `a/raw.dvc`, `.gitignore`, `.dvcignore`, `dvc.lock`), was written at exit 0: a markdown dvc.yaml DVC collects, a
   .dvc file it tracks, a .gitignore that hides files from git. Refused now in one line (temps.CONTROL_FILES;
   params.yaml and .gitmodules at the root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import env
from helpers.commands import cli
from helpers.workspace import error_line

ROOT = Path(__file__).resolve().parents[1]


def repository(root: Path) -> Path:
    """A git and DVC repository with params.yaml, a cache moved by `dvc cache dir`, and a local remote."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, capture_output=True, env=env())
    (root / ".dvc" / "cache").mkdir(parents=True)
    (root / ".dvc" / "tmp").mkdir()
    remote = root.parent / "remote"
    remote.mkdir(exist_ok=True)
    (root / ".dvc" / "config").write_text(
        f"[core]\n    remote = loc\n[cache]\n    dir = ../moved-cache\n['remote \"loc\"']\n    url = {remote}\n",
        encoding="utf-8",
    )
    (root / "moved-cache").mkdir()
    (root / "a").mkdir()
    os.symlink(".git", root / "gitlink")
    return root


INTO_A_STORE = {  # case: (command, output as the user spells it)
    "params-doc into .git": ("params-doc", ".git/x.md"),
    "params-doc into ./.git": ("params-doc", "./.git/x.md"),
    "params-doc into a/../.git": ("params-doc", "a/../.git/x.md"),
    "params-doc through a link to .git": ("params-doc", "gitlink/x.md"),
    "params-doc into .dvc/tmp": ("params-doc", ".dvc/tmp/x.md"),
    "params-doc into .dvc/cache": ("params-doc", ".dvc/cache/x.md"),
    "params-doc into the moved DVC cache": ("params-doc", "moved-cache/x.md"),
    "params-doc into a local remote": ("params-doc", "../remote/x.md"),
    "clean-rules into .git/hooks": ("clean-rules", ".git/hooks/rules.json"),
    "clean-rules into .dvc": ("clean-rules", ".dvc/rules.json"),
    "recipes into .git": ("recipes", ".git/recipes"),
    "recipes into .dvc/tmp": ("recipes", ".dvc/tmp/recipes"),
}


@pytest.mark.parametrize("case", INTO_A_STORE)
def test_no_command_writes_into_the_repositorys_stores(tmp_path, monkeypatch, capfd, case):
    command, out = INTO_A_STORE[case]
    root = repository(tmp_path / "repo")
    done = cli([command, out], root, monkeypatch, capfd)
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-2000:]
    line = error_line(done.stderr)
    assert "the repository store" in line and os.path.normpath(out) in line, line
    assert not os.path.lexists(root / out)


CONTROL_FILES = {  # case: (command, output at the repository's root, absent there)
    "params-doc as dvc.yaml": ("params-doc", "dvc.yaml"),
    "params-doc as dvc.lock": ("params-doc", "dvc.lock"),
    "params-doc as .gitignore": ("params-doc", ".gitignore"),
    "params-doc as .dvcignore": ("params-doc", ".dvcignore"),
    "clean-rules as dvc.yaml": ("clean-rules", "./dvc.yaml"),
    "clean-rules as .gitattributes": ("clean-rules", "a/../.gitattributes"),
    "params-doc as params.yaml's neighbour .gitmodules": ("params-doc", ".gitmodules"),
    "params-doc as a dvc.yaml below the root": ("params-doc", "a/dvc.yaml"),
    "params-doc as a .dvc file": ("params-doc", "a/raw.dvc"),
    "clean-rules as a .gitignore below the root": ("clean-rules", "a/.gitignore"),
    "clean-rules as a .dvc file at the root": ("clean-rules", "data.dvc"),
}


@pytest.mark.parametrize("case", CONTROL_FILES)
def test_no_command_writes_a_file_git_or_dvc_reads_at_the_root(tmp_path, monkeypatch, capfd, case):
    command, out = CONTROL_FILES[case]
    root = repository(tmp_path / "repo")
    done = cli([command, out], root, monkeypatch, capfd)
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-2000:]
    line = error_line(done.stderr)
    assert "a file git or DVC reads" in line and os.path.normpath(out) in line, line
    assert not os.path.lexists(root / out)


def test_an_experiments_temp_workspace_inside_dot_dvc_writes_its_outputs(tmp_path, monkeypatch, capfd):
    """`dvc exp run --temp` runs the stages in a whole repository inside the outer one's .dvc/tmp: its own
    outputs are outside its own stores, so they are written."""
    outer = repository(tmp_path / "repo")
    inner = repository(outer / ".dvc" / "tmp" / "exps" / "run")
    done = cli(["params-doc", "docs/params.md"], inner, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (inner / "docs" / "params.md").is_file()


def test_a_remote_folder_holding_the_repository_is_no_store_for_its_outputs(tmp_path, monkeypatch, capfd):
    """A local remote at a folder above the repository (`url = /data` for /data/me/repo) would refuse every output."""
    root = repository(tmp_path / "repo")
    (root / ".dvc" / "config.local").write_text(f"['remote \"up\"']\n    url = {tmp_path}\n", encoding="utf-8")
    done = cli(["params-doc", "docs/params.md"], root, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
