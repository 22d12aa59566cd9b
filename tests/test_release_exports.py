"""Release exports (issue 6): WebDataset shards readable by the `webdataset` library with the same
(image, text) pairs, SimpleTuner parquet, and the aspect-bucketed layout that never upsamples."""
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
from scripts.lib.export import buckets_at, choose_target, export_options, write_split

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
            records.append({"id": f"{i:04d}abcd", "source": "s", "text": f"caption number {i}", "orig_text": f"raw {i}",
                            "image": ref, "width": w, "height": h})
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
    for (key, image, text, meta), row in zip(samples, rows.itertuples()):
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


def test_simpletuner_parquet_points_at_the_images(tmp_path):
    rows = make_rows(tmp_path)
    write_split(rows, tmp_path / "st", "simpletuner", {})
    table = pd.read_parquet(tmp_path / "st" / "simpletuner.parquet")
    assert list(table.columns) == ["filename", "caption", "width", "height"]
    assert table["caption"].tolist() == rows["text"].tolist()
    for row in table.itertuples():
        assert Image.open(tmp_path / "st" / row.filename).size == (row.width, row.height)


def test_bucketed_export_never_upsamples_and_crops_by_id(tmp_path):
    rows = make_rows(tmp_path)
    fmt, options = export_options("bucketed", "test")
    write_split(rows, tmp_path / "b", fmt, options)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["format"] == "bucketed_shards_v1" and manifest["divisible"] == 32
    seen = 0
    for bucket in manifest["buckets"]:
        for shard in bucket["shards"]:
            with tarfile.open(tmp_path / "b" / shard) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for name in [n for n in members if n.endswith(".json")]:
                meta = json.loads(members[name])
                image = Image.open(io.BytesIO(members[name.replace(".json", ".jpg")]))
                assert image.size == (meta["target_w"], meta["target_h"])
                assert meta["target_w"] <= meta["orig_w"] and meta["target_h"] <= meta["orig_h"]  # never upsampled
                assert meta["scale"] <= 1.0
                if min(meta["orig_w"], meta["orig_h"]) >= 32:
                    assert meta["target_w"] % 32 == 0 and meta["target_h"] % 32 == 0
                corner = hashlib.sha256(meta["id"].encode()).digest()[0] % 4
                assert meta["crop_left"] == (0 if corner in (0, 2) else meta["resized_w"] - meta["target_w"])
                assert meta["crop_top"] == (0 if corner in (0, 1) else meta["resized_h"] - meta["target_h"])
                assert members[name.replace(".json", ".txt")].decode().endswith("\n")
                assert meta["bucket_id"] == bucket["bucket_id"]
                seen += 1
    assert seen == len(rows) == sum(b["num_samples"] for b in manifest["buckets"])


def test_buckets_match_the_laion_export():
    buckets = {b.bucket_id: (b.width, b.height) for b in buckets_at(512, 32, [[1024, 1024], [1216, 832], [832, 1216]])}
    assert buckets == {"p1024x1024": (512, 512), "p1216x832": (608, 416), "p832x1216": (416, 608)}
    bucket, tw, th = choose_target(2000, 1000, buckets_at(512, 32, [[1024, 1024], [1344, 768]]), 32)
    assert bucket.bucket_id == "p1344x768" and (tw, th) == (672, 384)
    bucket, tw, th = choose_target(300, 300, buckets_at(512, 32, [[1024, 1024]]), 32)
    assert (tw, th) == (288, 288)  # shrunk to fit, not upsampled to 512


@pytest.mark.parametrize("spec, message", [
    ("tarball", "unknown format"),
    ({"format": "webdataset", "shard": 5}, "unknown option"),
    ({"format": "webdataset", "shard_size": 0}, "positive integer"),
])
def test_bad_export_specs_are_one_line_errors(spec, message):
    with pytest.raises(DataError, match=message):
        export_options(spec, "params.yaml: releases.x")
