"""Peak memory of reading a release's rows.parquet whole (before round 42d) or in byte-bounded batches.

    python benchmarks/release_tables_bench.py [--rows 1000000] [--chars 200] [--out FILE]

Round 42d: `diff` and `publish` read rows.parquet whole (diff: the file's bytes, then every column in Arrow and
pandas; publish: every column through tables.read_parquet), and `plots` read it 4,096 rows at a time (4,096
captions of 100 KB: a 400 MB batch). All three now read through tables.byte_batches (batches of about
tables.BATCH_BYTES decoded bytes; diff and publish keep only the columns they use). This writes one release of
N rows of distinct C-character captions (run it with the defaults, then with --rows 10000 --chars 100000),
then reads it as each tool did and does, each in a fresh child (peak RSS is a high-water mark: one process
cannot measure two runs; each child's peak is os.wait4's rusage), and prints whole / batches per tool.
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
import io, sys
from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
tool, mode, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
path = folder / "rows.parquet"
if tool == "plots" and mode == "whole":  # before round 41b: every row's text in pandas
    from scripts import plots
    from scripts.lib.tables import read_parquet
    table = read_parquet(path)
    rows = pd.DataFrame({"release": "r", "split": table["split"], "source": table["source"],
                         "text": table["text"].fillna("")})
    print(plots.prompt_lengths(rows, 8)["rows"].sum())
elif tool == "plots":  # as shipped: caption lengths counted batch by batch
    from scripts import plots
    print(plots.prompt_lengths(plots.caption_counts(folder.parent, [folder.name]), 8)["rows"].sum())
elif tool == "diff" and mode == "whole":  # read_snapshot before round 42d
    with open(path, "rb") as f:
        table = pd.read_parquet(io.BytesIO(f.read()))
    print(len(table[["id", "source", "split", "text"]]))
elif tool == "diff":
    from scripts.lib.tables import read_columns
    from scripts.tools import diff
    with open(path, "rb") as f:
        table = read_columns(pq.ParquetFile(f, pre_buffer=False), str(path), diff.ROW_COLUMNS)
    print(len(table[["id", "source", "split", "text"]]))
else:  # publish: read_split's table, and the records of its train split it keeps
    from scripts.lib.export import TABLE_COLUMNS
    from scripts.lib.tables import read_parquet
    from scripts.lib.export import read_rows_table
    columns = [*TABLE_COLUMNS, "split", "image", "image_nbytes", "image_sha256"]
    table = read_parquet(path) if mode == "whole" else read_rows_table(folder, columns)
    print(len(table[table["split"] == "train"].to_dict("records")))
"""
GROUP_ROWS = 100_000  # rows a row group (and a write) of the generated release, at most
TOOLS = ("diff", "publish", "plots")


def write_release(folder: Path, rows: int, chars: int) -> Path:
    """folder/rows.parquet: `rows` rows of distinct `chars`-character captions (zstd: a small file) and an
    `orig_text` of the same size (a column diff never uses), sources a and b, splits train and validation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    names = ("id", "source", "split", "text", "orig_text", "image")
    schema = pa.schema([(name, pa.large_string()) for name in names])
    group = max(1, min(GROUP_ROWS, (64 << 20) // max(chars, 1)))  # a row group of about 64 MB of captions
    with pq.ParquetWriter(folder / "rows.parquet", schema, compression="zstd") as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            ids = [f"r{start + i}" for i in range(n)]
            texts = [f"{i} " + "x" * max(chars - 8, 0) for i in ids]
            columns = {
                "id": ids,
                "source": ["a" if i % 3 else "b" for i in range(n)],
                "split": ["validation" if i % 10 == 0 else "train" for i in range(n)],
                "text": texts,
                "orig_text": texts,
                "image": [f"images/{i}.png" for i in ids],
            }
            writer.write_table(pa.table(columns, schema=schema))
    return folder / "rows.parquet"


def measure(tool: str, mode: str, folder: Path) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, the child's output) of one read in a fresh child."""
    run = run_child([sys.executable, "-c", CHILD, tool, mode, str(folder)])
    return run.peak_mib, run.seconds, said(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chars", type=int, default=200)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_release(Path(tmp) / "r", args.rows, args.chars)
        print(f"release: {args.rows:,} rows of {args.chars:,}-character captions, {path.stat().st_size:,} bytes")
        for tool in TOOLS:
            peaks = {}
            for mode in ("whole", "batches"):
                peaks[mode], seconds, out = measure(tool, mode, path.parent)
                print(f"{tool:8s} {mode:8s} peak RSS {peaks[mode]:8.1f} MB  {seconds:6.2f} s  read {out}")
            print(f"{tool:8s} peak RSS whole / batches: {peaks['whole'] / peaks['batches']:.2f}x")


if __name__ == "__main__":
    main()
