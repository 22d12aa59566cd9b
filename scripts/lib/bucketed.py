"""The bucketed export, as the LAION Aesthetics 512 bucketed card describes it (docs/contracts.md §5).

Layout: `manifest.json` + `buckets/<bucket_id>/shard-NNNNNN.tar`, per sample `<key>.jpg`, `<key>.txt`
(newline-terminated caption) and `<key>.json` (key: the id escaped, shards.sample_key). The card's rules, in the card's order:

1. EXIF transpose, convert to RGB (the pixels are decoded first, so a corrupt image is a decode error).
2. Bucket: the SDXL proto bucket (1024 base) of the nearest aspect ratio, |log(w/h) - log(pw/ph)|, ties
   to the earlier id. The card does not say how an image picks a bucket; this is the usual SDXL rule.
   Target = proto * base / 1024 rounded to `divisible` (half up). Several base resolutions: bucket ids
   `r<base>_<proto>` and the largest base the image covers is used (the card does not say; this one
   never upsamples and loses least).
3. Cover scale `max(tw / w, th / h)`; `scale > 1` is dropped (`too_small_policy=drop`).
4. Resize to (round(w * scale), round(h * scale)) with torch CPU `bicubic`, `antialias=True`.
5. Crop tw x th at a corner from `allowed_corners` (0 TL, 1 TR, 2 BL, 3 BR), chosen by sha256 of the image
   id (first 8 bytes, big-endian, modulo the number of corners); `corner_jitter` moves the box inwards by
   up to that many pixels (bytes 8-11 and 12-15 of the digest).
6. JPEG quality 95; subsampling `adaptive_scale`: 4:4:4 when scale <= 0.85 (downscaling brought chroma
   detail up to full resolution), else 4:2:0 (the source's own chroma is still about half resolution).

`image_mode=passthrough_jpeg` stores a JPEG source's own bytes (no transpose, resize, crop or re-encode);
the plan (bucket, target, crop box, drop decision) is the same as re-encoding's, so the loader can apply
it. A non-JPEG source is re-encoded even then (its sample json says which).

Everything here is deterministic: the same rows and options give the same bytes (manifest included; `created`
comes from SOURCE_DATE_EPOCH, else null).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scripts.lib import source_date
from scripts.lib.archive import check_sha256
from scripts.lib.errors import DataError, shown
from scripts.lib.import_env import redact_known
from scripts.lib.release_images import of_row

MANIFEST_FORMAT = "bucketed_shards_v1"
# The card's 40 SDXL proto buckets at 1024 (width, height), in bucket-id order as the card lists them.
PROTO_BUCKETS_1024 = sorted(
    [
        (1024, 1024),
        (1024, 960),
        (960, 1024),
        (1088, 896),
        (896, 1088),
        (1088, 960),
        (960, 1088),
        (1152, 832),
        (832, 1152),
        (1152, 896),
        (896, 1152),
        (1216, 832),
        (832, 1216),
        (1280, 768),
        (768, 1280),
        (1344, 704),
        (1344, 768),
        (768, 1344),
        (1408, 704),
        (704, 1408),
        (1472, 704),
        (704, 1472),
        (1536, 640),
        (640, 1536),
        (1600, 640),
        (640, 1600),
        (1664, 576),
        (576, 1664),
        (1728, 576),
        (576, 1728),
        (1792, 576),
        (576, 1792),
        (1856, 512),
        (512, 1856),
        (1920, 512),
        (512, 1920),
        (1984, 512),
        (512, 1984),
        (2048, 512),
        (512, 2048),
    ],
    key=lambda wh: f"p{wh[0]}x{wh[1]}",
)
CORNERS = {0: "TL", 1: "TR", 2: "BL", 3: "BR"}
SUBSAMPLING = {"4:4:4": 0, "4:2:0": 2}  # PIL's codes
DEFAULT_OPTIONS = {
    "shard_size": 1000,
    "base_resolution": 512,
    "divisible": 32,
    "quality": 95,
    "proto_buckets_1024": [list(b) for b in PROTO_BUCKETS_1024],
    "image_mode": "reencode_jpeg",
    "too_small_policy": "drop",
    "allowed_corners": [2, 3],
    "corner_jitter": 0,
    "subsampling_policy": "adaptive_scale",
    "adaptive_threshold": 0.85,
    "missing_caption_policy": "empty",
    "on_error": "fail",
}
# Rows without caption provenance (captions@S adds it): the caption is the row's prompt text.
PROMPT_CAPTION_SOURCE = {
    "backend": "prompt",
    "model": None,
    "created_at": None,
    "system_prompt_sha256": None,
    "user_prompt_sha256": None,
}
SUMMARY_KEYS = (
    "images_seen",
    "images_exported",
    "skipped_no_caption",
    "skipped_too_small",
    "decode_errors",
    "encode_errors",
)


# --- the plan: pure functions of sizes and ids ---------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    bucket_id: str
    proto_w: int
    proto_h: int
    base_resolution: int
    width: int  # the target at base_resolution
    height: int


@dataclass(frozen=True)
class Plan:
    """What happens to one image: its bucket, or why it is dropped; the resize and the crop box."""

    src_w: int
    src_h: int
    bucket: Bucket
    scale: float
    skip: str | None = None  # "too_small"
    resize_w: int = 0
    resize_h: int = 0
    corner: int = 0
    crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, top, right, bottom in the resized image


def round_to(value: float, divisible: int) -> int:
    """Nearest multiple of `divisible` (half up), at least `divisible`."""
    return max(divisible, math.floor(value / divisible + 0.5) * divisible)


def bucket_table(base_resolutions: list[int], divisible: int, protos: list) -> list[Bucket]:
    """Every (base, proto) bucket; single-resolution ids are the proto's (`p1216x832`), several
    resolutions are namespaced `r<base>_<proto>`."""
    multi = len(base_resolutions) > 1
    table = []
    for base in base_resolutions:
        for w, h in protos:
            proto = f"p{w}x{h}"
            table.append(
                Bucket(
                    f"r{base}_{proto}" if multi else proto,
                    w,
                    h,
                    base,
                    round_to(w * base / 1024, divisible),
                    round_to(h * base / 1024, divisible),
                )
            )
    return table


def nearest_proto(width: int, height: int, protos: list[tuple[int, int]]) -> tuple[int, int]:
    """The proto bucket of the nearest aspect ratio (in log space: 2:1 and 1:2 are equally far from 1:1)."""
    aspect = math.log(width / height)
    proto_w, proto_h = min(protos, key=lambda p: abs(math.log(p[0] / p[1]) - aspect))
    return proto_w, proto_h


def plan_image(image_id: str, width: int, height: int, table: list[Bucket], options: dict) -> Plan:
    """The card's rules for one image of (width, height) after EXIF transpose."""
    proto = nearest_proto(width, height, [(b.proto_w, b.proto_h) for b in table])
    # the largest base resolution the image covers; none: the smallest (dropped, or upsampled)
    candidates = sorted((b for b in table if (b.proto_w, b.proto_h) == proto), key=lambda b: -b.base_resolution)
    for bucket in candidates:
        scale = max(bucket.width / width, bucket.height / height)
        if scale <= 1:
            break
    if scale > 1 and options["too_small_policy"] == "drop":
        return Plan(width, height, bucket, scale, skip="too_small")
    tw, th = bucket.width, bucket.height
    rw, rh = max(tw, math.floor(width * scale + 0.5)), max(th, math.floor(height * scale + 0.5))
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    allowed = list(options["allowed_corners"])
    corner = allowed[int.from_bytes(digest[:8], "big") % len(allowed)]
    jitter = int(options["corner_jitter"])
    jx = int.from_bytes(digest[8:12], "big") % (min(jitter, rw - tw) + 1)
    jy = int.from_bytes(digest[12:16], "big") % (min(jitter, rh - th) + 1)
    left = jx if corner in (0, 2) else rw - tw - jx
    top = jy if corner in (0, 1) else rh - th - jy
    return Plan(width, height, bucket, scale, None, rw, rh, corner, (left, top, left + tw, top + th))


