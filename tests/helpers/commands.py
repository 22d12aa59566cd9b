"""`python -m scripts ARGV` run in the test's own process, for its exit code and error line."""

from __future__ import annotations

import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(argv: list, cwd: Path, monkeypatch, capfd) -> CliResult:
    """scripts.cli.main run in `cwd`: it turns every failure into its exit code and one `error: ...` line,
    exactly as __main__ does. What a subprocess would add is added here: an uncaught exception becomes
    exit 1 with its traceback on stderr; a warning the interpreter's default filters would print is
    appended to stderr (pytest would otherwise swallow it)."""
    from scripts.cli import main

    monkeypatch.chdir(cwd)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)  # hidden by default outside __main__
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # what the interpreter would print before exiting 1
            code = 1
            sys.stderr.write(traceback.format_exc())
    out, err = capfd.readouterr()
    err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return CliResult(code, out, err)
