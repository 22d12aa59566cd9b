"""sample-data: deterministic native-format sample sources with planted work for every stage."""

from __future__ import annotations

import csv
import io
import itertools
import json
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import file_digests
from scripts.lib.marks import MARKER, MARKER_TEXT
from scripts.tools.sample_data import word_jaccard, write_all

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_all(root)
    return root


def test_same_bytes_on_every_run(sample, tmp_path):
    write_all(tmp_path / "again")
    assert file_digests(sample) == file_digests(tmp_path / "again")


def test_committed_data_raw_is_the_generator_output(sample):
    committed = REPO / "data" / "raw"
    if not committed.exists():
        pytest.skip("data/raw not generated yet")
    committed_files, generated = file_digests(committed), file_digests(sample)
    # the folder's marker: `sample-data` writes it (atomic_path), write_all does not; git keeps its bytes only
    assert (committed / MARKER).read_text(encoding="utf-8") == MARKER_TEXT, "data/raw lacks its marker"
    del committed_files[MARKER]
    foreign = sorted(set(committed_files) - set(generated))
    assert not foreign, (
        f"data/raw holds files `sample-data` does not write: {foreign[:5]}; data/raw is the shipped sample "
        "set, so keep a new source's files elsewhere (e.g. data/sources/<name>, CONTRIBUTING.md)"
    )
    assert committed_files == generated, "data/raw is stale: run `python -m scripts sample-data data/raw`"


def test_layout_and_size(sample):
    assert set(file_digests(sample)) == {
        "diffusiondb/metadata.parquet",
        "diffusiondb/part-000001.zip",
        "diffusiondb/part-000002.zip",
        "chatgpt/prompts.txt",
        "gustavosta/data/train.parquet",
        "gustavosta/data/eval.parquet",
        "openprompts/openprompts.csv",
        "dalle3/data-000000.tar",
        "laion_buckets/manifest.json",
        "laion_buckets/buckets/p1024x1024/shard-000000.tar",
        "laion_buckets/buckets/p1216x832/shard-000000.tar",
        "laion_buckets/buckets/p832x1216/shard-000000.tar",
    }
    assert sum(p.stat().st_size for p in sample.rglob("*") if p.is_file()) < 2 * 1024 * 1024


