"""Release exports: WebDataset shards readable by the `webdataset` library with the same
(image, text) pairs and one image extension, the SimpleTuner preset's files, parquet with embedded
images, and rows.parquet locating every image whatever the layout. (The bucketed layout: tests/test_bucketed*.)"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from scripts.lib.errors import DataError
from scripts.lib.export import export_options, write_split

SIZES = [(64, 64), (900, 600), (600, 900), (1400, 700), (20, 50), (512, 512), (1024, 768), (33, 40)]


def make_rows(tmp_path: Path) -> pd.DataFrame:
    """Real images of many shapes: plain files and members of a tar (an archive reference)."""
    records = []
    archive = tmp_path / "carried.tar"
    with tarfile.open(archive, "w") as tar:
        for i, (w, h) in enumerate(SIZES):
            image = Image.new("RGB", (w, h), ((i * 40) % 256, (i * 90) % 256, 128))
            image.paste((255, 255, 255), (0, 0, max(1, w // 3), max(1, h // 3)))  # a corner that shows the crop
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            if i % 2:
                info = tarfile.TarInfo(f"img{i}.png")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
                ref = f"{archive}!/img{i}.png"
            else:
                path = tmp_path / f"img{i}.png"
                path.write_bytes(buffer.getvalue())
                ref = str(path)
            records.append(
                {
                    "id": f"{i:04d}abcd",
                    "source": "s",
                    "text": f"caption number {i}",
                    "orig_text": f"raw {i}",
                    "image": ref,
                    "width": w,
                    "height": h,
                }
            )
    return pd.DataFrame(records)


def test_webdataset_shards_read_back_as_the_same_pairs(tmp_path):
    import webdataset as wds

    rows = make_rows(tmp_path)
    fmt, options = export_options({"format": "webdataset", "shard_size": 3}, "test")
    write_split(rows, tmp_path / "wds", fmt, options)
    shards = sorted(str(p) for p in (tmp_path / "wds").glob("shard-*.tar"))
    assert len(shards) == 3  # 8 samples, 3 per shard
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("__key__", "png", "txt", "json"))
    assert [s[0] for s in samples] == rows["id"].tolist()
    for (_key, image, text, meta), row in zip(samples, rows.itertuples()):
        source = Image.open(row.image) if "!/" not in row.image else None
        if source is not None:
            assert image.convert("RGB").tobytes() == source.convert("RGB").tobytes()
        assert image.size == (row.width, row.height)
        assert text.strip() == row.text and meta["id"] == row.id and meta["orig_text"] == row.orig_text


def test_webdataset_bytes_are_deterministic(tmp_path):
    rows = make_rows(tmp_path)
    for out in ("a", "b"):
        write_split(rows, tmp_path / out, "webdataset", {"shard_size": 4})
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with tarfile.open(tmp_path / "a" / "shard-000000.tar") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(0, 0, 0, "")}


def test_simpletuner_export_is_the_presets_files(tmp_path):
    rows = make_rows(tmp_path)
    write_split(rows, tmp_path / "train", "simpletuner", {})
    folder = tmp_path / "train"
    table = pd.read_parquet(folder / "simpletuner.parquet")
    assert list(table.columns) == ["width", "height", "caption", "filename"]  # the preset's compile.py
    assert table["caption"].tolist() == rows["text"].tolist()
    for row in table.itertuples():
        image = folder / row.filename  # relative to instance_data_dir, extension included
        assert Image.open(image).size == (row.width, row.height)
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == row.caption  # beside the image
    image_entry, text_entry = json.loads((folder / "multidatabackend.json").read_text())
    assert image_entry["instance_data_dir"] == "train" and image_entry["caption_strategy"] == "textfile"
    assert image_entry["metadata_backend"] == "parquet"
    assert image_entry["parquet"] == {
        "path": "train/simpletuner.parquet",
        "caption_column": "caption",
        "filename_column": "filename",
        "width_column": "width",
        "height_column": "height",
        "identifier_includes_extension": True,
    }
    # sizes fitted to these images: the shortest edge (20 px) is the resolution and the minimum
    assert {
        k: image_entry[k]
        for k in ("resolution", "maximum_image_size", "minimum_image_size", "target_downsample_size", "resolution_type")
    } == {
        "resolution": 20,
        "maximum_image_size": 1400,
        "minimum_image_size": 20,
        "target_downsample_size": 1400,
        "resolution_type": "pixel",
    }
    assert all(simpletuner_keeps(image_entry, w, h) for w, h in zip(table["width"], table["height"]))
    assert text_entry["dataset_type"] == "text_embeds" and text_entry["default"] is True


def simpletuner_keeps(entry: dict, width: int, height: int) -> bool:
    """SimpleTuner's size rule for one image of a data-backend entry (bghira/SimpleTuner,
    simpletuner/helpers/metadata/backends/base.py meets_resolution_requirements; compared line by line
    with the simpletuner 3.1.6 wheel on PyPI, 2026-12-05: its module imports accelerate and the training
    stack, so the suite cannot call it without installing SimpleTuner's trainer): pixel, both edges at
    least minimum_image_size; area, minimum_image_size megapixels (over 5 is refused) at most w * h, and
    with a square crop both edges at least floor(sqrt(that many pixels)); no minimum keeps everything.
    Its configuration checks: pixel maximum_image_size and target_downsample_size at least 512, area
    ones at most 5 megapixels."""
    import math

    minimum, kind = entry.get("minimum_image_size"), entry["resolution_type"]
    if kind == "pixel":
        assert entry["maximum_image_size"] >= 512 and entry["target_downsample_size"] >= 512
    else:
        assert entry["maximum_image_size"] <= 5 and entry["target_downsample_size"] <= 5
    if minimum is None:
        return True
    if kind == "pixel":
        return minimum <= width and minimum <= height
    assert kind == "area" and minimum <= 5
    pixels = minimum * 1_000_000
    if entry.get("crop") and entry.get("crop_aspect", "square") == "square":
        edge = math.floor(math.sqrt(pixels))
        if not (edge <= width and edge <= height):
            return False
    return pixels <= width * height


def test_the_presets_own_sizes_would_drop_every_small_image():
    """Why the export fits its sizes to the images: the DALL-E-3 preset's 0.75 MP minimum drops a 512x512
    image (0.26 MP) and the tiny model's 64x64 renders."""
    from scripts.lib.simpletuner import PRESET_RESOLUTION, resolution_for

    preset = {**PRESET_RESOLUTION}
    assert not simpletuner_keeps(preset, 512, 512) and not simpletuner_keeps(preset, 64, 64)
    assert simpletuner_keeps(preset, 1024, 1024)
    fitted = resolution_for([(64, 64), (512, 768), (96, 64)])
    assert all(simpletuner_keeps(fitted, w, h) for w, h in [(64, 64), (512, 768), (96, 64)])
    assert resolution_for([]) == PRESET_RESOLUTION


