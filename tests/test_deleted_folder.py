"""A command started in a folder that was deleted (removed from another terminal, or by a checkout) says so in one
line, exit 2. Every path a command is given is relative to that folder: each step failed at its own first use of
it, as a bare `error: No such file or directory` naming nothing, or as "the failure's line could not be checked
for secrets" (the redaction's cache key asked for the folder). Every row failed before (failure_lines.folder_gone_line; a
folder deleted mid-run: import_env's cache key no longer asks for it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from helpers.children import scripts_env
from helpers.repos import REPO

COMMANDS = [
    ["ingest", "x", "out.parquet"],
    ["clean", "x", "in.parquet", "out.parquet", "--rules", "rules.json"],
    ["dedup", "x", "in.parquet", "out.parquet"],
    ["split", "data/dedup", "data/splits"],
    ["release", "v2", "data/splits", "data/releases/v2"],
    ["summary", "data/releases"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_a_command_in_a_deleted_folder_is_one_line_saying_so(tmp_path, argv):
    gone = tmp_path / "gone"
    gone.mkdir()
    # the shell enters the folder, deletes it, then becomes the command: as a folder removed under a user's shell
    script = 'rmdir "$PWD" && exec "$0" -m scripts "$@"'
    done = subprocess.run(
        ["sh", "-c", script, sys.executable, *argv],
        cwd=gone,
        env=scripts_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: the current folder cannot be read (No such file or directory: deleted?); cd to the repository's "
        "root again"
    ]
    assert not gone.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("line", ["error: out.parquet: No space left on device", "done", "x" * 5000])
def test_a_line_printed_after_the_folder_went_is_still_checked_for_secrets(tmp_path, monkeypatch, line):
    """A folder deleted while a command runs: its last line was "could not be checked for secrets"."""
    from scripts.lib.import_env import redact_line

    monkeypatch.setenv("R35_API_KEY", "sk-" + "q" * 40)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert redact_line(line + " sk-" + "q" * 40) == line + " ***"


# The repository itself deleted while the command imports (round 44d's probe: `rm -rf` of the clone 2 s into
# `python -m scripts clean`): the command's own lazy imports fail (ModuleNotFoundError) and so do the secret
# redaction's, and the line was "the failure's line could not be checked for secrets", exit 1 or 2, or the
# placeholder `(a line left out ...)`. The child imports the CLI from a copy of scripts/ in its folder, deletes the
# folder, then runs the command: the step of the probe, at a known point.
RUN_IN_A_DELETED_COPY = """
import os, shutil, sys
sys.path.insert(0, os.getcwd())
from scripts.cli import main
shutil.rmtree(os.getcwd())
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", COMMANDS[:3], ids=lambda argv: f"repository-gone-{argv[0]}")
def test_the_repository_deleted_under_a_command_is_the_folder_line(tmp_path, argv):
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "scripts", clone / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_IN_A_DELETED_COPY, *argv],
        cwd=clone,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            "error: the current folder cannot be read (No such file or directory: deleted?); cd to the repository's "
            "root again"
        ],
    )
    assert not clone.exists()
