"""Release exports: one writer per layout, each `rows -> folder` (release@V picks one per recipe).

- imagefolder (default): Hugging Face ImageFolder, `metadata.jsonl` beside `images/<source>/<id>.<ext>`
  (hardlinked from the image store where the filesystem allows, never copied when it does).
- webdataset: deterministic tar shards `shard-NNNNNN.tar`, per sample `<id>.<ext>` + `<id>.txt` +
  `<id>.json`; fixed member order, mtime, owner and mode, so the bytes depend only on the rows.
- simpletuner: the images plus `simpletuner.parquet` (`filename, caption, width, height`).
- bucketed: the SDXL-style aspect-bucketed layout of the LAION export (docs/contracts.md §5): `manifest.json`
  + `buckets/<bucket_id>/shard-NNNNNN.tar`; each image cover-resized to its bucket (never upsampled:
  a small image gets a smaller target of the same aspect) and cropped at a corner chosen from
  sha256(id).

Rows carry `id, source, text, orig_text, image (path or archive ref), width, height`.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from scripts.lib.errors import DataError
from scripts.lib.io import write_parquet

FORMATS = ("imagefolder", "webdataset", "simpletuner", "bucketed")
# The LAION Aesthetics 512 export's SDXL buckets (width, height at 1024) and its settings.
PROTO_BUCKETS_1024 = [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768),
                      (768, 1344), (1536, 640), (640, 1536)]
DEFAULT_OPTIONS = {
    "imagefolder": {},
    "webdataset": {"shard_size": 1000},
    "simpletuner": {},
    "bucketed": {"shard_size": 1000, "base_resolution": 512, "divisible": 32, "quality": 95,
                 "proto_buckets_1024": [list(b) for b in PROTO_BUCKETS_1024]},
}


def export_options(spec, where: str) -> tuple[str, dict]:
    """`export: webdataset` or `export: {format: webdataset, shard_size: 500}` -> (format, options)."""
    spec = {"format": spec} if isinstance(spec, str) else dict(spec or {"format": "imagefolder"})
    fmt = spec.pop("format", "imagefolder")
    if fmt not in FORMATS:
        raise DataError(f"{where}.export: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    unknown = set(spec) - set(DEFAULT_OPTIONS[fmt])
    if unknown:
        raise DataError(f"{where}.export: unknown option(s) {sorted(unknown)} for {fmt} (allowed {sorted(DEFAULT_OPTIONS[fmt])})")
    options = {**DEFAULT_OPTIONS[fmt], **spec}
    if "shard_size" in options and (not isinstance(options["shard_size"], int) or options["shard_size"] < 1):
        raise DataError(f"{where}.export.shard_size: expected a positive integer")
    return fmt, options


def write_split(rows: pd.DataFrame, folder: Path, fmt: str, options: dict, on_image: Callable[[], None] | None = None) -> None:
    """Write one split of a release in the chosen layout."""
    folder.mkdir(parents=True, exist_ok=True)
    tick = on_image or (lambda: None)
    if fmt == "imagefolder":
        write_imagefolder(rows, folder, tick)
    elif fmt == "webdataset":
        write_webdataset(rows, folder, options["shard_size"], tick)
    elif fmt == "simpletuner":
        write_simpletuner(rows, folder, tick)
    else:
        write_bucketed(rows, folder, options, tick)


# --- images -------------------------------------------------------------------------------------


def image_ext(row) -> str:
    return os.path.splitext(str(row.image))[1].lower() or ".jpg"


def image_file_name(row) -> str:
    """Where a row's image lives inside its split folder: images/<source>/<id><ext>."""
    return f"images/{row.source}/{row.id}{image_ext(row)}"


def placed_images(rows: pd.DataFrame, folder: Path, tick: Callable[[], None]):
    """Place every row's image under `folder` (images/<source>/<id><ext>); yield (row, file_name)."""
    for row in rows.itertuples(index=False):
        file_name = image_file_name(row)
        place_image(row.image, folder / file_name)
        tick()
        yield row, file_name


def image_bytes(ref: str) -> bytes:
    """The stored bytes of an image: a file, or a member of an archive ('x.tar!/m.png')."""
    from scripts.lib.archive import UnsafeArchive, read_member

    try:
        return read_member(ref)
    except FileNotFoundError:
        raise DataError(f"{ref}: image not found") from None
    except UnsafeArchive as exc:
        raise DataError(f"{ref}: refused ({exc.reason})") from None