def subsampling_for(scale: float, options: dict) -> str:
    policy = options["subsampling_policy"]
    if policy != "adaptive_scale":
        return policy
    return "4:4:4" if scale <= float(options["adaptive_threshold"]) else "4:2:0"


# --- pixels ---------------------------------------------------------------------------------------


class ImageFault(Exception):
    """An image that cannot be decoded or encoded: counted, or a DataError under on_error=fail."""


def decode(ref: str, check=None):
    """(stored bytes, PIL format name, the image EXIF-transposed and in RGB); `check`: read_member's."""
    from scripts.lib.archive import UnsafeArchive, check_image_pixels, read_member
    from scripts.lib.pixels import opened, rgb

    try:
        data = read_member(ref, check=check)
    except FileNotFoundError:
        raise DataError(f"{ref}: image not found") from None
    except UnsafeArchive as exc:
        raise ImageFault(exc.reason) from None
    try:
        check_image_pixels(data[:65536] if data[:8] == b"\x89PNG\r\n\x1a\n" else data, ref)
        with opened(io.BytesIO(data), ref) as stored:
            fmt = stored.format
            stored.load()
            image = rgb(stored, ref)  # upright; 16-bit grey scaled (convert("RGB") alone clipped it to white)
    except MemoryError:
        raise
    except UnsafeArchive as exc:
        raise ImageFault(exc.reason) from None
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError, struct.error)
        raise ImageFault(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
    return data, fmt, image


def resize_crop(image, plan: Plan):
    """Cover-resize with torch CPU bicubic + antialias (float32, rounded to uint8), then crop."""
    import numpy as np
    from PIL import Image

    from scripts.lib.archive import DEFAULT_MAX_IMAGE_PIXELS

    if plan.resize_w * plan.resize_h > DEFAULT_MAX_IMAGE_PIXELS:  # upsample: a 1x40000 image covers 256x1024 at
        size = f"{plan.src_w}x{plan.src_h} image covers its bucket only at {plan.resize_w}x{plan.resize_h}"
        raise ImageFault(f"a {size} pixels, over the cap of {DEFAULT_MAX_IMAGE_PIXELS}")  # 256x10240000: 31 GB
    array = np.array(image)  # a writable copy: torch.from_numpy shares its memory
    if (plan.resize_w, plan.resize_h) != (plan.src_w, plan.src_h):
        import torch
        import torch.nn.functional as F

        pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        pixels = F.interpolate(
            pixels, size=(plan.resize_h, plan.resize_w), mode="bicubic", align_corners=False, antialias=True
        )
        array = pixels.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    left, top, right, bottom = plan.crop_box
    return Image.fromarray(np.ascontiguousarray(array[top:bottom, left:right]), "RGB")


def encode_jpeg(image, quality: int, subsampling: str) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="JPEG", quality=quality, subsampling=SUBSAMPLING[subsampling])
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageFault(f"{type(exc).__name__}: {exc}") from None
    return buffer.getvalue()


