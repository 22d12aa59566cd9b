"""The one exception a stage raises for bad input or params."""

from __future__ import annotations


class DataError(Exception):
    """Bad input or params: the CLI prints it as one line (no traceback) and exits 2.

    Name the file and the row, e.g. DataError("data/raw/x.csv: row 17: empty prompt").
    """
