"""Hub-published sources: kind diffusiondb (metadata.parquet or part zips) and kind gustavosta."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import os
import random
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.lib.archive import UnsafeArchive, make_ref, read_zip_member
from scripts.lib.errors import DataError, quoted
from scripts.lib.nesting import loads_json
from scripts.lib.readers.base import (
    LINK_HINT,
    NAME_SHOWN,
    Problem,
    Record,
    SourceConfig,
    check_confined,
    check_source_file,
    decode,
    head_pixels,
    link_under,
    matches,
    require_columns,
)
from scripts.lib.readers.csv_sources import image_file_size, iter_csv
from scripts.lib.tables import reads_as_text, unreadable

GUSTAVOSTA_SPLITS = {"train": "train", "eval": "validation"}  # file stem -> our split name


# what a column may hold: arrow type predicates by kind (a column of nulls only fits any kind)
COLUMN_KINDS = {
    # string, large_string, string_view (pyarrow 16+ and polars write it; a string_view prompt column was refused
    # as `holds string_view, expected string`: every row of a valid source lost) or a dictionary of them
    "string": lambda t, pa: reads_as_text(t),
    "integer": lambda t, pa: pa.types.is_integer(t),
}


def iter_parquet(
    file: Path, columns: list[str], batch_rows: int, kinds: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of a parquet file, streamed batch by batch (memory bounded by `batch_rows`). `kinds`
    (column -> a COLUMN_KINDS key) are checked against the schema first: a binary prompt or a list
    of part ids is one line naming the column, not a crash further on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file, pre_buffer=False)  # pre-buffering keeps every row group read: memory grows
        schema = pf.schema_arrow
    except Exception as exc:  # a name pyarrow cannot take, `ulimit -n`, a corrupt footer: tables.unreadable tells which
        raise unreadable(file, exc) from None
    require_columns(file, schema.names, columns)
    for column, kind in (kinds or {}).items():
        kind_of = schema.field(column).type
        if not pa.types.is_null(kind_of) and not COLUMN_KINDS[kind](kind_of, pa):
            raise DataError(f"{file}: column {column!r} holds {kind_of}, expected {kind}")
    read = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            read += batch.num_rows
            yield from shortest_floats(batch).to_pylist()
        check_row_count(file, pf.metadata, columns[0], read)
    except DataError:
        raise
    except Exception as exc:  # corrupt pages, invalid UTF-8 in a string column, ...
        raise DataError(f"{file}: unreadable parquet data ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def check_row_count(file: Path, metadata, column: str, read: int) -> None:
    """One line unless the footer's row count and `column`'s stored values (a flat column holds one a row) both
    match the `read` rows. pyarrow reads as many rows as a row group's footer entry says: a footer claiming 10^12
    rows (or 1) of a 3-row file, a truncated or hand-patched one, was read as 3 (or 1) rows at exit 0."""
    values = 0
    for group in range(metadata.num_row_groups):
        chunks = metadata.row_group(group)
        chunk = next(
            (chunks.column(i) for i in range(chunks.num_columns) if chunks.column(i).path_in_schema == column), None
        )
        if chunk is None:  # a nested column (path `x.list.element`): its values are not rows
            values = read
            break
        values += chunk.num_values
    if metadata.num_rows != read or values != read:
        raise DataError(
            f"{file}: its footer says {metadata.num_rows:,} rows and {values:,} values of {column!r}, its row groups "
            f"read as {read:,} rows: a truncated or corrupt parquet file"
        )


def shortest_floats(batch):
    """`batch` with its float32 columns as the float64 of their shortest decimals: DiffusionDB's cfg 0.1, not
    0.10000000149011612. Arrow's cast knows the width; `{:.7g}` on every float rounded a float64 seed
    3456789012 to 3456789000, and a float32 needing 8 or 9 digits to another float32."""
    import pyarrow as pa

    if not any(pa.types.is_float32(field.type) for field in batch.schema):
        return batch
    columns = [
        column.cast(pa.string()).cast(pa.float64()) if pa.types.is_float32(column.type) else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(
        columns, schema=pa.schema([f.with_type(c.type) for f, c in zip(batch.schema, columns)])
    )


def plain(value: Any) -> Any:
    """A parquet value as JSON: times and dates as ISO strings, decimals as floats (a float32 column's
    values come trimmed: shortest_floats); anything else JSON cannot hold as its text."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, bytes):
        return decode(value)  # not UTF-8: the record check names the row
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ---------------------------------------------------------------- DiffusionDB
METADATA_COLUMNS = [
    "image_name",
    "prompt",
    "part_id",
    "seed",
    "step",
    "cfg",
    "sampler",
    "width",
    "height",
    "user_name",
    "timestamp",
    "image_nsfw",
    "prompt_nsfw",
]
METADATA_KINDS = {"image_name": "string", "prompt": "string", "part_id": "integer"}  # the rest is kept as metadata
PART_NAME = re.compile(r"part-(\d{6})\.zip")


