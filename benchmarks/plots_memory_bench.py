"""Peak memory and time of plots' caption lengths: rows.parquet read whole (before round 41b) or batch by batch.

    python benchmarks/plots_memory_bench.py [--rows 1000000] [--chars 200] [--out FILE]

Round 40a found `plots` read each release's rows.parquet whole into pandas (export.read_rows_table, then
check_cells over the whole text column) to count each caption's length: a 670 KB file of 10^5 identical
10,000-character captions took 3.1 GB and 40 s. This writes one release of N rows of C-character captions (run it
with the defaults, then with --rows 100000 --chars 10000), then counts it twice, each in a fresh child process
(peak RSS is a high-water mark: one process cannot measure two runs): the whole-table read as it was, and
plots.caption_counts as shipped. Each child's peak comes from os.wait4's rusage; the ratio is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._peak_rss import run_child, said
from benchmarks._record import add_out_argument, record

CHILD = """
import sys
from pathlib import Path
import pandas as pd
from scripts import plots
releases = Path(sys.argv[2])
if sys.argv[1] == "whole":  # before round 41b: every row's text in pandas (read_release_rows as it was)
    from scripts.lib.tables import check_cells, read_parquet
    table = read_parquet(releases / "r" / "rows.parquet")  # export.read_rows_table as it was
    check_cells(table, releases / "r" / "rows.parquet", plots.ROW_TEXT, present=("split", "source"))
    rows = pd.DataFrame({"release": "r", "split": table["split"], "source": table["source"],
                         "text": table["text"].fillna("")})
else:
    rows = plots.caption_counts(releases, ["r"])
print(plots.prompt_lengths(rows, 8)["rows"].sum())
"""
GROUP_ROWS = 10_000  # rows a row group (and a write) of the generated release


def write_release(folder: Path, rows: int, chars: int) -> Path:
    """folder/rows.parquet: `rows` rows of one `chars`-character caption (dictionary-encoded: a small file),
    sources a and b, splits train and validation, in row groups of GROUP_ROWS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(name, pa.large_string()) for name in ("id", "source", "split", "text", "image")])
    with pq.ParquetWriter(folder / "rows.parquet", schema, compression="zstd") as writer:
        for start in range(0, rows, GROUP_ROWS):
            n = min(GROUP_ROWS, rows - start)
            ids = [f"r{start + i}" for i in range(n)]
            columns = {
                "id": ids,
                "source": ["a" if i % 3 else "b" for i in range(n)],
                "split": ["validation" if i % 10 == 0 else "train" for i in range(n)],
                "text": pa.array(["x" * chars], pa.large_string()).take([0] * n),
                "image": ids,
            }
            writer.write_table(pa.table(columns, schema=schema))
    return folder / "rows.parquet"


def measure(mode: str, releases: Path) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, the child's output) of one count in a fresh child."""
    run = run_child([sys.executable, "-c", CHILD, mode, str(releases)])
    return run.peak_mib, run.seconds, said(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chars", type=int, default=200)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        releases = Path(tmp)
        path = write_release(releases / "r", args.rows, args.chars)
        print(f"release: {args.rows:,} rows of {args.chars:,}-character captions, {path.stat().st_size:,} bytes")
        peaks = {}
        for mode in ("whole", "batches"):
            peaks[mode], seconds, out = measure(mode, releases)
            print(f"{mode:8s} peak RSS {peaks[mode]:8.1f} MB  {seconds:6.2f} s  counted {out}")
        ratio = peaks["whole"] / peaks["batches"]
        print(f"peak RSS whole / batches: {ratio:.1f}x")


if __name__ == "__main__":
    main()
