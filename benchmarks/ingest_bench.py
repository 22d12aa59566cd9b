"""Benchmark: DALL-E-3 shards -> SimpleTuner parquet, ours vs the reference recipe, same process.

    python benchmarks/ingest_bench.py [--records 200000] [--shards 20] [--workdir /tmp/ingest-bench]

Writes a synthetic DALL-E-3-shaped set (tar shards of <name>.png + <name>.json with every published
json field, tiny png payloads, 1 record in 50 without width), then times
- ours: scripts.lib.readers.compile_simpletuner (tar streamed header by header, never extracted,
  parquet written in row groups);
- the reference recipe: extract every tar, glob the json files, json.load each, build a pandas
  DataFrame, drop rows without width, write the parquet.
Prints both times, the ratio (target >= 10x) and the peak RSS of our compile (target < 1 GB), measured
in fresh processes on 30% of the shards and on all of them (flat as input grows) and in this
process (it runs before the reference, so the high-water mark is ours). Both outputs must hold the
same rows.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import random
import resource
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import add_out_argument, record
from scripts.lib.readers import compile_simpletuner

TINY_PNG = bytes.fromhex(  # a valid 1x1 PNG: the set stays small on disk
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
WORDS = [
    "a",
    "red",
    "fox",
    "an",
    "old",
    "lighthouse",
    "in",
    "the",
    "misty",
    "forest",
    "at",
    "dawn",
    "with",
    "soft",
    "golden",
    "light",
    "painted",
    "in",
    "watercolor",
    "on",
    "textured",
    "paper",
    "highly",
    "detailed",
    "quiet",
    "harbor",
    "neon",
    "city",
    "crystal",
    "dragon",
]


def make_set(root: Path, records: int, shards: int, seed: int = 0) -> list[Path]:
    """Synthetic shards; deterministic. Returns the shard paths."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    per_shard = -(-records // shards)
    paths = []
    for s in range(shards):
        path = root / f"data-{s:06d}.tar"
        paths.append(path)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * per_shard, min(records, (s + 1) * per_shard)):
                name = f"{i:09d}"
                short = " ".join(rng.choices(WORDS, k=12))
                rec = {
                    "image_name": f"{name}.png",
                    "md5_pil_hash": hashlib.md5(name.encode()).hexdigest(),
                    "md5_file_hash": hashlib.md5(short.encode()).hexdigest(),
                    "sha512_hash": hashlib.sha512(name.encode()).hexdigest(),
                    "short_caption": short,
                    "long_caption": " ".join(rng.choices(WORDS, k=60)),
                    "resolution": "1024x1024",
                    "width": 1024,
                    "height": rng.choice([1024, 1792]),
                    "url": f"https://example.com/{name}.png",
                    "source": "reddit",
                    "original_prompt": " ".join(rng.choices(WORDS, k=20)),
                    "short_caption2": [" ".join(rng.choices(WORDS, k=10))],
                    "long_caption2": [" ".join(rng.choices(WORDS, k=40))],
                }
                if i % 50 == 7:
                    del rec["width"]
                for member, data in ((f"{name}.png", TINY_PNG), (f"{name}.json", json.dumps(rec).encode())):
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime = len(data), 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))
    return paths


def reference_recipe(shards: list[Path], scratch: Path, out: Path) -> int:
    """What the reference did: extract everything, json.load each file, one big DataFrame."""
    import pandas as pd

    for shard in shards:
        with tarfile.open(shard) as tar:
            tar.extractall(scratch / shard.stem, filter="data")
    records = []
    for path in sorted(glob.glob(str(scratch / "*" / "*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    df = pd.DataFrame(records)
    df = df[df["width"].notna()]
    df = pd.DataFrame(
        {
            "width": df["width"].astype(int),
            "height": df["height"].astype(int),
            "caption": df["short_caption"],
            "filename": df["image_name"],
        }
    )
    df.to_parquet(out, index=False)
    return len(df)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compile_in_child(shards: list[Path], out: Path) -> float:
    compile_simpletuner(shards, out, "short_caption")
    return peak_rss_mb()


def child_peak_rss_mb(shards: list[Path], out: Path) -> float:
    """Peak RSS of a fresh process compiling `shards` (spawned: nothing inherited)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_compile_in_child, (shards, out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ingest-bench"))
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    shards = make_set(work / "shards", args.records, args.shards)
    size_mb = sum(p.stat().st_size for p in shards) / 2**20
    print(
        f"synthetic set: {args.records} records in {len(shards)} shards, {size_mb:.0f} MiB "
        f"(written in {time.perf_counter() - t:.1f} s)"
    )

    import pandas  # noqa: F401  (imports outside both timings)
    import pyarrow.parquet  # noqa: F401

    # 30% of the default set (60k records) already fills one 50k-row group: past that, memory must not grow
    part = shards[: max(1, len(shards) * 3 // 10)]
    rss_small, rss_all = (
        child_peak_rss_mb(part, work / "flat.parquet"),
        child_peak_rss_mb(shards, work / "flat.parquet"),
    )
    print(
        f"memory:    peak RSS of a fresh compile process: {rss_small:.0f} MiB for {len(part)} shard(s), "
        f"{rss_all:.0f} MiB for all {len(shards)} ({rss_all / rss_small:.2f}x for {len(shards) / len(part):.1f}x the input)"
    )

    rss_before = peak_rss_mb()
    t = time.perf_counter()
    stats = compile_simpletuner(shards, work / "ours.parquet", "short_caption")
    ours = time.perf_counter() - t
    rss_ours = peak_rss_mb()
    print(
        f"ours:      {ours:8.2f} s  {stats['rows_written']} rows, skipped {stats['skipped']}; "
        f"peak RSS {rss_ours:.0f} MiB (before: {rss_before:.0f} MiB)"
    )

    t = time.perf_counter()
    rows = reference_recipe(shards, work / "extracted", work / "reference.parquet")
    reference = time.perf_counter() - t
    print(f"reference: {reference:8.2f} s  {rows} rows (extract + glob + json.load + DataFrame)")

    import pyarrow.parquet as pq

    a = pq.read_table(work / "ours.parquet").to_pandas().sort_values("filename").reset_index(drop=True)
    b = pq.read_table(work / "reference.parquet").to_pandas().sort_values("filename").reset_index(drop=True)
    same = len(a) == len(b) and (a["caption"] == b["caption"]).all() and (a["height"] == b["height"]).all()
    print(f"same rows: {bool(same)}")
    ratio = reference / ours
    print(f"ratio:     {ratio:.1f}x faster (target >= 10x); peak RSS {rss_ours:.0f} MiB (target < 1024)")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if same and ratio >= 10 and rss_all < 1024 else 1)


if __name__ == "__main__":
    main()
