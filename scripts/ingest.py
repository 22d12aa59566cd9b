"""ingest@S: read source S in its native format, write the normalised prompt table.

`python -m scripts ingest S data/prompts/S.parquet` reads `params.yaml: sources.S`, picks the reader
by `kind` (scripts/lib/readers/), and writes
- data/prompts/S.parquet: scripts.common.PROMPT_COLUMNS (id, source, prompt, split, image, width,
  height, meta) streamed in row groups of `batch_rows`;
- data/prompts/S.report.json: rows read, rows written, skipped rows per reason.

Every record passes the same checks here, whatever its format: prompt, image reference and kept
native fields are valid UTF-8 (and at most MAX_META_BYTES as JSON), the prompt has no NUL byte, is not
empty (unless `keep_empty`) nor over `max_prompt_bytes`, width/height fit the table. A bad record stops the stage with one line naming file
and row (`on_error: fail`) or is counted under its reason in the report (`on_error: skip`). Both
outputs are written to temp files and renamed at the end: a failed run leaves no partial file.
"""

from __future__ import annotations

import contextlib
import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from scripts.lib.errors import DataError, redact_url_userinfo
from scripts.lib.io import (
    PROMPT_COLUMNS,
    atomic_path,
    check_files_ours,
    check_folder_or_file,
    commit_together,
    json_text,
    shown,
    stable_id,
)
from scripts.lib.params import load_section
from scripts.lib.side_files import check_files_unchanged, tree_state
from scripts.lib.tables import ParquetRows, size_problem
from scripts.lib.text_lines import MAX_LINE_BYTES as MAX_PROMPT_BYTES
from scripts.lib.text_lines import prompt_problem, prompt_too_long

# A record's kept native fields, as JSON: a DALL-E-3 json's every other field, a WebDataset json's caption_*
# fields, a parquet source's metadata cells. Uncapped, a 60 MB field of one json member went into the table
# whole and into every copy of it, and the writer held batch_rows such rows at once (8 of 20 MB: +240 MB).
MAX_META_BYTES = 1 << 20
# the rows' prompt and meta text the writer holds before it writes them as a row group, whatever batch_rows
FLUSH_BYTES = 256 << 20
T = TypeVar("T")

if TYPE_CHECKING:  # the readers (pydantic) load on first use: `python -m scripts clean-text` starts fast
    from scripts.lib.readers import Problem, Record, SourceConfig


def report_path(output: Path) -> Path:
    """data/prompts/S.parquet -> data/prompts/S.report.json"""
    return output.with_name(f"{output.stem}.report.json")


