"""The bucketed export against the LAION Aesthetics 512 bucketed card (issue 16, acceptance 1 and the
webdataset half of 2).

The expected values here are a transcription of the card's rules written for this test, with torch,
numpy and PIL called directly (never scripts/lib/bucketed.py's helpers):
- buckets: the card's 40 proto buckets (1024 base), target = proto * 512 / 1024 (its table);
- bucket choice: nearest aspect ratio in log space (the card does not say; the SDXL rule), ties to the
  earlier bucket id;
- EXIF transpose first (orientation 6: stored rotated 90 degrees counter-clockwise, 8: clockwise, 3: 180);
- scale = max(tw / w, th / h); scale > 1 is dropped (too_small_policy=drop);
- resize to (round(w * scale), round(h * scale)), torch bicubic antialias; crop at corner
  allowed[sha256(id)[:8] big-endian % 2] of [2, 3] (0 TL, 1 TR, 2 BL, 3 BR);
- JPEG quality 95, 4:4:4 when scale <= 0.85 else 4:2:0 (adaptive_scale, 0.85).
A re-encoded sample must equal, byte for byte, the JPEG this transcription encodes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from scripts.lib.errors import DataError
from scripts.lib.export import export_options, write_split

CARD = Path(__file__).resolve().parent / "fixtures" / "laion-aesthetics-512-bucketed-card.txt"
# The card's bucket table (bucket_id: proto width x height at 1024), transcribed from the card.
CARD_PROTOS = [
    (1216, 832),
    (832, 1216),
    (1024, 1024),
    (1152, 832),
    (1344, 768),
    (832, 1152),
    (896, 1152),
    (1280, 768),
    (1152, 896),
    (896, 1088),
    (1088, 896),
    (960, 1088),
    (1088, 960),
    (1344, 704),
    (960, 1024),
    (768, 1280),
    (1024, 960),
    (1408, 704),
    (768, 1344),
    (1472, 704),
    (1536, 640),
    (704, 1408),
    (1600, 640),
    (704, 1472),
    (1664, 576),
    (1728, 576),
    (1792, 576),
    (640, 1536),
    (640, 1600),
    (1856, 512),
    (512, 2048),
    (576, 1664),
    (576, 1792),
    (576, 1728),
    (2048, 512),
    (512, 1856),
    (1920, 512),
    (1984, 512),
    (512, 1984),
    (512, 1920),
]
ALLOWED_CORNERS = [2, 3]
ORIENTATION_ROT90 = {6: 1, 8: -1, 3: 2}  # numpy rot90 k that turns the upright image into the stored one
SOURCES_TABLE = {
    1: {
        "backend": "openrouter",
        "model": "google/gemini-2.0-flash-lite-001",
        "created_at": 1776589694,
        "system_prompt_sha256": "503ff8c1",
        "user_prompt_sha256": "6b4b2b1d",
    },
    2: {
        "backend": "openrouter",
        "model": "mistralai/mistral-medium-3.1",
        "created_at": 1776684944,
        "system_prompt_sha256": "503ff8c1",
        "user_prompt_sha256": "6b4b2b1d",
    },
}


# --- the transcription ----------------------------------------------------------------------------


def expected_plan(image_id: str, w: int, h: int, bases=(512,)) -> dict | None:
    """The card's rules for a displayed (w, h): bucket, target, resize, crop box, or None (dropped)."""
    protos = sorted(CARD_PROTOS, key=lambda p: f"p{p[0]}x{p[1]}")
    pw, ph = min(protos, key=lambda p: abs(math.log(p[0] / p[1]) - math.log(w / h)))
    for base in sorted(bases, reverse=True):
        tw, th = pw * base // 1024, ph * base // 1024
        scale = max(tw / w, th / h)
        if scale <= 1:
            break
    else:
        return None
    bucket_id = f"p{pw}x{ph}" if len(bases) == 1 else f"r{base}_p{pw}x{ph}"
    rw, rh = max(tw, math.floor(w * scale + 0.5)), max(th, math.floor(h * scale + 0.5))
    corner = ALLOWED_CORNERS[int(hashlib.sha256(image_id.encode()).hexdigest()[:16], 16) % len(ALLOWED_CORNERS)]
    left = 0 if corner in (0, 2) else rw - tw
    top = 0 if corner in (0, 1) else rh - th
    return {
        "bucket_id": bucket_id,
        "target": (tw, th),
        "resize": (rw, rh),
        "scale": scale,
        "corner": corner,
        "crop_box": [left, top, left + tw, top + th],
        "subsampling": 0 if scale <= 0.85 else 2,
    }


