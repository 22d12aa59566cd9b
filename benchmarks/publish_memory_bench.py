"""Peak memory of `publish` writing a release's shards: every row held (before round 44b) or streamed.

    python benchmarks/publish_memory_bench.py [--rows 1000000] [--part-rows 1000] [--max-shard-mb 500] [--out FILE]

Before round 44b publish read every row of every split into a list of dicts (about 1 KB a row: 10^9 rows,
a TB) and held each shard's rows as dicts with their images. It now checks every row in a first pass that
keeps a count, then reads rows.parquet again byte_batches at a time and writes each shard as its rows stream
past, a shard's rows held as Arrow chunks (scripts/tools/publish_shards.py). This writes one release of N rows
whose images are tiny (a 70-byte PNG in parquet parts of --part-rows rows: the export's parquet layout), then
writes its Hub shards each way in a fresh child (peak RSS is a high-water mark: one process cannot measure two
runs; each child's peak is os.wait4's rusage), checks both wrote the same bytes, and prints old / new.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._peak_rss import run_child, said
from benchmarks._record import add_out_argument, record

PNG = bytes.fromhex(  # a 1x1 PNG: every row's image, so the rows, not the images, are what memory holds
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db0000000004945"
    "4e44ae426082"
)

CHILD = """
import sys
from pathlib import Path
from scripts.lib.io import SPLITS
from scripts.tools import publish_shards as shards
mode, release, out, max_bytes = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
out.mkdir(parents=True)
if mode == "old":  # before round 44b: every split's rows read into a list first, then written
    splits = {split: shards.read_split(release, split) for split in SPLITS}
    infos = {split: shards.write_shards(rows, split, out, max_bytes) for split, rows in splits.items()}
else:
    with shards.release_rows(release) as rows:
        shards.count_rows(rows)
        infos = {split: shards.write_shards(rows.records(split), split, out, max_bytes) for split in SPLITS}
print({split: (info["num_examples"], info["num_bytes"], len(info["files"])) for split, info in infos.items()})
"""


def write_part_release(release: Path, rows: int, part_rows: int = 1000) -> Path:
    """A release of `rows` rows (one in ten in validation) whose images are PNG in parquet parts of
    `part_rows` rows, with rows.parquet naming each row's part and id (with its sha256, as a release records)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"{i:016x}" for i in range(rows)]
    splits = ["validation" if i % 10 == 0 else "train" for i in range(rows)]
    refs = []
    for split in ("train", "validation"):
        (release / split).mkdir(parents=True, exist_ok=True)
        mine = [i for i in ids if splits[int(i, 16)] == split]
        for start in range(0, len(mine), part_rows):
            name = f"{split}/part-{start // part_rows:05d}.parquet"
            chunk = mine[start : start + part_rows]
            image = pa.array([{"bytes": PNG, "path": f"{i}.png"} for i in chunk])
            pq.write_table(pa.table({"id": chunk, "image": image}), release / name)
            refs += [(i, f"{name}!/{i}") for i in chunk]
    where = dict(refs)
    pq.write_table(
        pa.table(
            {
                "id": ids,
                "source": ["diffusiondb"] * rows,
                "split": splits,
                "text": [f"a picture number {i}" for i in range(rows)],
                "orig_text": [f"A picture #{i}" for i in range(rows)],
                "width": pa.array([1] * rows, pa.int32()),
                "height": pa.array([1] * rows, pa.int32()),
                "image": [where[i] for i in ids],
                "image_sha256": [hashlib.sha256(PNG).hexdigest()] * rows,
            }
        ),
        release / "rows.parquet",
        compression="zstd",
    )
    return release


def measure(mode: str, release: Path, out: Path, max_bytes: int) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, the child's output) of one write in a fresh child."""
    run = run_child([sys.executable, "-c", CHILD, mode, str(release), str(out), str(max_bytes)])
    return run.peak_mib, run.seconds, said(run)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--part-rows", type=int, default=1000)
    parser.add_argument("--max-shard-mb", type=int, default=500)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        release = write_part_release(Path(tmp) / "release", args.rows, args.part_rows)
        print(f"release: {args.rows:,} rows, 1x1 PNGs in parquet parts of {args.part_rows:,} rows")
        peaks = {}
        for mode in ("old", "new"):
            peaks[mode], seconds, text = measure(mode, release, Path(tmp) / mode, args.max_shard_mb * 1_000_000)
            print(f"{mode:4s} peak RSS {peaks[mode]:8.1f} MB  {seconds:7.2f} s  wrote {text}")
        same = folder_bytes(Path(tmp) / "old") == folder_bytes(Path(tmp) / "new")
        print(f"same shards: {same}; peak RSS old / new: {peaks['old'] / peaks['new']:.2f}x")


if __name__ == "__main__":
    main()
