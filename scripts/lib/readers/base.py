"""What every reader shares: its config, the records it yields, and the problems it reports.

A reader is a generator `read(cfg, info) -> Iterator[Record | Problem]`: it only turns files of one
native format into records. Ids, prompt checks, the on_error policy, batching and writing live once,
in scripts/ingest.py. `info` is a dict the reader may fill with facts for the report (e.g. part ids).
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from scripts.lib.archive import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_MEMBER_BYTES
from scripts.lib.errors import DataError


class SourceConfig(BaseModel):
    """One `params.yaml: sources.<name>` entry (keys other stages use, like `clean`, are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["diffusiondb", "gustavosta", "openprompts", "text", "kaggle_sd2", "dalle3", "bucketed_webdataset"]
    path: str
    on_error: Literal["fail", "skip"] = "fail"
    keep_empty: bool = False  # keep empty prompts (clean drops them with a reason) instead of an error/skip
    batch_rows: int = 50_000  # rows per parquet row group; memory stays flat as input grows
    max_prompt_bytes: int = 65_536  # a longer text line is refused (CSV fields: the csv module's 128 KiB)
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    # diffusiondb
    read: Literal["metadata", "parts"] = "metadata"
    part_ids: list[int] | None = None
    num_parts: int | None = None
    part_seed: int = 0
    part_id_max: int = 2000
    # gustavosta
    format: Literal["auto", "parquet", "kaggle_csv"] = "auto"
    # kaggle_sd2
    csv_files: list[str] | None = None
    # dalle3
    caption_field: str = "short_caption"


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