def test_webdataset_puts_mixed_png_and_jpg_under_one_extension(tmp_path):
    import webdataset as wds

    rows = make_rows(tmp_path)
    jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(jpg, format="JPEG", quality=90)
    rows.loc[2, "image"], rows.loc[2, ["width", "height"]] = str(jpg), (30, 20)
    for image_format, ext in (("png", "png"), ("jpg", "jpg")):
        out = tmp_path / image_format
        write_split(rows, out, "webdataset", {"shard_size": 100, "image_format": image_format})
        with tarfile.open(out / "shard-000000.tar") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        images = {n: b for n, b in members.items() if not n.endswith((".txt", ".json"))}
        assert sorted(images) == sorted(f"{i}.{ext}" for i in rows["id"])
        assert all(Image.open(io.BytesIO(b)).format == ("PNG" if ext == "png" else "JPEG") for b in images.values())
        kept = images[f"{rows.loc[2, 'id']}.jpg"] if ext == "jpg" else images[f"{rows.loc[0, 'id']}.png"]
        assert kept == (jpg.read_bytes() if ext == "jpg" else Path(rows.loc[0, "image"]).read_bytes())  # as stored
        samples = list(
            wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False).decode("pil").to_tuple(ext, "txt")
        )
        assert len(samples) == len(rows)
    lossless = tmp_path / "png" / "shard-000000.tar"
    with tarfile.open(lossless) as tar:
        converted = Image.open(io.BytesIO(tar.extractfile(f"{rows.loc[2, 'id']}.png").read()))
        assert (
            converted.convert("RGB").tobytes() == Image.open(jpg).convert("RGB").tobytes()
        )  # the JPEG's pixels exactly


def test_parquet_export_embeds_the_images(tmp_path):
    import pyarrow.parquet as pq

    rows = make_rows(tmp_path)
    write_split(rows, tmp_path / "p", *export_options({"format": "parquet", "shard_size": 3}, "test"))
    parts = sorted((tmp_path / "p").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}-of-00003.parquet" for i in range(3)]
    records = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in records] == rows["id"].tolist()
    for record, row in zip(records, rows.itertuples()):
        assert Image.open(io.BytesIO(record["image"]["bytes"])).size == (row.width, row.height)
        assert record["text"] == row.text and record["orig_text"] == row.orig_text


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset", "simpletuner", "parquet"])
def test_rows_table_locates_every_image_whatever_the_layout(tmp_path, fmt):
    from scripts.lib.export import read_rows_table, release_image_bytes, write_rows_table

    rows = make_rows(tmp_path).assign(split=["train"] * 6 + ["validation"] * 2)
    release = tmp_path / "release"
    fmt, options = export_options({"format": fmt, "shard_size": 3} if fmt in ("webdataset", "parquet") else fmt, "test")
    for split in ("train", "validation"):
        write_split(rows[rows["split"] == split], release / split, fmt, options)
    write_rows_table(rows, release)
    table = read_rows_table(release)
    assert table[["id", "source", "split", "text", "orig_text"]].equals(
        rows[["id", "source", "split", "text", "orig_text"]]
    )
    assert table["image"].notna().all()
    for record, row in zip(table.itertuples(), rows.itertuples()):
        assert record.image.startswith(f"{row.split}/")
        data = release_image_bytes(release, record.image)
        assert hashlib.sha256(data).hexdigest() == record.image_sha256 and len(data) == record.image_nbytes
        assert Image.open(io.BytesIO(data)).size == (row.width, row.height)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tarball", "unknown format"),
        ({"format": "webdataset", "shard": 5}, "unknown option"),
        ({"format": "webdataset", "shard_size": 0}, "positive integer"),
    ],
)
def test_bad_export_specs_are_one_line_errors(spec, message):
    with pytest.raises(DataError, match=message):
        export_options(spec, "params.yaml: releases.x")