def test_diffusiondb_has_the_13_native_columns_and_dtypes(sample):
    schema = pq.read_schema(sample / "diffusiondb" / "metadata.parquet")
    assert [(f.name, f.type) for f in schema] == [
        ("image_name", pa.string()),
        ("prompt", pa.string()),
        ("part_id", pa.uint16()),
        ("seed", pa.uint32()),
        ("step", pa.uint16()),
        ("cfg", pa.float32()),
        ("sampler", pa.uint8()),
        ("width", pa.uint16()),
        ("height", pa.uint16()),
        ("user_name", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("image_nsfw", pa.float32()),
        ("prompt_nsfw", pa.float32()),
    ]
    assert schema.metadata is None or b"pandas" not in schema.metadata
    table = pq.read_table(sample / "diffusiondb" / "metadata.parquet").to_pylist()
    with zipfile.ZipFile(sample / "diffusiondb" / "part-000001.zip") as zf:
        listing = json.loads(zf.read("part-000001.json"))
        assert len(zf.namelist()) == len(listing) + 1
    part1 = {r["image_name"]: r for r in table if r["part_id"] == 1}
    assert set(listing) == set(part1)
    name, entry = next(iter(listing.items()))
    assert (entry["p"], entry["se"]) == (part1[name]["prompt"], part1[name]["seed"])


def diffusiondb_prompts(sample: Path) -> list[str]:
    return pq.read_table(sample / "diffusiondb" / "metadata.parquet").column("prompt").to_pylist()


def test_planted_duplicates_straddle_the_dedup_thresholds(sample):
    prompts = diffusiondb_prompts(sample)
    assert len(prompts) - len(set(prompts)) >= 10  # exact duplicates
    distinct = sorted(set(prompts))
    similarities = [word_jaccard(a, b) for a, b in itertools.combinations(distinct, 2)]
    # raising dedup.threshold 0.7 -> 0.8 keeps the [0.7, 0.8) pairs: more rows survive
    assert sum(0.7 <= j < 0.8 for j in similarities) >= 10
    assert sum(j >= 0.8 for j in similarities) >= 10


def test_rows_for_the_cleaner_are_planted(sample):
    prompts = diffusiondb_prompts(sample)
    assert any("http" in p for p in prompts)
    assert any(p.count(",") >= 10 for p in prompts)
    assert any("jpg" in p for p in prompts) and any("#" in p for p in prompts)
    assert any(len(p) < 16 for p in prompts)
    assert any(p.startswith(("i'm", "help me")) for p in prompts)
    assert any("greg rutkowski" in p and "trending on artstation" in p for p in prompts)


def test_cross_source_overlap_with_diffusiondb(sample):
    db = set(diffusiondb_prompts(sample))
    long_db = [p for p in db if len(p.split()) >= 20]
    gustavosta = pq.read_table(sample / "gustavosta" / "data" / "train.parquet").column("Prompt").to_pylist()
    with (sample / "openprompts" / "openprompts.csv").open(newline="", encoding="utf-8") as f:
        openprompts = [row["prompt"] for row in csv.DictReader(f)][:150]  # batch 1
    for rows in (gustavosta, openprompts):
        near = [p for p in rows if p not in db and any(word_jaccard(p, q) >= 0.7 for q in long_db)]
        assert len(near) >= 3
    assert any(p in db for p in openprompts)


def test_chatgpt_openprompts_and_dalle3_shapes(sample):
    lines = (sample / "chatgpt" / "prompts.txt").read_text(encoding="utf-8").splitlines()
    assert 180 <= len(lines) <= 220 and sum(line.startswith("- ") for line in lines) >= 20
    with (sample / "openprompts" / "openprompts.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and set(rows[0]) == {"prompt", "raw_data"}  # two batches of 150, one list
    assert set(json.loads(rows[0]["raw_data"])["raw_discord_data"]) >= {
        "seed",
        "width",
        "height",
        "num_step",
        "cfg_scale",
        "image_uri",
    }
    with tarfile.open(sample / "dalle3" / "data-000000.tar") as tar:
        members = tar.getmembers()
        assert {m.mtime for m in members} == {1_700_000_000} and {m.uid for m in members} == {0}
        records = [json.loads(tar.extractfile(m).read()) for m in members if m.name.endswith(".json")]
    assert len(records) == 30 and sum("width" not in r for r in records) == 3
    assert set(records[0]) == {
        "image_name",
        "md5_pil_hash",
        "md5_file_hash",
        "sha512_hash",
        "short_caption",
        "long_caption",
        "resolution",
        "width",
        "height",
        "url",
        "source",
        "original_prompt",
        "short_caption2",
        "long_caption2",
    }
    manifest = json.loads((sample / "laion_buckets" / "manifest.json").read_text())
    assert manifest["format"] == "bucketed_shards_v1" and (manifest["base_resolution"], manifest["divisible"]) == (
        64,
        4,
    )
    with tarfile.open(sample / "laion_buckets" / manifest["buckets"][0]["shards"][0]) as tar:
        names = tar.getnames()
    assert names[:3] == ["000000000.jpg", "000000000.txt", "000000000.json"]
    from PIL import Image

    for bucket in manifest["buckets"]:  # every size the sample states is the JPEG's own
        with tarfile.open(sample / "laion_buckets" / bucket["shards"][0]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in members.items():
            if name.endswith(".json"):
                meta = json.loads(data)
                with Image.open(io.BytesIO(members[name[:-5] + ".jpg"])) as image:
                    assert image.size == (meta.get("target_w", meta.get("w")), meta.get("target_h", meta.get("h")))
                    assert image.size == (bucket["width"], bucket["height"])
