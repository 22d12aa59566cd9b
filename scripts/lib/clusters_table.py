"""The dedup clusters table (data/dedup/S.clusters.parquet: which removed row duplicates which kept one,
and how similar they are), checked as its readers use it: dedup-preview, the preview page dedup@S
writes, and plots.
"""

from __future__ import annotations

from pathlib import Path

from scripts.lib.errors import DataError, shown
from scripts.lib.tables import existing_input, is_text_type, parquet_source, schema_names, unreadable, utf8_checked

CLUSTER_COLUMNS = ("id", "duplicate_of", "jaccard")  # data/dedup/S.clusters.parquet, as dedup@S writes it


def check_clusters(table, where: Path | str) -> None:
    """A clusters table (pyarrow) as its readers use it: `id` and `duplicate_of` text, `jaccard` a finite
    number, in every row; else one line naming `where`, the column and the first bad row (1-based). Text
    in `jaccard` or a null `duplicate_of` was a traceback in dedup-preview, plots and diff."""
    import pyarrow.compute as pc

    check_clusters_columns(where, table.column_names)
    utf8_checked(table, where)  # ids that are not UTF-8 were counted by plots at exit 0
    for name in CLUSTER_COLUMNS:
        column = table.column(name)
        row = _first_true(pc.is_null(column, nan_is_null=True))
        if row is not None:
            raise DataError(f"{shown(where)}: row {row + 1}: {name} is missing (null or NaN)")
        wanted, kind = ("numbers", _is_number_type) if name == "jaccard" else ("text", is_text_type)
        if not kind(column.type):
            raise DataError(f"{shown(where)}: column '{name}' must hold {wanted}, found {column.type}")
    row = _first_true(pc.invert(pc.is_finite(table.column("jaccard"))))
    if row is not None:
        raise DataError(f"{shown(where)}: row {row + 1}: jaccard {table.column('jaccard')[row]} is not a finite number")


def check_clusters_columns(where: Path | str, names) -> None:
    missing = [c for c in CLUSTER_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{shown(where)}: no column(s) {', '.join(missing)} (not a dedup clusters table)")


def read_clusters_table(path: Path | str):
    """data/dedup/S.clusters.parquet (pyarrow: its CLUSTER_COLUMNS), checked by check_clusters."""
    import pyarrow.parquet as pq

    path = existing_input(path)
    with parquet_source(path) as source:  # one open, checked there (the table_in's folder), for both reads
        check_clusters_columns(path, schema_names(source, path))
        try:
            table = pq.read_table(source, columns=list(CLUSTER_COLUMNS))
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None
    check_clusters(table, path)
    return table


def _is_number_type(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(kind) or pa.types.is_integer(kind)  # a bool column is neither


def _first_true(mask) -> int | None:
    values = mask.to_numpy(zero_copy_only=False)
    return int(values.argmax()) if values.any() else None
