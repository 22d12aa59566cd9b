"""A descriptor limit (`ulimit -n`) hit anywhere in a command: one line, exit 2, saying what the limit is.

Hit while Python imported a library, the line named that library's file (`.../scripts/lib/progress.py: Too many
open files`), which read as that file's fault; hit when the error line itself was made (redacting it reads the
secrets it must hide, which needs a file), it was a traceback at exit 1 (`ulimit -n 5`), or no line at all. Each
line of the open-file limit now ends with the process's limit; a line that cannot be checked for secrets is left
out, never shown as it came.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pandas as pd
import pytest

from helpers.workspace import make_splits, write_params

HINT = "open files at most: raise `ulimit -n`)"
SPLIT = ["split", "diffusiondb", "data/clean/diffusiondb.parquet", "data/s2"]
COMPOSE = ["compose", "r", "data/splits", "data/compose/r"]


@pytest.fixture
def workspace(tmp_path):
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_params(tmp_path, releases={"r": {"components": components, "export": "imagefolder"}})
    make_splits(tmp_path, n=8)
    clean = tmp_path / "data/clean"
    clean.mkdir(parents=True)
    rows = pd.read_parquet(tmp_path / "data/splits/diffusiondb/train.parquet")[["id", "text"]]
    rows.to_parquet(clean / "diffusiondb.parquet")
    return tmp_path


def run_limited(root, argv: list[str], limit: int) -> subprocess.CompletedProcess:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(__import__("helpers").REPO)}
    command = [sys.executable, "-m", "scripts", *argv]
    return subprocess.run(command, cwd=root, preexec_fn=limited, capture_output=True, text=True, env=env, timeout=120)


def check_one_line(done: subprocess.CompletedProcess) -> str | None:
    """The run's error line (None at exit 0), after the checks every run at a limit must pass."""
    lines = done.stderr.splitlines()
    if done.returncode == 0:
        return None
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    if "Too many open files" in lines[0]:
        assert lines[0].endswith(HINT), lines[0]
    return lines[0]


# 5: redacting the line needed a file (a traceback at exit 1 before); 6 and 10: an input, then a module of ours
@pytest.mark.parametrize("limit", [5, 6, 10])
def test_a_command_at_a_descriptor_limit_says_the_limit_in_one_line(workspace, limit):
    check_one_line(run_limited(workspace, SPLIT, limit))


@pytest.mark.slow
@pytest.mark.parametrize("argv", [SPLIT, COMPOSE], ids=["split", "compose"])
def test_every_descriptor_limit_is_one_line_or_success(workspace, argv):
    lines = [
        check_one_line(run_limited(workspace, argv, limit)) for limit in range(5, 14)
    ]  # at 4 Python itself cannot start
    assert any(line and "Too many open files" in line for line in lines), lines
    assert lines[-1] is None, lines  # enough descriptors: the command works