def expected_jpeg(upright: np.ndarray, plan: dict) -> bytes:
    import torch
    import torch.nn.functional as F

    rw, rh = plan["resize"]
    array = upright
    if (rw, rh) != (upright.shape[1], upright.shape[0]):
        x = torch.from_numpy(upright.copy()).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
        array = x.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    left, top, right, bottom = plan["crop_box"]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array[top:bottom, left:right])).save(
        out, format="JPEG", quality=95, subsampling=plan["subsampling"]
    )
    return out.getvalue()


# --- the images -----------------------------------------------------------------------------------


def smooth(w: int, h: int, seed: int, channels: int = 3) -> np.ndarray:
    """Content that differs everywhere (a wrong crop offset shows), smooth enough for JPEG."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, channels), dtype=np.uint8))
    return np.array(small.resize((w, h), Image.Resampling.BILINEAR))


def jpeg_bytes(array: np.ndarray, orientation: int | None = None) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(array)
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(out, format="JPEG", quality=92, exif=exif.tobytes())
    else:
        image.save(out, format="JPEG", quality=92)
    return out.getvalue()


def golden_images(folder: Path) -> list[dict]:
    """Every case: each of the 40 aspects (at 4 scales), extremes, random aspects, EXIF 6/8/3, too small,
    exactly bucket-sized, RGBA PNG, a corrupt JPEG, a file that is no image, a row without caption."""
    cases = []
    for i, (pw, ph) in enumerate(CARD_PROTOS):
        factor = (0.6, 0.55, 0.5, 0.7)[i % 4]  # scale 0.83 (4:4:4), 0.91 (4:2:0), 1 (no resize), 0.71
        cases.append({"size": (round(pw * factor), round(ph * factor))})
    cases += [{"size": (2400, 270)}, {"size": (270, 2400)}, {"size": (3000, 250)}]  # extreme: kept, kept, small
    rng = np.random.default_rng(7)
    for _ in range(8):
        aspect, short = math.exp(rng.uniform(-1.6, 1.6)), int(rng.integers(560, 800))
        cases.append({"size": (short, round(short * aspect)) if aspect > 1 else (round(short / aspect), short)})
    cases += [
        {"size": (640, 960), "orientation": 6},
        {"size": (960, 640), "orientation": 8},
        {"size": (800, 600), "orientation": 3},
        {"size": (300, 480), "orientation": 6},
        {"size": (500, 500)},
        {"size": (300, 200)},
        {"size": (512, 512)},
        {"size": (608, 416)},
        {"size": (700, 500), "png_alpha": True},
        {"corrupt": "truncated"},
        {"corrupt": "not_an_image"},
        {"size": (700, 700), "caption": ""},
    ]
    for n, case in enumerate(cases):
        case["id"] = f"{n:03d}{hashlib.sha256(str(n).encode()).hexdigest()[:9]}"
        path = folder / f"{case['id']}.{'png' if case.get('png_alpha') else 'jpg'}"
        if case.get("corrupt") == "truncated":
            path.write_bytes(jpeg_bytes(smooth(640, 480, n))[:300])
        elif case.get("corrupt"):
            path.write_bytes(b"this is not an image\n" * 20)
        elif case.get("png_alpha"):
            rgba = smooth(*case["size"], n, channels=4)
            Image.fromarray(rgba, "RGBA").save(path)
            case["upright"] = rgba[:, :, :3]  # convert("RGB") drops alpha
        else:
            upright = smooth(*case["size"], n)
            stored = np.rot90(upright, ORIENTATION_ROT90[case["orientation"]]) if case.get("orientation") else upright
            path.write_bytes(jpeg_bytes(np.ascontiguousarray(stored), case.get("orientation")))
            # what a decoder sees: the stored JPEG's pixels turned upright
            decoded = np.array(Image.open(path).convert("RGB"))
            case["upright"] = (
                np.rot90(decoded, -ORIENTATION_ROT90[case["orientation"]]) if case.get("orientation") else decoded
            )
        case["path"] = str(path)
    return cases


def rows_of(cases: list[dict]) -> pd.DataFrame:
    rows = pd.DataFrame(
        [
            {
                "id": c["id"],
                "source": "s",
                "text": c.get("caption", f"a caption for {c['id']}"),
                "orig_text": f"raw {c['id']}",
                "image": c["path"],
                "caption_variant": ["caption_gemini_2_flash_lite", "caption_mistral_medium_3_1", None][n % 3],
                "caption_selector_index": [0, 1, None][n % 3],
                "caption_source_id": [1, 2, None][n % 3],
            }
            for n, c in enumerate(cases)
        ]
    )
    rows.attrs["caption_sources"] = SOURCES_TABLE
    return rows


def read_export(folder: Path) -> dict[str, dict]:
    """key -> {jpg, txt, json, bucket} of every sample in the shards the manifest lists."""
    manifest = json.loads((folder / "manifest.json").read_text())
    samples = {}
    for bucket_id, bucket in manifest["buckets"].items():
        for shard in bucket["shards"]:
            with tarfile.open(folder / shard) as tar:
                for member in tar.getmembers():
                    key, ext = member.name.split(".", 1)
                    samples.setdefault(key, {"bucket": bucket_id})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("golden")
    cases = golden_images(folder)
    fmt, options = export_options(
        {"format": "bucketed", "shard_size": 4, "on_error": "skip", "missing_caption_policy": "skip"}, "test"
    )
    summary = write_split(rows_of(cases), folder / "out", fmt, options)
    return cases, folder / "out", summary


# --- acceptance 1 ---------------------------------------------------------------------------------


def test_the_40_bucket_table_equals_the_cards():
    from scripts.lib.bucketed import DEFAULT_OPTIONS, bucket_table

    text = CARD.read_text(encoding="utf-8")
    table = re.findall(r"^\| (p(\d+)x(\d+)) \| (\d+)×(\d+) \| ([\d.]+) \| [\d,]+ \|$", text, re.M)
    assert len(table) == 40
    assert [(int(w), int(h)) for _, w, h, *_ in table] == CARD_PROTOS
    ours = {b.bucket_id: (b.width, b.height) for b in bucket_table([512], 32, DEFAULT_OPTIONS["proto_buckets_1024"])}
    assert ours == {bid: (int(tw), int(th)) for bid, _, _, tw, th, _ in table}
    assert all(f"{int(tw) / int(th):.3f}" == aspect for _, _, _, tw, th, aspect in table)
    preview = re.search(r"Bucket IDs \(preview\): (.*?), …", text).group(1)
    assert [b.strip("`") for b in preview.split(", ")] == list(ours)[:20]  # the card's order: by id
    assert re.search(r"allowed corners `\[2, 3\]`", text) and "adaptive threshold `0.85`" in text


def test_bucket_ids_targets_crop_boxes_and_skips_follow_the_card(golden):
    cases, out, summary = golden
    samples = read_export(out)
    kept, skipped = {}, {"no_caption": set(), "too_small": set(), "decode": set()}
    for case in cases:
        if case.get("corrupt"):
            skipped["decode"].add(case["id"])
        elif case.get("caption") == "":
            skipped["no_caption"].add(case["id"])
        else:
            plan = expected_plan(case["id"], case["upright"].shape[1], case["upright"].shape[0])
            (kept.__setitem__(case["id"], plan) if plan else skipped["too_small"].add(case["id"]))
    assert set(samples) == set(kept)
    assert summary == {
        "images_seen": len(cases),
        "images_exported": len(kept),
        "skipped_no_caption": 1,
        "skipped_too_small": len(skipped["too_small"]),
        "decode_errors": 2,
        "encode_errors": 0,
    }
    assert len(skipped["too_small"]) == 4 and len({p["bucket_id"] for p in kept.values()}) == 40
    by_id = {c["id"]: c for c in cases}
    for key, plan in kept.items():
        meta, sample = json.loads(samples[key]["json"]), samples[key]
        assert (meta["bucket_id"], sample["bucket"]) == (plan["bucket_id"], plan["bucket_id"])
        assert (meta["target_w"], meta["target_h"]) == plan["target"]
        assert (meta["resize_w"], meta["resize_h"]) == plan["resize"] and meta["crop_box"] == plan["crop_box"]
        assert sample["jpg"] == expected_jpeg(by_id[key]["upright"], plan), key  # resize, crop, quality, chroma
        assert sample["txt"] == f"a caption for {key}\n".encode()
    rotated = [c for c in cases if c.get("orientation") and c["id"] in kept]
    assert [kept[c["id"]]["bucket_id"] for c in rotated] == ["p832x1216", "p1216x832", "p1152x896"]


def test_manifest_and_sample_json_have_the_cards_shape(golden):
    _cases, out, summary = golden
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "bucketed_shards_v1" and manifest["image_mode"] == "reencode_jpeg"
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["export_id"])
    assert manifest["base_resolution"] == 512 and manifest["divisible"] == 32
    assert sorted((p["width"], p["height"]) for p in manifest["proto_buckets_1024"]) == sorted(CARD_PROTOS)
    assert manifest["export_summary"] == summary
    samples = read_export(out)
    for bucket_id, bucket in manifest["buckets"].items():
        pw, ph = map(int, bucket_id[1:].split("x"))
        assert bucket["scaled"] == {"w": pw // 2, "h": ph // 2} and bucket["base_resolution"] == 512
        assert bucket["num_samples"] == sum(s["bucket"] == bucket_id for s in samples.values())
        assert all(re.fullmatch(rf"buckets/{bucket_id}/shard-\d{{6}}\.tar", s) for s in bucket["shards"])
    assert manifest["caption_sources"] == {
        "0": {
            "backend": "prompt",
            "model": None,
            "created_at": None,
            "system_prompt_sha256": None,
            "user_prompt_sha256": None,
        },
        **{str(k): v for k, v in SOURCES_TABLE.items()},
    }
    metas = [json.loads(s["json"]) for s in samples.values()]
    assert {type(m["caption_source_id"]) for m in metas} == {int}
    assert {(m["caption_selector_index"], m["caption_variant"], m["caption_source_id"]) for m in metas} == {
        (0, "caption_gemini_2_flash_lite", 1),
        (1, "caption_mistral_medium_3_1", 2),
        (0, "prompt", 0),
    }
    assert sum(s["images"] for s in manifest["caption_selectors"]) == summary["images_exported"]


def test_passthrough_keeps_jpeg_bytes_with_the_same_plan(golden, tmp_path):
    cases, out, _ = golden
    chosen = [c for c in cases if c.get("orientation") or c.get("png_alpha") or c["id"].startswith(("000", "041"))]
    fmt, options = export_options({"format": "bucketed", "image_mode": "passthrough_jpeg"}, "test")
    summary = write_split(rows_of(chosen), tmp_path / "p", fmt, options)
    reencoded, passed = read_export(out), read_export(tmp_path / "p")
    assert set(passed) == {c["id"] for c in chosen} & set(reencoded) and summary["skipped_too_small"] == 1
    for case in chosen:
        if case["id"] not in passed:
            continue
        meta, before = json.loads(passed[case["id"]]["json"]), json.loads(reencoded[case["id"]]["json"])
        planned = ("bucket_id", "target_w", "target_h", "crop_box", "resize_w", "resize_h")
        assert [meta[k] for k in planned] == [before[k] for k in planned]
        if case.get("png_alpha"):  # not a JPEG: re-encoded even here
            assert meta["image_mode"] == "reencode_jpeg" and passed[case["id"]]["jpg"] == reencoded[case["id"]]["jpg"]
        else:
            assert meta["image_mode"] == "passthrough_jpeg"
            assert passed[case["id"]]["jpg"] == Path(case["path"]).read_bytes()  # EXIF and all


def test_multi_resolution_ids_and_byte_identical_reruns(tmp_path):
    sizes = [(1100, 1100), (700, 700), (400, 400), (1300, 900), (900, 1300), (700, 480)]
    cases = []
    for n, size in enumerate(sizes):
        path = tmp_path / f"m{n}.jpg"
        path.write_bytes(jpeg_bytes(smooth(*size, n)))
        cases.append({"id": f"m{n}", "path": str(path), "size": size})
    fmt, options = export_options({"format": "bucketed", "base_resolution": [512, 1024]}, "test")
    for run in ("a", "b"):
        write_split(rows_of(cases), tmp_path / run, fmt, options)
    samples = read_export(tmp_path / "a")
    expected = {c["id"]: expected_plan(c["id"], *c["size"], bases=(512, 1024)) for c in cases}
    assert {k: json.loads(s["json"])["bucket_id"] for k, s in samples.items()} == {
        k: p["bucket_id"] for k, p in expected.items() if p
    }
    assert {p["bucket_id"] for p in expected.values() if p} == {
        "r1024_p1024x1024",
        "r512_p1024x1024",
        "r1024_p1216x832",
        "r1024_p832x1216",
        "r512_p1216x832",
    }
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["base_resolutions"] == [512, 1024] and manifest["buckets"]["r1024_p1216x832"]["scaled"] == {
        "w": 1216,
        "h": 832,
    }
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files] == [True] * len(
        files
    )


def test_a_corrupt_image_is_one_line_by_default(golden, tmp_path):
    cases, _, _ = golden
    corrupt = [c for c in cases if c.get("corrupt") == "truncated"]
    with pytest.raises(DataError, match=re.escape(f"{corrupt[0]['path']}: cannot read image")) as info:
        write_split(rows_of(corrupt), tmp_path / "f", *export_options("bucketed", "test"))
    assert "\n" not in str(info.value)


def test_export_params_take_the_cards_settings():
    from scripts.lib.params import Export

    card = {
        "format": "bucketed",
        "base_resolution": [512],
        "divisible": 32,
        "quality": 95,
        "image_mode": "reencode_jpeg",
        "too_small_policy": "drop",
        "allowed_corners": [2, 3],
        "corner_jitter": 0,
        "subsampling_policy": "adaptive_scale",
        "adaptive_threshold": 0.85,
        "missing_caption_policy": "empty",
    }
    fmt, options = export_options(Export.model_validate(card).spec(), "test")
    assert fmt == "bucketed" and options["allowed_corners"] == [2, 3] and options["adaptive_threshold"] == 0.85
    for bad in (
        {"allowed_corners": [4]},
        {"too_small_policy": "shrink"},
        {"adaptive_threshold": 0.0},
        {"image_mode": "png"},
        {"base_resolution": [32]},
    ):
        with pytest.raises(ValueError):
            Export.model_validate({"format": "bucketed", **bad})
    with pytest.raises(ValueError, match="not an option of webdataset"):
        Export.model_validate({"format": "webdataset", "too_small_policy": "drop"})


# --- acceptance 2 (webdataset half) and the reader's round trip -------------------------------------


def test_webdataset_library_reads_the_bucketed_export(golden):
    import webdataset as wds

    _, out, summary = golden
    shards = sorted(str(p) for p in out.glob("buckets/*/shard-*.tar"))
    seen = 0
    for jpg, caption, meta in wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json"):
        assert jpg.size == (meta["target_w"], meta["target_h"]) and caption == f"a caption for {meta['id']}\n"
        seen += 1
    assert seen == summary["images_exported"]


def test_the_reader_reads_what_the_exporter_writes(golden):
    from scripts.lib.archive import read_member
    from scripts.lib.params import Source
    from scripts.lib.readers.webdataset import read_bucketed_webdataset

    _, out, summary = golden
    samples = read_export(out)
    info: dict = {}
    records = list(read_bucketed_webdataset(Source(kind="bucketed_webdataset", path=str(out)), info))
    assert len(records) == summary["images_exported"] and info["shards"] == len(list(out.glob("buckets/*/*.tar")))
    for record in records:
        key = record.key.rsplit("/", 1)[1]
        meta = json.loads(samples[key]["json"])
        assert record.prompt == f"a caption for {key}" and (record.width, record.height) == (
            meta["target_w"],
            meta["target_h"],
        )
        assert (
            record.meta["bucket_id"] == meta["bucket_id"]
            and record.meta["caption_source_id"] == meta["caption_source_id"]
        )
        assert read_member(record.image) == samples[key]["jpg"]


def test_corner_jitter_moves_the_box_inwards_within_its_bound():
    from scripts.lib.bucketed import DEFAULT_OPTIONS, bucket_table, plan_image

    table = bucket_table([512], 32, DEFAULT_OPTIONS["proto_buckets_1024"])
    moved = 0
    for n in range(200):
        still = plan_image(f"k{n}", 1000, 700, table, DEFAULT_OPTIONS)
        jittered = plan_image(f"k{n}", 1000, 700, table, {**DEFAULT_OPTIONS, "corner_jitter": 16})
        (l0, t0, r0, b0), (l1, t1, r1, b1) = still.crop_box, jittered.crop_box
        assert (
            (r1 - l1, b1 - t1) == (r0 - l0, b0 - t0) and l1 >= 0 and r1 <= jittered.resize_w and b1 <= jittered.resize_h
        )
        assert abs(l1 - l0) <= 16 and 0 <= t0 - t1 <= 16  # bottom corners: only ever moved up
        moved += (l1, t1) != (l0, t0)
    assert moved > 150
