"""Which rows of a parametrized test run in CI's tier: a test that proves one behaviour on several inputs
runs its first rows in every `pytest` (CI, README command 2) and the others in the slow tier (`-m slow`),
so CI keeps each behaviour under its 10 minutes and the full run keeps every input."""

from __future__ import annotations

from collections.abc import Iterable

import pytest


def fast_first(rows: Iterable, keep: int = 1, *, columns: int = 1) -> list:
    """`rows` (values, or pytest.param) with every row after the first `keep` marked slow; ids and marks of a
    pytest.param are kept. `columns`: the parametrized names (a row of several is a tuple of their values)."""
    marked = []
    for index, row in enumerate(rows):
        if index < keep:
            marked.append(row)
        elif isinstance(row, type(pytest.param(None))):
            marked.append(pytest.param(*row.values, marks=[*row.marks, pytest.mark.slow], id=row.id))
        else:
            values = row if columns > 1 else (row,)
            marked.append(pytest.param(*values, marks=pytest.mark.slow))
    return marked
