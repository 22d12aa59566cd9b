"""Benchmark: the per-shard cost of a bucketed manifest.json before any shard is read, new against old.

    python benchmarks/manifest_bench.py [--shards 100000] [--workdir /tmp/manifest-bench]

Builds an export whose manifest lists N shards (empty files under buckets/<b>/, 100 buckets), then times, in
this one process, the shard listing, its keys and their distinctness check as read_bucketed_webdataset does
them (webdataset.manifest_shards, native_names, check_distinct) against the approach before round 31c (each
shard through check_confined: pathlib parsing and one lstat per part, then native_name and shard_name per
shard). Prints microseconds per shard for both and their ratio. tests/test_round31c.py checks the confinement;
no unit test asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.lib.readers.base import check_confined, check_distinct, native_name
from scripts.lib.readers.webdataset import manifest_shards, native_names, shard_name


def build(root: Path, shards: int) -> list[str]:
    names = [f"buckets/b{index % 100:03d}/shard-{index:07d}.tar" for index in range(shards)]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    manifest = {"format": "bucketed_shards_v1", "buckets": {"all": {"shards": names}}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return names


def new_way(root: Path) -> int:
    shards = manifest_shards(root)
    natives = native_names(shards, root)
    check_distinct([(name.removeprefix("buckets/"), name) for name in natives], root / "manifest.json", "shard")
    return len(shards)


def old_way(root: Path, names: list[str]) -> int:
    shards = [check_confined(root / name, root) for name in names]
    keys = [shard_name(shard, root) for shard in shards]
    check_distinct(
        [(key, native_name(shard, root)) for key, shard in zip(keys, shards)], root / "manifest.json", "shard"
    )
    return len(shards)


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/manifest-bench"))
    args = parser.parse_args()
    root = args.workdir / f"export-{args.shards}"
    root.mkdir(parents=True, exist_ok=True)
    names = build(root, args.shards)
    old = timed(lambda: old_way(root, names))
    new = timed(lambda: new_way(root))
    per = 1e6 / args.shards
    print(f"manifest of {args.shards:,} shards: old {old * per:.1f} us/shard, new {new * per:.1f} us/shard")
    print(f"ratio old/new: {old / new:.1f}x")


if __name__ == "__main__":
    main()
