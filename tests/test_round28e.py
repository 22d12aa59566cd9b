"""Round 28e: hostile input shapes at scale: one enormous record, very many tiny things, pathological dedup text.

1. A record's kept native fields had no cap: a DALL-E-3 json's 20 MB `notes`, a WebDataset json's 20 MB
   `caption_variant`, a DiffusionDB parquet's 20 MB `user_name` cell went into the prompt table whole (and into
   every copy of it), and the writer held batch_rows such rows at once: 8 records of 20 MB took ingest from
   432 MB to 669 MB. The meta JSON is capped (ingest.MAX_META_BYTES, 1 MiB): `meta_too_large`, skipped or
   one line; the writer also writes a row group once it holds ingest.FLUSH_BYTES of text.
2. A parquet source missing a column named every column the file has: 5,000 columns made a 40 KB error line,
   a 100 KB column name a 100 KB one. The line shows the first readers.base.COLUMNS_SHOWN names, each cut short.
3. Dedup shingled its texts in batches counted in rows only (sketch: runtime.batch_rows, 20,000; the exact
   Jaccard check: 65,536): the temporaries cost ~15 bytes a text byte, so 4,000 copies of one 16 KB prompt took
   dedup-text to 1.1 GB, and 20,000 prompts of 64 KB would be ~20 GB in every worker. Batches are now also cut
   at minhash.TEXT_BLOCK_BYTES of text (a longer text alone), and signatures() gathers at most SIGNATURE_CELLS
   shingles at once. The flags are the same bits (benchmarks/hostile_shapes_bench.py measures the memory).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.archives import tar_bytes
from helpers.workspace import PNG, error_line, ingest_source
from scripts.lib import minhash as mh

BIG = "z" * (2 << 20)  # 2 MB: over the 1 MiB metadata cap, well under every member and cell cap


def parquet_bytes(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def diffusiondb_metadata(big: str) -> dict:
    row = {"image_name": "a.png", "prompt": "a red fox", "part_id": 1, "seed": 1, "step": 50, "cfg": 7.0}
    row |= {"sampler": "k", "width": 512, "height": 512, "user_name": big, "timestamp": "t"}
    row |= {"image_nsfw": 0.0, "prompt_nsfw": 0.0}
    good = {**row, "image_name": "b.png", "user_name": "u"}
    return {name: [row[name], good[name]] for name in row}


# ---------------------------------------------------------------- 1. a record's metadata is capped

BIG_META = {  # case: (the source's params, its files): one sample with a 2 MB metadata field, one without
    "dalle3 json's other field": (
        {"kind": "dalle3", "caption_field": "short_caption"},
        {
            "data-000000.tar": tar_bytes(
                [
                    ("a.png", PNG),
                    ("a.json", json.dumps({"width": 1, "height": 1, "short_caption": "a fox", "notes": BIG}).encode()),
                    ("b.png", PNG),
                    ("b.json", json.dumps({"width": 1, "height": 1, "short_caption": "a cat"}).encode()),
                ]
            )
        },
    ),
    "webdataset json's caption_variant": (
        {"kind": "bucketed_webdataset", "images": "data/raw/s"},
        {
            "manifest.json": json.dumps({"format": "bucketed_shards_v1"}).encode(),
            "buckets/b/shard-000000.tar": tar_bytes(
                [
                    ("a.png", PNG),
                    ("a.txt", b"a fox\n"),
                    ("a.json", json.dumps({"target_w": 512, "target_h": 512, "caption_variant": BIG}).encode()),
                    ("b.png", PNG),
                    ("b.txt", b"a cat\n"),
                    ("b.json", json.dumps({"target_w": 512, "target_h": 512}).encode()),
                ]
            ),
        },
    ),
    "diffusiondb parquet's user_name cell": (
        {"kind": "diffusiondb", "read": "metadata"},
        {"metadata.parquet": parquet_bytes(diffusiondb_metadata(BIG))},
    ),
}


@pytest.mark.parametrize("case", BIG_META)
def test_a_records_huge_metadata_is_skipped_not_written(tmp_path, monkeypatch, capfd, case):
    spec, files = BIG_META[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**spec, "on_error": "skip"}, files)
    assert result.returncode == 0, result.stderr
    assert rows is not None and len(rows) == 1 and len(rows[0]["meta"]) < 10_000, [len(r["meta"]) for r in rows or []]
    report = json.loads((tmp_path / "data" / "prompts" / "s.report.json").read_text())
    assert report["skipped"] == {"meta_too_large": 1}, report


@pytest.mark.parametrize("case", BIG_META)
def test_a_records_huge_metadata_is_one_line_under_on_error_fail(tmp_path, monkeypatch, capfd, case):
    spec, files = BIG_META[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**spec, "on_error": "fail"}, files)
    line = error_line(result.stderr)
    assert result.returncode == 2 and rows is None, result.stderr[-2000:]
    assert "over 1,048,576" in line and len(line) < 500, line[:500]


# ---------------------------------------------------------------- 2. many columns: a bounded line

MANY_COLUMNS = {  # case: (the source's params, its files)
    "diffusiondb metadata of 5,000 columns, no prompt": (
        {"kind": "diffusiondb", "read": "metadata"},
        {"metadata.parquet": parquet_bytes({f"column_{k}": [1] for k in range(5000)})},
    ),
    "gustavosta parquet of 5,000 columns, no Prompt": (
        {"kind": "gustavosta"},
        {"data/train.parquet": parquet_bytes({f"column_{k}": [1] for k in range(5000)})},
    ),
    "diffusiondb metadata whose one column's name is 100 KB": (
        {"kind": "diffusiondb", "read": "metadata"},
        {"metadata.parquet": parquet_bytes({"c" * 100_000: [1]})},
    ),
}


@pytest.mark.parametrize("case", MANY_COLUMNS)
def test_a_missing_column_among_many_is_a_short_line(tmp_path, monkeypatch, capfd, case):
    spec, files = MANY_COLUMNS[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, spec, files)
    line = error_line(result.stderr)
    assert result.returncode == 2 and rows is None, result.stderr[-2000:]
    assert "missing column" in line and len(line) < 2000, line[:3000]


# ---------------------------------------------------------------- 3. dedup batches bounded by their text bytes

CAP = 16 * 1024  # TEXT_BLOCK_BYTES for the test: a batch holds at most this many bytes of text (a longer text alone)
LONG_TEXTS = {  # case: texts whose rows alone make a batch far over CAP
    "40 copies of one 4 KB prompt": ["a red fox " * 400] * 40,
    "30 prompts of 500 distinct words": [" ".join(f"w{i}x{k}" for k in range(500)) for i in range(30)],
    "40 prompts of one character 2,000 times": ["a" * 2000] * 40,
    "long prompts between empty and blank ones": ["", " \t ", "a cat " * 1000] * 10,
}


def batch_bytes(texts) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.binary_length(mh.as_string_array(texts))).as_py() or 0)


@pytest.mark.parametrize("case", LONG_TEXTS)
def test_dedup_signs_long_texts_in_batches_bounded_by_bytes(monkeypatch, case):
    from scripts.lib.dedup import signing
    from scripts.lib.params import Dedup, Runtime

    texts = LONG_TEXTS[case]
    params, runtime = Dedup(), Runtime(workers=1)
    whole = signing.sketch(texts, params, runtime)
    monkeypatch.setattr(mh, "TEXT_BLOCK_BYTES", CAP, raising=False)
    sizes: list[tuple[int, int]] = []
    sign = signing.sketch_batch

    def watched(batch, params):
        sizes.append((len(batch), batch_bytes(batch)))
        return sign(batch, params)

    monkeypatch.setattr(signing, "sketch_batch", watched)
    bounded = signing.sketch(texts, params, runtime)
    assert all(rows == 1 or size <= CAP for rows, size in sizes), sizes
    assert sum(rows for rows, _ in sizes) == len(texts)
    for name in ("band_keys", "sequence_keys", "shingle_counts"):
        assert np.array_equal(getattr(bounded, name), getattr(whole, name)), name


@pytest.mark.parametrize("case", LONG_TEXTS)
def test_exact_jaccard_shingles_long_texts_in_blocks_bounded_by_bytes(monkeypatch, case):
    from scripts.lib.shingle_sets import shingle_sets

    texts = pa.array(LONG_TEXTS[case], pa.large_string())
    whole = shingle_sets(texts, "word", 3)
    monkeypatch.setattr(mh, "TEXT_BLOCK_BYTES", CAP, raising=False)
    sizes: list[tuple[int, int]] = []
    block = mh._shingle_block

    def watched(part, unit, ngram):
        sizes.append((len(part), batch_bytes(part)))
        return block(part, unit, ngram)

    monkeypatch.setattr(mh, "_shingle_block", watched)
    bounded = shingle_sets(texts, "word", 3)
    assert all(rows == 1 or size <= CAP for rows, size in sizes), sizes
    assert np.array_equal(bounded.hashes, whole.hashes) and np.array_equal(bounded.offsets, whole.offsets)


CELLS = 1 << 16  # SIGNATURE_CELLS for the test
SAME_LENGTH = {  # case: shingles of every text: all in one signatures() group, more than CELLS in all
    "377 texts of 200 shingles": 200,
    "181 texts of 500 shingles": 500,
    "115 texts of 1,000 shingles": 1000,
}


@pytest.mark.parametrize("case", SAME_LENGTH)
def test_signatures_gather_a_bounded_number_of_shingles_at_once(monkeypatch, case):
    """signatures() gathered [4096 texts, L shingles] at once: 490 MB for texts of 10,000 words."""
    length = SAME_LENGTH[case]
    texts = CELLS // length + 50  # more texts than one gather of SIGNATURE_CELLS may take
    rng = np.random.default_rng(0)
    shingles = mh.Shingles(
        hashes=rng.integers(0, 1 << 63, texts * length, dtype=np.uint64),
        offsets=np.arange(texts + 1, dtype=np.int64) * length,
    )
    perms = mh.permutations(4, 1)
    whole = mh.signatures(shingles, perms)
    monkeypatch.setattr(mh, "SIGNATURE_CELLS", CELLS, raising=False)
    gathered: list[int] = []
    full = np.full

    def watched(shape, *args, **kwargs):
        if isinstance(shape, tuple) and len(shape) == 2 and shape[1] == 4:
            gathered.append(shape[0] * length)
        return full(shape, *args, **kwargs)

    monkeypatch.setattr(mh.np, "full", watched)
    bounded = mh.signatures(shingles, perms)
    monkeypatch.undo()
    gathered = gathered[1:]  # the first is the whole result's, not a gather
    assert gathered and max(gathered) <= CELLS, max(gathered)
    assert np.array_equal(bounded, whole)
