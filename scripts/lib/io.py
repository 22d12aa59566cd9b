"""Shared plumbing every stage uses: stable ids, atomic writes, checked table reads.

Stages keep their logic pure (table in -> table out) and call these helpers only at the edges.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from scripts.lib.errors import DataError

def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any thread starts
    os.umask(mask)
    return mask


UMASK = _read_umask()

# The normalised prompt table every reader emits (docs/contracts.md).
PROMPT_COLUMNS = ["id", "source", "prompt", "split", "image", "width", "height", "meta"]
# The two splits of every split folder and release.
SPLITS = ("train", "validation")


def stable_id(source: str, key: str | int) -> str:
    """Id of a row: the same on every run and machine (never Python's salted hash())."""
    return hashlib.sha256(f"{source}\x00{key}".encode("utf-8")).hexdigest()[:16]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path | str, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it over `target` only if the block succeeds.

    Readers of `target` never see a half-written file, and a crash leaves the old one intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~UMASK)  # mkstemp/mkdtemp are owner-only
        if is_dir:
            if target.exists():
                shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(obj: Any, path: Path | str) -> None:
    """Deterministic JSON (sorted keys, fixed indent), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_parquet(df, path: Path | str) -> None:
    """Write a DataFrame as parquet atomically, without the pandas index (byte-stable)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata embeds versions; keep bytes stable
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: Path | str):
    """Read a stage's parquet input; a missing input is fatal and names the path."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found (run its upstream stage first)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def check_table(df, path: Path | str, strings: tuple[str, ...] = (), unique: str | None = None) -> None:
    """One-line errors naming the file when a stage input has a missing or non-text column, or repeated ids."""
    import pandas as pd

    for column in strings:
        if column not in df.columns:
            raise DataError(f"{path}: no '{column}' column")
        values = df[column].dropna()
        if len(values) and not (pd.api.types.is_string_dtype(df[column]) and values.map(lambda v: isinstance(v, str)).all()):
            raise DataError(f"{path}: column '{column}' must hold text, found {df[column].dtype}")
    if unique is not None:
        if unique not in df.columns:
            raise DataError(f"{path}: no '{unique}' column")
        repeated = df[unique][df[unique].duplicated()]
        if len(repeated):
            raise DataError(f"{path}: duplicate id {repeated.iloc[0]!r} ({len(repeated)} repeated rows)")
