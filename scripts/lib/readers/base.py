"""What every reader shares: its config (params.yaml `sources.<name>`), the records it yields, and the problems it reports.

A reader is a generator `read(cfg, info) -> Iterator[Record | Problem]`: it only turns files of one
native format into records. Ids, prompt checks, the on_error policy, batching and writing live once,
in scripts/ingest.py. `info` is a dict the reader may fill with facts for the report (e.g. part ids).
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.lib.errors import DataError
from scripts.lib.params import Source

SourceConfig = Source  # one `params.yaml: sources.<name>` entry (scripts/lib/params.py: Source)


@dataclass
class Record:
    key: str  # native key, unique within the source: the row id is stable_id(source, key)
    prompt: str
    split: str | None = None
    image: str | None = None
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    file: Path | str = ""  # where it came from, for error messages
    where: str = ""


@dataclass
class Problem:
    """A bad record: `fail` turns it into a DataError, `skip` counts it under `reason`."""

    file: Path | str
    where: str  # "row 17", "line 3", "member x.json", or "" for the whole file
    reason: str
    detail: str
    always_skip: bool = False  # documented format behaviour (e.g. dalle3 records without width), never an error

    def message(self) -> str:
        return f"{self.file}: {self.where}: {self.detail}" if self.where else f"{self.file}: {self.detail}"


def source_files(root: Path, pattern: str, what: str) -> list[Path]:
    """The source's files: `root` itself when it is a file, else its sorted matches of `pattern`."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: source path not found")
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise DataError(f"{root}: no {what} files ({pattern}) found")
    return files


def decode(data: bytes) -> str:
    """UTF-8 text; invalid bytes survive as surrogates so the prompt check can name the row."""
    return codecs.decode(data, "utf-8", "surrogateescape")


def require_columns(file: Path, present: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(f"{file}: missing column {', '.join(repr(c) for c in missing)} (has: {', '.join(present) or 'none'})")
