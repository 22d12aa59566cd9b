"""A failure no check foresaw (a bug of ours, or a library raising what we did not expect) is one line and exit 1,
as DVC prints "unexpected error" without `-v`: the exception's type and first line, where in scripts/ it was
raised, and how to see the traceback (T2I_TRACEBACK=1). It was a traceback of dozens of lines with exit 1, and
whatever the exception quoted (a value from the data, an environment secret) in full.

The bug is put in by hand (a stage function replaced by one that raises): no known input of a user reaches one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.commands import cli

REPO = Path(__file__).resolve().parents[1]
SECRET = "hf_InternalErrorSecret0123456789abcd"


def _raiser(exc: BaseException):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


BUGS = [
    pytest.param(ValueError("boom"), "ValueError: boom", id="a ValueError"),
    pytest.param(KeyError("text"), "KeyError: 'text'", id="a KeyError"),
    pytest.param(
        AttributeError("'NoneType' object has no attribute 'x'"), "AttributeError: 'NoneType'", id="an AttributeError"
    ),
    pytest.param(TypeError("bad\x1b[31m\nsecond line"), "TypeError: bad\\x1b[31m", id="escape codes and two lines"),
    pytest.param(RuntimeError("x" * 5000), "RuntimeError: " + "x" * 100, id="a 5,000-character message"),
]


@pytest.mark.parametrize(("exc", "expected"), BUGS)
def test_a_bug_in_a_command_is_one_line_and_exit_1(exc, expected, tmp_path, monkeypatch, capfd):
    import scripts.cli

    monkeypatch.setattr(scripts.cli, "build_app", lambda argv: _raiser(exc))  # the command, once built, raises
    monkeypatch.delenv("T2I_TRACEBACK", raising=False)
    result = cli(["summary", "x"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: internal error (a bug, please report it): " + expected), lines[0]
    assert "T2I_TRACEBACK=1" in lines[0] and len(lines[0]) < 400, lines[0]


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("scripts.lib.marks.note_command", id="before the command runs"),
        pytest.param("scripts.lib.io.note_folder_spellings", id="while the arguments are noted"),
        pytest.param("scripts.cli.build_app", id="while the command is built"),
    ],
)
def test_a_bug_outside_the_command_is_one_line_naming_where(where, tmp_path, monkeypatch, capfd):
    module, _, name = where.rpartition(".")
    monkeypatch.setattr(
        sys.modules[module] if module in sys.modules else __import__(module, fromlist=[name]),
        name,
        _raiser(ZeroDivisionError("division by zero")),
    )
    monkeypatch.delenv("T2I_TRACEBACK", raising=False)
    result = cli(["summary", "x"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "internal error (a bug, please report it): ZeroDivisionError: division by zero" in result.stderr


@pytest.mark.parametrize(
    "variable",
    [
        pytest.param("HF_TOKEN", id="HF_TOKEN"),
        pytest.param("OPENAI_API_KEY", id="OPENAI_API_KEY"),
        pytest.param("AWS_SECRET_ACCESS_KEY", id="AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_a_bug_quoting_a_secret_shows_no_secret(variable, tmp_path, monkeypatch, capfd):
    import scripts.cli

    monkeypatch.setenv(variable, SECRET)
    monkeypatch.delenv("T2I_TRACEBACK", raising=False)
    failure = ValueError(f"request failed with {SECRET.upper()}")
    monkeypatch.setattr(scripts.cli, "build_app", lambda argv: _raiser(failure))
    result = cli(["summary", "x"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 1, result.stderr
    assert SECRET.lower() not in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("value", ["1", "yes", " 1 "])
def test_the_traceback_on_asking(value, tmp_path, monkeypatch, capfd):
    import scripts.cli

    monkeypatch.setenv("T2I_TRACEBACK", value)
    monkeypatch.setattr(scripts.cli, "build_app", lambda argv: _raiser(ValueError("shown whole")))
    result = cli(["summary", "x"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: shown whole" in result.stderr, result.stderr


def test_a_bug_in_a_real_process_is_one_line_and_exit_1(tmp_path):
    """The same through `python -m scripts` (its __main__, os._exit and atexit), the bug put in before it runs."""
    program = (
        "import runpy, scripts.lib.marks as marks\n"
        "def note_command(name):\n"
        "    raise LookupError('no such table: ' + name)\n"
        "marks.note_command = note_command\n"
        "runpy.run_module('scripts', run_name='__main__', alter_sys=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "T2I_TRACEBACK"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", program, "summary", "x"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "LookupError: no such table: summary at scripts/cli.py" in result.stderr, result.stderr