def record_problem(
    record: Record, meta_json: str, keep_empty: bool, max_prompt_bytes: int = MAX_PROMPT_BYTES
) -> tuple[str, str] | None:
    """(reason, detail) when the record cannot be written as it is, else None."""
    prompt = record.prompt
    if not isinstance(prompt, str):
        return "empty_prompt", "prompt is missing"
    found = prompt_problem(prompt) or prompt_too_long(prompt, max_prompt_bytes)
    if found is not None:  # synthesize@N drops a reply line with prompt_problem's same check
        return found
    for what, text in (("image reference", record.image or ""), ("native metadata", meta_json)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "not_utf8", f"{what} is not valid UTF-8"
    if len(meta_json) > MAX_META_BYTES // 4 and (size := len(meta_json.encode("utf-8"))) > MAX_META_BYTES:
        return "meta_too_large", f"native metadata is {size:,} bytes as JSON, over {MAX_META_BYTES:,}"
    if not keep_empty and not prompt.strip():
        return "empty_prompt", "empty prompt"
    for side in (record.width, record.height):
        if side is not None and size_problem(side):
            return "bad_size", f"image size {record.width}x{record.height} out of range"
    return None


def meta_text(meta: dict[str, Any]) -> str:
    """`meta` as the JSON text the table holds. NaN and Infinity, which JSON has no word for, are null: json.dumps
    wrote `NaN` (a parquet float, a json member's NaN), which no JSON reader but Python's takes. A URL's
    user:password@ is ***@ (without_userinfo)."""
    try:
        text = json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a non-finite number (or a value JSON cannot hold: raised again below)
        meta = finite(meta)
        text = json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False)
    if "@" in text and "://" in text:  # the common row holds no URL with a user part: dumped once
        text = json.dumps(without_userinfo(meta), sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text


def without_userinfo(value: Any) -> Any:
    """`value` with the user:password@ of every URL in its texts (keys too) shown as ***@: a source's metadata
    (an OpenPrompts `image_uri` of https://user:pass@host/x.png, a webdataset json's `url`) went into the
    prompt table, and from there into clean's table and every copy of them, a secret in a file."""
    if isinstance(value, str):
        return redact_url_userinfo(value)
    if isinstance(value, dict):
        return {without_userinfo(key): without_userinfo(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_userinfo(item) for item in value]
    return value


def finite(value: Any) -> Any:
    """`value` with every NaN and Infinity in it null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def prompt_schema():
    import pyarrow as pa

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("prompt", pa.string()),
            ("split", pa.string()),
            ("image", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("meta", pa.string()),
        ]
    )
    assert schema.names == PROMPT_COLUMNS
    return schema


def normalise(
    read: Callable[[], Iterable[Record | Problem]],
    source: str,
    cfg: SourceConfig,
    writer: ParquetRows,
    report: dict[str, Any],
) -> Any:
    """The shared policy: check each record, apply on_error, give it its stable id, write it. Returns the written
    rows to drop: the later records of a repeated native key (`on_error: skip`; `fail` stops in one line)."""
    from scripts.lib.progress import track
    from scripts.lib.readers import Problem, Record
    from scripts.lib.readers.native_keys import check_keys

    skipped: dict[str, int] = report["skipped"]
    ids = array("Q")  # 8 bytes per row: checks that native keys were unique
    repeats: list = []
    held = 0  # bytes of text the writer holds (FLUSH_BYTES)

    def keys_checked() -> None:  # in track's loop: a repeat's line comes before its success summary
        repeats.append(check_keys(ids, cfg.on_error, read, source))

    for item in track(then(read(), keys_checked), desc=f"ingest@{source}", unit="records"):
        report["rows_read"] += 1
        if isinstance(item, Record):
            try:
                meta_json = meta_text(item.meta)
            except (TypeError, ValueError, RecursionError) as exc:  # a value JSON cannot hold
                meta_json, found = "", ("bad_meta", f"native metadata is not JSON-serialisable ({exc})")
            else:
                found = record_problem(item, meta_json, cfg.keep_empty, cfg.max_prompt_bytes)
            if found is None:
                row_id = stable_id(source, item.key)
                ids.append(int(row_id, 16))
                writer.add(row_id, source, item.prompt, item.split, item.image, item.width, item.height, meta_json)
                held += len(item.prompt) + len(meta_json)
                if held >= FLUSH_BYTES:  # batch_rows rows of 64 KB prompts and 1 MB metadata: 50 GB held
                    writer.flush()
                    held = 0
                continue
            problem = Problem(item.file or cfg.path, item.where or f"record {item.key!r}", *found)
        else:
            problem = item
        if cfg.on_error == "fail" and not problem.always_skip:
            raise DataError(problem.message())
        skipped[problem.reason] = skipped.get(problem.reason, 0) + 1
    if len(repeats[0]):  # kept out of the table below, counted as an archive's repeated name is
        skipped["duplicate_key"] = skipped.get("duplicate_key", 0) + len(repeats[0])
    return repeats[0]


def then(items: Iterable[T], finish: Callable[[], None]) -> Iterator[T]:
    """`items`, then finish() once the last is taken (and handled by the caller's loop)."""
    yield from items
    finish()


def check_source_path(path: Path, source: str) -> None:
    """One line unless `path` is there as a folder or a regular file (after links). A FIFO or a device there
    (`/dev/zero`) was `source path not found`, the wrong reason for what the user sees with `ls`."""
    if not path.exists():
        raise DataError(f"{shown(path)}: source path not found (sources.{source}.path)")
    check_folder_or_file(path, f"a file (sources.{source}.path)")


def ingest(source: str, cfg: SourceConfig, output: Path) -> dict[str, Any]:
    """Read `source` with its reader and write the prompt table and its report; returns the report."""
    from scripts.lib.readers import READERS
    from scripts.lib.readers.native_keys import drop_rows

    check_source_path(Path(cfg.path), source)
    report: dict[str, Any] = {
        "source": source,
        "kind": cfg.kind,
        "path": cfg.path,
        "on_error": cfg.on_error,
        "rows_read": 0,
        "rows_written": 0,
        "skipped": {},
    }
    info: dict[str, Any] = {}
    check_files_ours(output, report_path(output), inputs=[cfg.path])
    with contextlib.ExitStack() as outputs:  # the table and its report appear together, or neither
        tmp = outputs.enter_context(atomic_path(output))
        report_tmp = outputs.enter_context(atomic_path(report_path(output)))
        before = tree_state(cfg.path)  # every file the reader may open, as it is before the read

        def read() -> Iterator[Record | Problem]:  # checked after its last record, before track's summary
            return then(READERS[cfg.kind](cfg, info), lambda: check_files_unchanged(before, cfg.path))

        with ParquetRows(tmp, prompt_schema(), cfg.batch_rows) as writer:
            repeats = normalise(read, source, cfg, writer, report)
        report["rows_written"] = drop_rows(tmp, repeats, prompt_schema()) if len(repeats) else writer.rows
        report["skipped"] = dict(sorted(report["skipped"].items()))
        report.update(info)
        report = recorded(report)
        report_tmp.write_text(json_text(report), encoding="utf-8")  # the innermost: its own errors name it
        commit_together(outputs)
    return report


def recorded(report: dict[str, Any]) -> dict[str, Any]:
    """The report as written: no known secret (import_env.redact_known) in what it copies of params and paths. The
    params check refuses one it finds in a value, but a short secret only as a whole value: a netrc password as
    one folder of `path` (data/hunter22x/raw.txt) was written into S.report.json, a file DVC tracks and pushes."""
    from scripts.lib.import_env import redact_known

    return redact_known(report, None)


def load_source(source: str) -> SourceConfig:
    sources = load_section("sources")
    if source not in sources:
        raise DataError(f"params.yaml: no source '{source}' under sources (have: {', '.join(sources)})")
    return sources[source]


def cli(
    source: str = typer.Argument(..., help="name under params.yaml: sources"),
    output: Path = typer.Argument(..., help="the prompt table to write, e.g. data/prompts/S.parquet"),
) -> None:
    """Ingest one source into the normalised prompt table (+ S.report.json beside it)."""
    report = ingest(source, load_source(source), output)
    skipped = sum(report["skipped"].values())
    print(shown(f"ingest {source}: {report['rows_written']} rows written, {skipped} skipped -> {output}"))
