"""Round 14c: a file found by a name pattern is found in any case. Every row failed before its fix.

A stage that lists a folder for its inputs matched names case-sensitively, so on Linux a file whose name a
camera, a Windows tool or a zip of another system wrote in upper case was left out at exit 0, its rows
missing, or read as another format: dedup's folder of parquet shards (`PART-1.PARQUET`), a bucketed
export's shards when its manifest lists none (`buckets/P1/SHARD-0.TAR`), an image in a zip (`IMAGES.ZIP`,
read as a tar when an image was read back). The readers' source files matched in any case since round 8
(readers/base.matches); that one rule, now safe_paths.matches, is every listing's.
"""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest
from PIL import Image

from helpers import cli, tar_bytes
from helpers.workspace import PARAMS, ingest_source, write_params
from scripts.lib.io import PROMPT_COLUMNS
from scripts.lib.tables import write_parquet


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def ingested(tmp_path, monkeypatch, capfd, source: dict, files: dict[str, bytes]) -> list[dict]:
    """`ingest s` of a source holding `files`: its prompt table's rows (the command must succeed)."""
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0, result.stderr
    return rows


# ---------------------------------------------------------------- a bucketed export's shards, unlisted


def bucketed_export(shard_path: str) -> dict[str, bytes]:
    """An export whose manifest names its bucket but no shard: the reader lists buckets/*/shard-*.tar."""
    samples = []
    for key, caption in (("k1", "a red fox"), ("k2", "a blue boat")):
        meta = json.dumps({"target_w": 512, "target_h": 512, "bucket_id": "p1"}).encode()
        samples += [(f"{key}.png", png()), (f"{key}.txt", caption.encode()), (f"{key}.json", meta)]
    manifest = json.dumps({"format": "bucketed_shards_v1", "buckets": {"p1": {}}}).encode()
    return {"manifest.json": manifest, shard_path: tar_bytes(samples)}


@pytest.mark.parametrize(
    "shard_path", ["buckets/p1/SHARD-000000.TAR", "buckets/P1/Shard-000000.tar", "BUCKETS/p1/shard-000000.Tar"]
)
def test_a_bucketed_exports_unlisted_shard_is_found_in_any_case(tmp_path, monkeypatch, capfd, shard_path):
    source = {"kind": "bucketed_webdataset"}
    for folder, files in (
        ("lower", bucketed_export("buckets/p1/shard-000000.tar")),
        ("upper", bucketed_export(shard_path)),
    ):
        rows = ingested(tmp_path / folder, monkeypatch, capfd, source, files)
        assert [(row["prompt"], row["width"], row["height"]) for row in rows] == [
            ("a red fox", 512, 512),
            ("a blue boat", 512, 512),
        ]


# ---------------------------------------------------------------- an image inside a zip named in upper case


@pytest.mark.parametrize("name", ["PART-000001.ZIP", "images.Zip", "x.zIp"])
def test_an_image_inside_a_zip_named_in_upper_case_is_read_from_the_zip(tmp_path, name):
    """archive.read_member took any archive not ending in lower-case `.zip` for a tar: `not a readable tar`."""
    from scripts.lib.archive import make_ref, read_member

    with zipfile.ZipFile(tmp_path / name, "w") as zf:
        zf.writestr("a.png", png())
    assert read_member(make_ref(tmp_path / name, "a.png")) == png()


# ---------------------------------------------------------------- dedup's folder of shards


def prompt_shard(texts: list[str], first: int) -> pd.DataFrame:
    ids = [f"r{first + i}" for i in range(len(texts))]
    table = pd.DataFrame({"id": ids, "source": "chatgpt", "prompt": texts, "text": texts})
    return table.assign(split=None, image=None, width=512, height=512, meta="{}")[[*PROMPT_COLUMNS, "text"]]


SHARDS = [
    ["part-0.parquet", "PART-1.PARQUET"],
    ["A.Parquet", "b.parquet"],
    ["SHARD-0.PARQUET", "SHARD-1.PARQUET"],  # a folder of upper-case shards only: "no parquet shards" before
]


@pytest.mark.parametrize("names", SHARDS, ids=lambda names: "+".join(names))
def test_dedup_reads_every_shard_of_its_input_folder_in_any_case(tmp_path, monkeypatch, capfd, names):
    write_params(tmp_path, dedup={**PARAMS["dedup"], "method": "minhash"})
    texts = [["a red fox in the snow at dawn", "a blue boat on a calm lake"], ["an old castle on a green hill"]]
    (tmp_path / "in").mkdir()
    for number, (name, shard_texts) in enumerate(zip(names, texts, strict=True)):
        write_parquet(prompt_shard(shard_texts, first=10 * number), tmp_path / "in" / name)
    result = cli(["dedup", "chatgpt", "in", "out.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out.report.json").read_text(encoding="utf-8"))
    assert report["rows_in"] == 3 and len(pd.read_parquet(tmp_path / "out.parquet")) == 3
