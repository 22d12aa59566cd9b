"""ast.parse for the tests that read our own source, safe beside threads that parse too."""

from __future__ import annotations

import ast
from pathlib import Path


def parse_python(path: Path) -> ast.Module:
    """The module's AST. CPython 3.11 keeps the AST constructor's depth counter in one global, so a thread
    parsing at the same time (a library's background thread left by an earlier test in this worker) makes
    ast.parse raise a spurious "AST constructor recursion depth mismatch" SystemError (python/cpython#106905,
    fixed in 3.12). The source is fine: parse again."""
    source = Path(path).read_text(encoding="utf-8")
    for attempt in range(5):
        try:
            return ast.parse(source, str(path))
        except SystemError as error:
            if "recursion depth mismatch" not in str(error) or attempt == 4:
                raise
    raise AssertionError("unreachable")