def place_image(ref: str, target: Path) -> None:
    """Hardlink a rendered image (no copy), or extract a carried one from its archive."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if "!/" in ref:
        target.write_bytes(image_bytes(ref))
        return
    if not os.path.isfile(ref):
        raise DataError(f"{ref}: image not found")
    real = os.path.realpath(ref)  # the file itself: a link in the store is never copied as a link
    try:
        os.link(real, target, follow_symlinks=False)
    except OSError:  # another filesystem, or links not allowed: fall back to a copy
        shutil.copyfile(real, target)


def _size(value) -> int | None:
    return None if pd.isna(value) else int(value)


def sample_json(row) -> dict:
    return {"text": row.text, "orig_text": row.orig_text, "source": row.source, "id": row.id,
            "width": _size(row.width), "height": _size(row.height)}


# --- layouts ------------------------------------------------------------------------------------


def write_imagefolder(rows: pd.DataFrame, folder: Path, tick: Callable[[], None]) -> None:
    """Hugging Face ImageFolder: metadata.jsonl beside the images, file_name relative to it."""
    lines = []
    for row, file_name in placed_images(rows, folder, tick):
        lines.append(json.dumps({"file_name": file_name, **sample_json(row)}, ensure_ascii=False))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def parse_metadata(lines: Iterable[str], where: str, required: tuple[str, ...]) -> list[dict]:
    """The records of an ImageFolder metadata.jsonl (blank lines skipped); a line that is not a
    JSON object with the `required` keys is a DataError naming `where` and the line."""
    records = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            missing = [key for key in required if key not in record]
        except (ValueError, TypeError):
            record, missing = None, list(required)
        if not isinstance(record, dict) or missing:
            raise DataError(f"{where}: line {line_no}: not a metadata record with {', '.join(required)}")
        records.append(record)
    return records


def read_metadata(folder: Path, required: tuple[str, ...], hint: str = "run release first") -> list[dict]:
    """parse_metadata of folder/metadata.jsonl; a missing file is a DataError with `hint`."""
    path = Path(folder) / "metadata.jsonl"
    if not path.exists():
        raise DataError(f"{path}: not found ({hint})")
    return parse_metadata(path.read_text(encoding="utf-8").splitlines(), str(path), required)


def write_simpletuner(rows: pd.DataFrame, folder: Path, tick: Callable[[], None]) -> None:
    """SimpleTuner's parquet caption table beside the images (filename relative to the folder)."""
    records = []
    for row, file_name in placed_images(rows, folder, tick):
        records.append({"filename": file_name, "caption": row.text, "width": _size(row.width), "height": _size(row.height)})
    table = pd.DataFrame.from_records(records, columns=["filename", "caption", "width", "height"])
    write_parquet(table.astype({"width": "Int64", "height": "Int64"}), folder / "simpletuner.parquet")


