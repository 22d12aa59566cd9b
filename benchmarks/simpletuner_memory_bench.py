"""Peak memory of `simpletuner` against its record count: the names it wrote, and the rows its parquet holds.

    python benchmarks/simpletuner_memory_bench.py [--records 20000,50000,100000] [--data-dir] [--out FILE]

Round 38b measured about 150 MB + 0.8 KB a record (227 MB at 100,000), most likely compile_simpletuner's set of
every written name; round 39c moved the names to SQLite, and peak RSS still grew about 0.5-1 KB a record up to
50,000 records: the parquet writer's row group, 50,000 rows held as Python lists before round 42f (flat past it).
This builds shards of 1,000 tiny records (a 4x4 PNG: only its header is read, and its bytes with --data-dir),
then compiles each count in a fresh child process per variant (peak RSS is a high-water mark: one process cannot
measure two runs): `dict` (the names in a dict, as before round 39c), `rows50k` (the row group of 50,000 rows,
as before round 42f) and `shipped`. Each child's peak comes from os.wait4's rusage; the growth over a 0-record
run of the same variant is printed per record, and the growth from the smallest count to the largest.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._peak_rss import run_child
from benchmarks._record import add_out_argument, record

SHARD_RECORDS = 1000
CHILD = """
import contextlib, sys
from pathlib import Path
from scripts.lib.readers import dalle3
from scripts.lib import simpletuner, tables
if sys.argv[1] == "dict":  # before round 39c: every written name held in memory
    dalle3.written_names = lambda: contextlib.nullcontext({})
if sys.argv[1] in ("dict", "rows50k"):  # before round 42f: 50,000 rows held, whatever their text
    dalle3.table_writer = lambda path, batch_rows: tables.ParquetRows(path, simpletuner._schema(), 50_000)
root = Path(sys.argv[2])
data = {"data_dir": root / "data"} if sys.argv[4] == "data" else {}
dalle3.compile_simpletuner(root / sys.argv[3], root / "out.parquet", on_error="fail", **data)
"""


def tiny_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_shard(path: Path, numbers: range) -> None:
    png = tiny_png()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for n in numbers:
            meta = {"image_name": f"folder{n % 97}/image-{n:08d}.png", "short_caption": f"a cat {n}"}
            for name, data in ((f"{n:08d}.png", png), (f"{n:08d}.json", json.dumps(meta | {"width": 4, "height": 4}))):
                info = tarfile.TarInfo(name)
                data = data.encode() if isinstance(data, str) else data
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


VARIANTS = ("dict", "rows50k", "shipped")


def peak_kib(variant: str, root: Path, shards: str, outputs: str) -> tuple[int, float]:
    """(peak RSS in KiB, seconds) of one compile in a child process of its own."""
    for leftover in ("out.parquet", "data", "multidatabackend.json"):
        with contextlib.suppress(FileNotFoundError):
            subprocess.run(["rm", "-rf", str(root / leftover)], check=True)
    run = run_child([sys.executable, "-c", CHILD, variant, str(root), shards, outputs], capture=False)
    if run.exit_code != 0:
        raise SystemExit(f"{variant} run failed (exit {run.exit_code})")
    return run.peak_kib, run.seconds


def build_shards(folder: Path, records: int) -> None:
    """Shards of SHARD_RECORDS (the archive reader's per-shard key set is freed at each shard's end: many
    shards, as published)."""
    build_shard(folder / "data-000000.tar", range(0))
    for first in range(0, records, SHARD_RECORDS):
        build_shard(
            folder / f"data-{first // SHARD_RECORDS:06d}.tar", range(first, min(first + SHARD_RECORDS, records))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="20000,50000,100000", help="record counts, comma-separated")
    parser.add_argument("--data-dir", action="store_true", help="write data/ too (images and captions: slower)")
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    counts = sorted(int(n) for n in args.records.split(","))
    outputs = "data" if args.data_dir else "parquet"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in [0, *counts]:
            build_shards(root / f"n{n}", n)
        for variant in VARIANTS:
            base, _ = peak_kib(variant, root, "n0", outputs)
            peaks = {}
            for n in counts:
                peaks[n], seconds = peak_kib(variant, root, f"n{n}", outputs)
                growth = peaks[n] - base
                print(
                    f"{variant:8} {outputs}: {n:7} records, peak RSS {peaks[n] / 1024:6.1f} MiB (0 records: "
                    f"{base / 1024:.1f}), growth {growth / 1024:5.1f} MiB = {growth * 1024 / n:4.0f} B a record, "
                    f"{seconds:.1f} s",
                    flush=True,
                )
            low, high = counts[0], counts[-1]
            print(
                f"{variant:8} {outputs}: from {low} to {high} records: "
                f"{(peaks[high] - peaks[low]) * 1024 / max(high - low, 1):.0f} B a record"
            )


if __name__ == "__main__":
    main()
