"""kind: dalle3 - DALL-E-3 synthetic tar shards: <name>.png + <name>.json, streamed, never extracted.

Also the SimpleTuner compile (`compile_simpletuner`): the same records as the parquet
`width, height, caption, filename` (+ optional <stem>.txt captions), usable as a library call.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from scripts.lib.archive import (DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_MEMBER_BYTES, UnsafeArchive, check_image_pixels,
                             iter_samples, make_ref, open_tar)
from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path
from scripts.lib.readers.base import Problem, Record, SourceConfig, source_files

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


@dataclass
class Dalle3Sample:
    shard: Path
    key: str
    image_name: str
    record: dict[str, Any]
    pixels: tuple[int, int]


def iter_dalle3(shard: Path, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Iterator[Dalle3Sample | Problem]:
    """Samples of one shard: the parsed json, the image member name and its real pixel size."""
    with open_tar(shard) as buf:
        for item in iter_samples(buf, max_bytes):
            if isinstance(item, UnsafeArchive):
                yield Problem(shard, "", item.reason, str(item))
                continue
            key, members = item
            where = f"sample {key!r}"
            image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            if image_ext is None or "json" not in members:
                yield Problem(shard, where, "incomplete_sample", f"needs an image and a .json, has {sorted(members)}")
                continue
            raw = members["json"].read()
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Problem(shard, where, "not_utf8", "json member is not UTF-8")
                continue
            except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
                yield Problem(shard, where, "bad_json", f"malformed json ({str(exc).splitlines()[0]})")
                continue
            if not isinstance(record, dict):
                yield Problem(shard, where, "bad_json", "json member is not an object")
                continue
            image = members[image_ext]
            try:
                pixels = check_image_pixels(image.read(65536 if image_ext != "png" else 32), image.name, max_pixels)
            except UnsafeArchive as exc:
                yield Problem(shard, where, exc.reason, str(exc))
                continue
            yield Dalle3Sample(shard, key, image.name, record, pixels)


def caption_of(sample: Dalle3Sample, caption_field: str) -> str | Problem:
    """The chosen caption, or a Problem: records without `width` are skipped (published behaviour)."""
    where = f"sample {sample.key!r}"
    if sample.record.get("width") is None:
        return Problem(sample.shard, where, "missing_width", "record has no width", always_skip=True)
    caption = sample.record.get(caption_field)
    if not isinstance(caption, str):
        return Problem(sample.shard, where, "missing_caption", f"no string field {caption_field!r}")
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError:  # a lone "\udcxx" escape in the json
        return Problem(sample.shard, where, "not_utf8", f"{caption_field} is not valid UTF-8")
    return caption


def read_dalle3(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    info["caption_field"] = cfg.caption_field
    for shard in source_files(Path(cfg.path), "*.tar", "tar shard", cfg.follow_symlinks):
        for sample in iter_dalle3(shard, cfg.max_member_bytes, cfg.max_image_pixels):
            if isinstance(sample, Problem):
                yield sample
                continue
            caption = caption_of(sample, cfg.caption_field)
            if isinstance(caption, Problem):
                yield caption
                continue
            rec = sample.record
            width, height = _as_int(rec.get("width")), _as_int(rec.get("height"))
            if width is None or height is None:
                yield Problem(shard, f"sample {sample.key!r}", "bad_size", f"width/height not integers: {rec.get('width')!r}x{rec.get('height')!r}")
                continue
            meta = {k: v for k, v in rec.items() if k not in ("width", "height", cfg.caption_field)}
            meta["pixels"] = list(sample.pixels)
            yield Record(key=f"{shard.name}/{sample.key}", prompt=caption, image=make_ref(shard, sample.image_name),
                         width=width, height=height, meta=meta, file=shard, where=f"sample {sample.key!r}")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        return int(value)  # "512"; not "²" (a digit to isdigit, not to int) nor 5000 digits (int's limit)
    return None


SIMPLETUNER_COLUMNS = ["width", "height", "caption", "filename"]


def compile_simpletuner(shards: list[Path] | Path, out_parquet: Path, caption_field: str = "short_caption",
                        write_txt_dir: Path | None = None, on_error: str = "skip", batch_rows: int = 50_000,
                        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict[str, Any]:
    """Compile DALL-E-3 shards to SimpleTuner's parquet (width, height, caption, filename), streamed.

    `shards`: tar files or one folder of them. With `write_txt_dir`, also writes <stem>.txt holding
    the caption per image (SimpleTuner's textfile caption strategy). Returns counts:
    {"rows_read", "rows_written", "skipped": {reason: n}}. on_error="fail" raises DataError on the
    first bad record (records without width are always skipped and counted).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(shards, Path):
        shards = source_files(shards, "*.tar", "tar shard")
    schema = pa.schema([("width", pa.int32()), ("height", pa.int32()), ("caption", pa.string()), ("filename", pa.string())])
    stats: dict[str, Any] = {"rows_read": 0, "rows_written": 0, "skipped": {}}
    columns: dict[str, list] = {c: [] for c in SIMPLETUNER_COLUMNS}
    with contextlib.ExitStack() as stack:  # the txt folder and the parquet appear together, or neither
        tmp = stack.enter_context(atomic_path(out_parquet))
        # entered last, so replaced first: a txt folder that may not be replaced stops the parquet too
        txt_dir = stack.enter_context(atomic_path(write_txt_dir, is_dir=True)) if write_txt_dir else None
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for shard in shards:
                for sample in iter_dalle3(Path(shard), max_member_bytes, max_image_pixels):
                    stats["rows_read"] += 1
                    caption = sample if isinstance(sample, Problem) else caption_of(sample, caption_field)
                    width = height = None
                    if not isinstance(caption, Problem):
                        width, height = _as_int(sample.record.get("width")), _as_int(sample.record.get("height"))
                        if width is None or height is None:
                            caption = Problem(sample.shard, f"sample {sample.key!r}", "bad_size", "width/height not integers")
                    if isinstance(caption, Problem):
                        if on_error == "fail" and not caption.always_skip:
                            raise DataError(caption.message())
                        stats["skipped"][caption.reason] = stats["skipped"].get(caption.reason, 0) + 1
                        continue
                    filename = sample.image_name.rsplit("/", 1)[-1]
                    columns["width"].append(width)
                    columns["height"].append(height)
                    columns["caption"].append(caption)
                    columns["filename"].append(filename)
                    if txt_dir is not None:
                        (txt_dir / f"{filename.rsplit('.', 1)[0]}.txt").write_text(caption, encoding="utf-8")
                    if len(columns["filename"]) >= batch_rows:
                        _flush(writer, schema, columns, stats)
            _flush(writer, schema, columns, stats)
    stats["skipped"] = dict(sorted(stats["skipped"].items()))
    return stats


def _flush(writer, schema, columns: dict[str, list], stats: dict) -> None:
    import pyarrow as pa

    if columns["filename"]:
        writer.write_batch(pa.RecordBatch.from_arrays([pa.array(columns[c], schema.field(c).type) for c in SIMPLETUNER_COLUMNS], schema=schema))
        stats["rows_written"] += len(columns["filename"])
        for values in columns.values():
            values.clear()
