"""Shared plumbing every stage uses: params, stable ids, atomic writes, one-line errors.

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

import yaml

PARAMS_FILE = Path("params.yaml")

def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any thread starts
    os.umask(mask)
    return mask


UMASK = _read_umask()

# The normalised prompt table every reader emits (DESIGN.md §2).
PROMPT_COLUMNS = ["id", "source", "prompt", "split", "image", "width", "height", "meta"]


class DataError(Exception):
    """Bad input or params: the CLI prints it as one line (no traceback) and exits 2.

    Name the file and the row, e.g. DataError("data/raw/x.csv: row 17: empty prompt").
    """


_CHECKED_PARAMS: set[tuple[str, str]] = set()  # (path, sha256 of text) already checked in this process


def load_params(section: str | None = None, path: Path | str = PARAMS_FILE) -> Any:
    """Read params.yaml (or one top-level section of it), checked against scripts/params_schema.py.

    A YAML syntax error, an unknown key or a wrong type is one DataError naming the file and key.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: params file not found (run from the repository root)")
    try:
        text = path.read_text(encoding="utf-8")
        params = yaml.safe_load(text) or {}
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise DataError(f"{path}: {at}not valid YAML ({getattr(exc, 'problem', None) or type(exc).__name__})") from None
    key = (str(path.resolve()), sha256_text(text))
    if key not in _CHECKED_PARAMS:
        from scripts.params_schema import check_params  # pydantic: imported only by stages that read params

        check_params(params, str(path))
        _CHECKED_PARAMS.add(key)
    if section is None:
        return params
    if section not in params:
        raise DataError(f"{path}: missing section '{section}'")
    return params[section]


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
