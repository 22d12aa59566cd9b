"""Benchmark: hostile input shapes at 1x and 10x (or 4x) size, time and peak RSS ratios in fresh processes.

    python benchmarks/hostile_shapes_bench.py [--scale 1.0] [--workdir /tmp/hostile-shapes] [--out FILE]

Each shape is built at a small and a large size and measured in its own child process (os.wait4: that child's
peak RSS, not the high-water mark of every child so far). Printed per shape: seconds and MiB at both sizes, and
the ratios large/small next to the size ratio. Linear work shows a time ratio near the size ratio (quadratic:
its square); bounded memory a RSS ratio near 1 where the shape's total grows but each record does not.

Shapes (tests/test_round28e.py asserts the behaviour; this measures it):
- dedup_long: dedup sketch of N copies of one 16 KB prompt (minhash.TEXT_BLOCK_BYTES bounds a batch's text);
- ingest_meta: ingest of a DALL-E-3 shard whose N records each carry a 20 MB json field (ingest.MAX_META_BYTES);
- tar_members: a tar of N zero-byte members walked by archive.iter_samples;
- manifest: a bucketed manifest.json listing N shards (webdataset.manifest_shards);
- text_files: a text source folder of N empty .txt files (readers.base.source_files);
- csv_columns: a CSV of N columns (csv_sources.iter_csv);
- parquet_groups: a parquet file of N one-row row groups (parquet_sources.iter_parquet).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._peak_rss import run_child
from benchmarks._record import add_out_argument, record

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # shape: (small size, large size) at --scale 1
    "dedup_long": (1_000, 4_000),
    "ingest_meta": (2, 8),
    "tar_members": (20_000, 200_000),
    "manifest": (20_000, 200_000),
    "text_files": (2_000, 20_000),
    "csv_columns": (10_000, 100_000),
    "parquet_groups": (1_000, 10_000),
}


def build(shape: str, n: int, folder: Path) -> Path:
    """The input of `shape` at size `n` under `folder` (made afresh)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if shape == "dedup_long":
        path = folder / "in.txt"
        path.write_text(("a red fox in the snow " * 740 + "\n") * n, encoding="utf-8")
        return path
    if shape in ("ingest_meta", "tar_members"):
        path = folder / "data-000000.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for k in range(n):
                for name, data in _members(shape, k):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return folder
    if shape == "manifest":
        shards = [f"buckets/b/shard-{k:07d}.tar" for k in range(n)]
        manifest = {"format": "bucketed_shards_v1", "buckets": {"b": {"shards": shards}}}
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        return folder
    if shape == "text_files":
        for k in range(n):
            (folder / f"{k}.txt").write_bytes(b"a fox\n")
        return folder
    if shape == "csv_columns":
        path = folder / "a.csv"
        path.write_text("prompt," + ",".join(f"c{k}" for k in range(n)) + "\n" + ("p" + "," * n + "\n") * 3)
        return path
    if shape == "parquet_groups":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "a.parquet"
        pq.write_table(pa.table({"Prompt": [f"a fox {k}" for k in range(n)]}), path, row_group_size=1)
        return path
    raise ValueError(shape)


def _members(shape: str, k: int) -> list[tuple[str, bytes]]:
    if shape == "tar_members":
        return [(f"m{k}.json", b"")]
    from benchmarks.ingest_bench import TINY_PNG

    record = {"width": 1, "height": 1, "short_caption": f"a fox {k}", "notes": "z" * (20 << 20)}
    return [(f"s{k}.png", TINY_PNG), (f"s{k}.json", json.dumps(record).encode())]


def measure(shape: str, path: Path) -> None:
    """In the child: run the code under test on `path` once (shape `baseline`: nothing, for the RSS of imports)."""
    if shape == "dedup_long":
        from scripts.dedup import read_lines
        from scripts.lib.dedup import signing
        from scripts.lib.params import Dedup, Runtime

        signing.sketch(read_lines(path), Dedup(), Runtime(workers=1))
    elif shape == "ingest_meta":
        from scripts.ingest import ingest
        from scripts.lib.params import Source

        cfg = Source(kind="dalle3", path=str(path), images=str(path), on_error="skip")
        report = ingest("s", cfg, path.parent / "out" / "s.parquet")
        assert report["skipped"].get("meta_too_large", 0) == report["rows_read"], report
    elif shape == "tar_members":
        from scripts.lib.archive import iter_samples, open_tar

        with open_tar(path / "data-000000.tar") as buf:
            sum(1 for _ in iter_samples(buf))
    elif shape == "manifest":
        from scripts.lib.readers.webdataset import manifest_shards

        manifest_shards(path)
    elif shape == "text_files":
        from scripts.lib.readers.base import source_files

        source_files(path, "*.txt", "text")
    elif shape == "csv_columns":
        from scripts.lib.readers.csv_sources import iter_csv

        sum(1 for _ in iter_csv(path, ["prompt"]))
    elif shape == "parquet_groups":
        from scripts.lib.readers.parquet_sources import iter_parquet

        sum(1 for _ in iter_parquet(path, ["Prompt"], 50_000))


def measure_shape(shape: str, path: Path) -> tuple[float, float]:
    """(seconds of the measured code, without the interpreter's start and imports; peak RSS in MiB) of one
    child process measuring `shape` on `path`."""
    run = run_child([sys.executable, __file__, "--child", shape, str(path)], cwd=ROOT, stderr_shown=True)
    if run.exit_code != 0:
        raise SystemExit(f"{shape}: the child failed (exit {run.exit_code})")
    return float(run.stdout.split()[-1]), run.peak_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hostile-shapes"))
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    add_out_argument(parser)
    args = parser.parse_args()
    if args.child:
        import scripts.lib.readers  # noqa: F401  # imports are not the shape's time

        started = time.perf_counter()
        measure(args.child[0], Path(args.child[1]))
        print(f"{time.perf_counter() - started:.4f}")
        return
    record(args.out)
    args.workdir.mkdir(parents=True, exist_ok=True)
    _, base = measure_shape("baseline", args.workdir)
    print(f"baseline RSS of a child that imports and measures nothing: {base:.0f} MiB (MiB below: above it)")
    print(
        f"{'shape':<16}{'sizes':>18}{'s small':>9}{'s large':>9}{'MiB small':>10}{'MiB large':>10}"
        f"{'x size':>8}{'x time':>8}{'x RSS':>7}"
    )
    for shape in args.shapes:
        small, large = (max(1, int(size * args.scale)) for size in SHAPES[shape])
        t_small, m_small = measure_shape(shape, build(shape, small, args.workdir / shape / "small"))
        t_large, m_large = measure_shape(shape, build(shape, large, args.workdir / shape / "large"))
        m_small, m_large = max(m_small - base, 1.0), max(m_large - base, 1.0)
        print(
            f"{shape:<16}{f'{small:,} -> {large:,}':>18}{t_small:>9.2f}{t_large:>9.2f}{m_small:>10.0f}{m_large:>10.0f}"
            f"{large / small:>8.1f}{t_large / t_small:>8.2f}{m_large / m_small:>7.2f}",
            flush=True,
        )
        shutil.rmtree(args.workdir / shape, ignore_errors=True)


if __name__ == "__main__":
    main()
