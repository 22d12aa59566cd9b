"""Peak memory of `simpletuner --data-dir` against its record count: the names it wrote, on disk or in a dict.

    python benchmarks/simpletuner_memory_bench.py [--records 30000] [--batch-rows 50000] [--out FILE]

Round 38b measured about 150 MB + 0.8 KB a record (227 MB at 100,000), most likely compile_simpletuner's set of
every written name. This builds one shard of N tiny records, then compiles it twice, each in a fresh child process
(peak RSS is a high-water mark: one process cannot measure two runs): once with the names in a plain dict (the
baseline, as before round 39c) and once as shipped (readers.dalle3.WrittenNames, a SQLite temporary file). Each
child's peak comes from os.wait4's rusage; the ratio of the two growths over a 0-record run is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import add_out_argument, record

SHARD_RECORDS = 1000
CHILD = """
import contextlib, sys
from pathlib import Path
from scripts.lib.readers import dalle3
if sys.argv[1] == "dict":  # the baseline: every written name held in memory
    dalle3.written_names = lambda: contextlib.nullcontext({})
root = Path(sys.argv[2])
dalle3.compile_simpletuner(
    root / sys.argv[3], root / "out.parquet", data_dir=root / "data", on_error="fail", batch_rows=int(sys.argv[4])
)
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


def peak_kib(variant: str, root: Path, shard: str, batch_rows: int) -> tuple[int, float]:
    """(peak RSS in KiB, seconds) of one compile in a child process of its own."""
    for leftover in ("out.parquet", "data", "multidatabackend.json"):
        with contextlib.suppress(FileNotFoundError):
            subprocess.run(["rm", "-rf", str(root / leftover)], check=True)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, variant, str(root), shard, str(batch_rows)], cwd=Path(__file__).parents[1]
    )
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{variant} run failed ({status})")
    return usage.ru_maxrss, time.perf_counter() - started  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    # the parquet's row group (50,000 rows as shipped) is held until written: bounded, but it hides the names'
    # cost below 50,000 records; a smaller one shows it on a short run
    parser.add_argument("--batch-rows", type=int, default=50_000)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_shard(root / "empty" / "data-000000.tar", range(0))
        for first in range(0, args.records, SHARD_RECORDS):  # the archive reader's per-shard key set is freed
            last = min(first + SHARD_RECORDS, args.records)  # at each shard's end: many shards, as published
            build_shard(root / "many" / f"data-{first // SHARD_RECORDS:06d}.tar", range(first, last))
        growth = {}
        for variant in ("dict", "sqlite"):
            base, _ = peak_kib(variant, root, "empty", args.batch_rows)
            peak, seconds = peak_kib(variant, root, "many", args.batch_rows)
            growth[variant] = peak - base
            print(
                f"{variant:6}: {args.records} records, peak RSS {peak / 1024:.1f} MiB (0 records: {base / 1024:.1f}), "
                f"growth {growth[variant] / 1024:.1f} MiB = {growth[variant] * 1024 / max(args.records, 1):.0f} B a "
                f"record, {seconds:.1f} s"
            )
    print(f"ratio sqlite/dict of the growth: {growth['sqlite'] / max(growth['dict'], 1):.3f}")


if __name__ == "__main__":
    main()