# --- the export ---------------------------------------------------------------------------------


def normalized(options: dict) -> dict:
    """Defaults filled, base_resolution as a list without repeats (an int is one resolution)."""
    options = {**DEFAULT_OPTIONS, **options}
    bases = options["base_resolution"]
    options["base_resolution"] = list(dict.fromkeys([bases] if isinstance(bases, int) else bases))
    return options


def _value(row, name: str):
    value = getattr(row, name, None)
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def caption_of(row) -> str | None:
    text = _value(row, "text")
    return text if isinstance(text, str) and text.strip() else None


def provenance(row) -> tuple[str, int, int]:
    """(caption_variant, caption_selector_index, caption_source_id) of a row; prompt text by default."""
    source_id = _value(row, "caption_source_id")
    if source_id is None:
        return "prompt", 0, 0
    variant, selector = _value(row, "caption_variant") or "prompt", _value(row, "caption_selector_index") or 0
    return str(variant), int(selector), int(source_id)


SKIP_REASONS = {
    "skipped_no_caption": "no_caption",
    "skipped_too_small": "too_small",
    "decode_errors": "decode_error",
    "encode_errors": "encode_error",
}


def write_bucketed(
    rows: pd.DataFrame,
    folder: Path,
    options: dict,
    tick: Callable[[], None] = lambda: None,
    dropped: dict[str, str] | None = None,
    roots=None,
) -> dict:
    """Write one split as bucketed shards + manifest.json; return the export summary. `dropped` (when
    given) gets id -> reason (SKIP_REASONS) for every row the card's rules left out; `roots`: write_split's.

    Rows carry `id, source, text, image` (and optionally `orig_text`, `caption_variant`,
    `caption_selector_index`, `caption_source_id`; `rows.attrs["caption_sources"]` maps a source id to
    its backend/model/created_at/prompt hashes)."""
    from scripts.lib.shards import ShardWriter, json_member

    options = normalized(options)
    table = bucket_table(options["base_resolution"], int(options["divisible"]), options["proto_buckets_1024"])
    by_id = {b.bucket_id: b for b in table}
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    writers: dict[str, ShardWriter] = {}
    keys: set[str] = set()  # every bucket's: an id is one sample of the split, whichever bucket holds it
    counts: dict[str, int] = {}
    selectors: dict[tuple[int, str], int] = {}
    source_ids: set[int] = set()
    export_hash = hashlib.sha256(json.dumps(options, sort_keys=True).encode("utf-8"))
    created = source_date.created()  # before any shard: a bad SOURCE_DATE_EPOCH is one line, not a traceback
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for row in rows.itertuples(index=False):
            summary["images_seen"] += 1
            tick()
            before = dict(summary)
            with of_row(row.id, row.source):  # a folder, FIFO or 0-byte file at its name: the row named too
                sample = _sample(row, table, options, summary, roots and roots.check(row.id, row.source))
            if sample is None:
                if dropped is not None:
                    dropped[str(row.id)] = next(SKIP_REASONS[k] for k in SKIP_REASONS if summary[k] != before[k])
                continue
            bucket, jpg, meta = sample
            caption = caption_of(row) or ""
            writer = writers.setdefault(
                bucket.bucket_id, ShardWriter(folder / "buckets" / bucket.bucket_id, int(options["shard_size"]), keys)
            )
            writer.add(
                row.id,
                [
                    ("jpg", jpg),
                    ("txt", (caption + "\n").encode("utf-8")),
                    ("json", json_member(meta, writer.folder)),
                ],
            )
            export_hash.update(f"{row.id}\0{bucket.bucket_id}\0{hashlib.sha256(jpg).hexdigest()}\n".encode())
            counts[bucket.bucket_id] = counts.get(bucket.bucket_id, 0) + 1
            key = (meta["caption_selector_index"], meta["caption_variant"])
            selectors[key] = selectors.get(key, 0) + 1
            source_ids.add(meta["caption_source_id"])
            summary["images_exported"] += 1
    finally:
        for writer in writers.values():
            writer.close()
    known = dict(rows.attrs.get("caption_sources") or {})
    sources = {
        str(i): dict(
            known.get(i)
            or known.get(str(i))
            or (PROMPT_CAPTION_SOURCE if i == 0 else dict.fromkeys(PROMPT_CAPTION_SOURCE))
        )
        for i in sorted(source_ids)
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "export_id": export_hash.hexdigest()[:16],
        "created": created,
        "image_mode": options["image_mode"],
        "base_resolution": options["base_resolution"][0] if len(options["base_resolution"]) == 1 else None,
        "base_resolutions": options["base_resolution"],
        "divisible": int(options["divisible"]),
        "proto_buckets_1024": [{"width": w, "height": h} for w, h in options["proto_buckets_1024"]],
        "preprocess": {
            "exif_transpose": True,
            "resize": {"backend": "torch_cpu", "mode": "bicubic", "antialias": True},
            "too_small_policy": options["too_small_policy"],
            "crop_strategy": "corner",
            "allowed_corners": list(options["allowed_corners"]),
            "corner_jitter": int(options["corner_jitter"]),
        },
        "jpeg": {
            "quality": int(options["quality"]),
            "subsampling_policy": options["subsampling_policy"],
            "adaptive_threshold": float(options["adaptive_threshold"]),
        },
        "buckets": {
            bucket_id: {
                "proto": {"w": by_id[bucket_id].proto_w, "h": by_id[bucket_id].proto_h},
                "base_resolution": by_id[bucket_id].base_resolution,
                "scaled": {"w": by_id[bucket_id].width, "h": by_id[bucket_id].height},
                "aspect": round(by_id[bucket_id].width / by_id[bucket_id].height, 3),
                "num_samples": counts[bucket_id],
                "shards": [f"buckets/{bucket_id}/shard-{i:06d}.tar" for i in range(writers[bucket_id].shards)],
            }
            for bucket_id in sorted(counts)
        },
        "caption_sources": sources,
        "caption_selectors": [
            {"selector_index": index, "variant": variant, "images": n}
            for (index, variant), n in sorted(selectors.items())
        ],
        "missing_caption_policy": options["missing_caption_policy"],
        "export_summary": summary,
    }
    # a caption source's model or backend label is params text: a secret in it went into manifest.json, which a
    # release publishes (the captions themselves are data, in the shards as written)
    manifest = redact_known(manifest, None)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _sample(row, table: list[Bucket], options: dict, summary: dict, check=None):
    """(bucket, jpg bytes, sample json) of one row, or None when the card's rules skip it (counted)."""
    if caption_of(row) is None and options["missing_caption_policy"] == "skip":
        summary["skipped_no_caption"] += 1
        return None
    fail = options["on_error"] == "fail"
    try:
        data, fmt, image = decode(str(row.image), check)
    except ImageFault as exc:
        if fail:
            raise DataError(shown(f"{row.image}: cannot read image ({exc})")) from None
        summary["decode_errors"] += 1
        return None
    check_sha256(str(row.image), data, _value(row, "image_sha256"))  # never a counted skip: not the row's image
    width, height = image.size
    plan = plan_image(str(row.id), width, height, table, options)
    if plan.skip:
        summary["skipped_too_small"] += 1
        return None
    passthrough = options["image_mode"] == "passthrough_jpeg" and fmt == "JPEG"
    subsampling = "source" if passthrough else subsampling_for(plan.scale, options)  # one type for loaders
    if passthrough:
        jpg = data
    else:
        try:
            jpg = encode_jpeg(resize_crop(image, plan), int(options["quality"]), subsampling)
        except ImageFault as exc:
            if fail:
                raise DataError(f"{row.image}: cannot encode JPEG ({exc})") from None
            summary["encode_errors"] += 1
            return None
    variant, selector, source_id = provenance(row)
    bucket = plan.bucket
    meta = {
        "id": str(row.id),
        "source": _value(row, "source"),
        "orig_text": _value(row, "orig_text"),
        "bucket_id": bucket.bucket_id,
        "base_resolution": bucket.base_resolution,
        "proto_w": bucket.proto_w,
        "proto_h": bucket.proto_h,
        "target_w": bucket.width,
        "target_h": bucket.height,
        "src_w": plan.src_w,
        "src_h": plan.src_h,
        "scale": round(plan.scale, 6),
        "resize_w": plan.resize_w,
        "resize_h": plan.resize_h,
        "corner": plan.corner,
        "crop_box": list(plan.crop_box),
        "image_mode": "passthrough_jpeg" if passthrough else "reencode_jpeg",
        "jpeg_subsampling": subsampling,
        "caption_variant": redact_known(variant, None),  # a caption source's name, from its config (as manifest.json)
        "caption_selector_index": selector,
        "caption_source_id": source_id,
    }
    return bucket, jpg, meta