def chosen_part_ids(cfg: SourceConfig) -> list[int] | None:
    """Explicit `part_ids`, or `num_parts` drawn from 1..part_id_max with `part_seed`; None = all."""
    if cfg.part_ids is not None:
        return sorted(cfg.part_ids)
    if cfg.num_parts is not None:
        if not 0 < cfg.num_parts <= cfg.part_id_max:
            raise DataError(f"params.yaml: num_parts must be in 1..{cfg.part_id_max}, got {cfg.num_parts}")
        return sorted(random.Random(cfg.part_seed).sample(range(1, cfg.part_id_max + 1), cfg.num_parts))
    return None


def read_diffusiondb(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    root = Path(cfg.path)
    parts = chosen_part_ids(cfg)
    info["part_ids"] = parts
    info["read"] = cfg.read
    if cfg.read == "metadata":
        yield from _diffusiondb_metadata(
            check_confined(root / "metadata.parquet", root, cfg.follow_symlinks), parts, cfg
        )
    else:
        if parts is None:
            parts = []
            for path in matches(root, "part-*.zip"):  # PART-000003.ZIP too: refused below, never left out
                match = PART_NAME.fullmatch(path.name)
                if match is None:
                    raise DataError(f"{path}: not a DiffusionDB part name (part-NNNNNN.zip); rename or remove it")
                parts.append(int(match.group(1)))
            info["part_ids"] = parts
        for part in parts:
            yield from _diffusiondb_part(check_confined(root / f"part-{part:06d}.zip", root, cfg.follow_symlinks), cfg)


def _diffusiondb_metadata(file: Path, parts: list[int] | None, cfg: SourceConfig) -> Iterator[Record | Problem]:
    if not file.is_file():
        raise DataError(f"{file}: not found (DiffusionDB metadata.parquet)")
    wanted = set(parts) if parts is not None else None
    found: set[int] = set()
    for number, row in enumerate(iter_parquet(file, METADATA_COLUMNS, cfg.batch_rows, METADATA_KINDS), start=1):
        if wanted is not None and row["part_id"] not in wanted:
            continue
        found.add(row["part_id"])
        if not row["image_name"]:
            yield Problem(file, f"row {number}", "missing_key", "empty image_name")
            continue
        meta = {k: plain(v) for k, v in row.items() if k != "prompt"}
        yield Record(
            key=row["image_name"],
            prompt=row["prompt"] if row["prompt"] is not None else "",
            meta=meta,
            file=file,
            where=f"row {number}",
        )
    if wanted is not None and wanted - found:
        raise DataError(absent_parts_message(file, sorted(wanted - found), cfg))


def absent_parts_message(file: Path, absent: list[int], cfg: SourceConfig) -> str:
    """The line for parts chosen but without a row in the metadata: reading on would write fewer rows than
    asked for (none at all for one part) at exit 0, where `read: parts` stops at the missing zip."""
    listed = ", ".join(map(str, absent[:10])) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
    chosen = (
        "named in part_ids"
        if cfg.part_ids is not None
        else f"drawn by num_parts from 1..part_id_max = {cfg.part_id_max} (lower part_id_max, or name part_ids)"
    )
    return f"{file}: no rows with part_id {listed}, {chosen}"


def _diffusiondb_part(file: Path, cfg: SourceConfig) -> Iterator[Record | Problem]:
    """part-NNNNNN.zip: images + a root part-NNNNNN.json {image: {p, se, c, st, sa}}."""
    if not file.is_file():
        raise DataError(f"{file}: not found (DiffusionDB part zip)")
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError) as exc:
        raise DataError(
            f"{file}: not a readable zip ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    with zf:
        json_name = f"{file.stem}.json"
        counts = Counter(info.filename for info in zf.infolist())  # a name twice: zipfile reads the last copy
        if counts[json_name] > 1:
            raise DataError(f"{file}: holds member {json_name} {counts[json_name]} times: which listing is meant?")
        try:
            listing = loads_json(decode(read_zip_member(zf, zf.getinfo(json_name), cfg.max_member_bytes)))
        except KeyError:
            raise DataError(f"{file}: missing member {json_name}") from None
        except (ValueError, RecursionError, UnsafeArchive) as exc:
            raise DataError(f"{file}: member {json_name}: unreadable ({str(exc).splitlines()[0]})") from None
        if not isinstance(listing, dict):
            raise DataError(f"{file}: member {json_name}: not a JSON object")
        members = {info.filename: info for info in zf.infolist()}
        for name, entry in listing.items():
            where = f"member {json_name}: entry {name!r}"
            if not isinstance(entry, dict) or not isinstance(entry.get("p"), str):
                yield Problem(file, where, "bad_json", "entry is not an object with a string 'p'")
                continue
            if name not in members:
                yield Problem(file, where, "missing_image", "image not in the zip")
                continue
            if counts[name] > 1:  # a release refuses it too (archive.read_member): neither copy is meant
                yield Problem(file, where, "duplicate_key", f"the zip holds {name!r} {counts[name]} times")
                continue
            try:
                head_of = functools.partial(read_zip_member, zf, members[name], cfg.max_member_bytes)  # (n): a head
                width, height = head_pixels(head_of, name, cfg.max_image_pixels)
            except UnsafeArchive as exc:
                yield Problem(file, where, exc.reason, str(exc))
                continue
            meta = {
                "image_name": name,
                "part_id": int(file.stem.split("-")[1]),
                "seed": entry.get("se"),
                "cfg": entry.get("c"),
                "step": entry.get("st"),
                "sampler": entry.get("sa"),
            }
            yield Record(
                key=name,
                prompt=entry["p"],
                image=make_ref(file, name),
                width=width,
                height=height,
                meta=meta,
                file=file,
                where=where,
            )


# ---------------------------------------------------------------- Gustavosta
def read_gustavosta(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    """data/{train,eval}.parquet (column Prompt), or the Kaggle SD2 copy {train,eval}.csv + images."""
    root = Path(cfg.path)
    fmt = cfg.format
    if fmt == "auto":
        fmt = "parquet" if os.path.lexists(root / "data" / "train.parquet") else "kaggle_csv"
    info["format"] = fmt
    found = False
    for stem, split in GUSTAVOSTA_SPLITS.items():
        if fmt == "parquet":
            file = root / "data" / f"{stem}.parquet"
            if not os.path.lexists(file):
                continue
            # a folder there (Spark writes `eval.parquet/` of part files), a FIFO or a link to nothing was passed
            # over: the split's rows lost at exit 0
            check_source_file(file, "parquet")
            found = True
            check_confined(file, root, cfg.follow_symlinks)
            for number, row in enumerate(iter_parquet(file, ["Prompt"], cfg.batch_rows, {"Prompt": "string"}), start=1):
                prompt = row["Prompt"] if row["Prompt"] is not None else ""
                yield Record(key=f"{stem}:{number}", prompt=prompt, split=split, file=file, where=f"row {number}")
        else:
            file = root / f"{stem}.csv"
            if not file.is_file():
                continue
            found = True
            yield from _gustavosta_csv(check_confined(file, root, cfg.follow_symlinks), root, stem, split, cfg)
    if not found:
        raise DataError(f"{root}: no Gustavosta files (data/train.parquet, data/eval.parquet, train.csv, eval.csv)")


def _gustavosta_csv(file: Path, root: Path, stem: str, split: str, cfg: SourceConfig) -> Iterator[Record | Problem]:
    for number, row in iter_csv(file, ["Prompt", "image_path"]):
        if isinstance(row, Problem):
            yield row
            continue
        relative = row["image_path"].replace("\\", "/")
        if relative.startswith("/") or ".." in relative.split("/"):
            yield Problem(
                file,
                f"row {number}",
                "unsafe_path",
                f"image_path {quoted(relative, NAME_SHOWN)} leaves the source folder",
            )
            continue
        try:
            link = None if cfg.follow_symlinks else link_under(root / relative, root)
        except OSError as exc:  # a name past NAME_MAX or PATH_MAX: this row's image is missing, not the run's
            yield Problem(
                file, f"row {number}", "missing_image", f"image_path {quoted(relative, NAME_SHOWN)}: {exc.strerror}"
            )
            continue
        if link is not None:
            yield Problem(
                file,
                f"row {number}",
                "unsafe_path",
                f"image_path {quoted(relative, NAME_SHOWN)}: {link} is a symbolic link; {LINK_HINT}",
            )
            continue
        sized = image_file_size(root / relative, cfg.max_member_bytes, cfg.max_image_pixels, cfg.follow_symlinks, root)
        if isinstance(sized, str):
            reason, _, detail = sized.partition(":")
            yield Problem(file, f"row {number}", reason, detail)
            continue
        yield Record(
            key=f"{stem}:{number}",
            prompt=row["Prompt"],
            split=split,
            image=(root / relative).as_posix(),
            width=sized[0],
            height=sized[1],
            meta={"image_path": relative},
            file=file,
            where=f"row {number}",
        )