class ShardWriter:
    """Deterministic tar shards: the same samples give the same bytes on every machine."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder, self.shard_size = folder, shard_size
        self.index, self.count, self.tar = -1, 0, None

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        if self.tar is None or self.count == self.shard_size:
            self._next()
        for ext, data in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def _next(self) -> None:
        self.close()
        self.index, self.count = self.index + 1, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tar = tarfile.open(self.folder / f"shard-{self.index:06d}.tar", "w", format=tarfile.USTAR_FORMAT)

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None

    @property
    def shards(self) -> int:
        return self.index + 1


def write_webdataset(rows: pd.DataFrame, folder: Path, shard_size: int, tick: Callable[[], None]) -> None:
    """WebDataset shards: key = row id, members image + txt + json, adjacent (its reading rule)."""
    writer = ShardWriter(folder, shard_size)
    try:
        for row in rows.itertuples(index=False):
            meta = json.dumps(sample_json(row), ensure_ascii=False, sort_keys=True).encode("utf-8")
            writer.add(row.id, [(image_ext(row).lstrip("."), image_bytes(row.image)),
                                ("txt", (row.text + "\n").encode("utf-8")), ("json", meta)])
            tick()
    finally:
        writer.close()


# --- aspect buckets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    bucket_id: str
    width: int
    height: int


def buckets_at(base_resolution: int, divisible: int, proto_1024: list) -> list[Bucket]:
    """Scale the 1024 prototypes to base_resolution, rounded to `divisible` (1216x832 -> 608x416 at 512)."""
    scale = base_resolution / 1024
    out = []
    for w, h in proto_1024:
        out.append(Bucket(f"p{w}x{h}", _round_to(w * scale, divisible), _round_to(h * scale, divisible)))
    return out


def _round_to(value: float, divisible: int) -> int:
    return max(divisible, int(round(value / divisible)) * divisible)


def choose_target(width: int, height: int, buckets: list[Bucket], divisible: int) -> tuple[Bucket, int, int]:
    """The bucket of the closest aspect ratio, and its size shrunk (same aspect) until the image covers
    it: an image is never upsampled. Ties go to the earlier bucket."""
    aspect = math.log(width / height)
    bucket = min(buckets, key=lambda b: abs(math.log(b.width / b.height) - aspect))
    shrink = min(1.0, width / bucket.width, height / bucket.height)
    tw = max(divisible, int(bucket.width * shrink) // divisible * divisible)
    th = max(divisible, int(bucket.height * shrink) // divisible * divisible)
    tw, th = min(tw, width), min(th, height)  # images smaller than one `divisible` step stay whole
    return bucket, tw, th


def cover_crop(image, tw: int, th: int, row_id: str):
    """Resize so the image just covers tw x th (scale <= 1), then crop at a corner picked by sha256(id)."""
    from PIL import Image

    w, h = image.size
    scale = max(tw / w, th / h)
    rw, rh = max(tw, round(w * scale)), max(th, round(h * scale))
    if (rw, rh) != (w, h):
        image = image.resize((rw, rh), Image.Resampling.LANCZOS)
    corner = hashlib.sha256(row_id.encode("utf-8")).digest()[0] % 4  # 0 tl, 1 tr, 2 bl, 3 br
    left = 0 if corner in (0, 2) else rw - tw
    top = 0 if corner in (0, 1) else rh - th
    return image.crop((left, top, left + tw, top + th)), (left, top, rw, rh), scale


def write_bucketed(rows: pd.DataFrame, folder: Path, options: dict, tick: Callable[[], None]) -> None:
    from scripts.lib.archive import read_image

    divisible = int(options["divisible"])
    buckets = buckets_at(int(options["base_resolution"]), divisible, options["proto_buckets_1024"])
    writers: dict[str, ShardWriter] = {}
    counts: dict[str, int] = {}
    try:
        for row in rows.itertuples(index=False):
            try:
                image = read_image(row.image)
            except FileNotFoundError:
                raise DataError(f"{row.image}: image not found") from None
            except Exception as exc:  # refused by the caps, or not decodable
                raise DataError(f"{row.image}: cannot read image ({getattr(exc, 'reason', type(exc).__name__)})") from None
            bucket, tw, th = choose_target(*image.size, buckets, divisible)
            cropped, (left, top, rw, rh), scale = cover_crop(image, tw, th, row.id)
            buffer = io.BytesIO()
            cropped.save(buffer, format="JPEG", quality=int(options["quality"]))
            meta = {"id": row.id, "source": row.source, "bucket_id": bucket.bucket_id, "target_w": tw, "target_h": th,
                    "orig_w": image.size[0], "orig_h": image.size[1], "resized_w": rw, "resized_h": rh,
                    "crop_left": left, "crop_top": top,
                    "scale": round(scale, 6), "caption_source_id": "text"}
            writer = writers.setdefault(bucket.bucket_id, ShardWriter(folder / "buckets" / bucket.bucket_id, options["shard_size"]))
            writer.add(row.id, [("jpg", buffer.getvalue()), ("txt", (row.text + "\n").encode("utf-8")),
                                ("json", json.dumps(meta, sort_keys=True).encode("utf-8"))])
            counts[bucket.bucket_id] = counts.get(bucket.bucket_id, 0) + 1
            tick()
    finally:
        for writer in writers.values():
            writer.close()
    manifest = {
        "format": "bucketed_shards_v1",
        "base_resolution": int(options["base_resolution"]),
        "divisible": divisible,
        "proto_buckets_1024": [{"width": w, "height": h} for w, h in options["proto_buckets_1024"]],
        "buckets": [
            {"bucket_id": b.bucket_id, "width": b.width, "height": b.height, "num_samples": counts[b.bucket_id],
             "shards": [f"buckets/{b.bucket_id}/shard-{i:06d}.tar" for i in range(writers[b.bucket_id].shards)]}
            for b in buckets if b.bucket_id in counts
        ],
        "caption_sources": ["text"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
