"""params-doc reads each section's text from its model's docstring, which python's -OO strips: under it the run was
an internal error (`AttributeError: 'NoneType' object has no attribute 'split'`, exit 1). Now one line, exit 2,
nothing written (each row failed before). A plain -O keeps docstrings: it writes the reference as a plain run does.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.children import scripts_env
from helpers.workspace import REPO


def params_doc(tmp_path, flags: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-m", "scripts", "params-doc", str(tmp_path / "params.md")],
        cwd=REPO,
        env={**scripts_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["-OO"], {}),
        ([], {"PYTHONOPTIMIZE": "2"}),
        ([], {"PYTHONOPTIMIZE": "3"}),
        pytest.param(["-O"], {"PYTHONOPTIMIZE": "2"}, marks=pytest.mark.slow),
    ],
    ids=["-OO", "PYTHONOPTIMIZE=2", "PYTHONOPTIMIZE=3", "-O with PYTHONOPTIMIZE=2"],
)
def test_params_doc_under_stripped_docstrings_is_one_line(tmp_path, flags, env):
    done = params_doc(tmp_path, flags, env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: params-doc: python runs with -OO (PYTHONOPTIMIZE=2 or more), which strips the docstrings each "
        "section's text is read from; run it without"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_params_doc_under_plain_optimize_writes_the_same_reference(tmp_path):
    plain, optimized = tmp_path / "plain", tmp_path / "optimized"
    plain.mkdir()
    optimized.mkdir()
    assert params_doc(plain, [], {}).returncode == 0
    assert params_doc(optimized, ["-O"], {}).returncode == 0
    text = (plain / "params.md").read_text(encoding="utf-8")
    assert text == (optimized / "params.md").read_text(encoding="utf-8") and "| key | type |" in text
