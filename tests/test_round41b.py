"""Round 41b: plots counts caption lengths batch by batch (round 40a's finding; users work at 1M-1B prompts).

1. plots read each release's rows.parquet whole into pandas (export.read_rows_table, then check_cells over the
   whole text column) though it plots only each caption's length per split and source: a 670 KB file of 10^5
   identical 10,000-character captions took 3.1 GB and 40 s, and under a 600 MB address-space limit it died. It
   now reads the file a batch at a time (plots.BATCH_ROWS rows: pyarrow.compute.utf8_length on the text column,
   counts added up), and an old release's metadata.jsonl line by line (10^5 lines of 2 KB took 0.94 GB): the
   CSVs are byte for byte those of the whole read.
2. Guards: every batch is checked by the rules the whole table was (utf8_checked on every column, check_cells on
   split, source and text), so a bad cell past the first batch is refused with its row in the file.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.limits import run_limited
from helpers.workspace import error_line
from scripts.lib.io import SPLITS
from scripts.lib.tables import write_parquet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.plots_memory_bench import write_release

ARGV = ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"]
ADDRESS_SPACE = (
    800 << 20
)  # the child's RLIMIT_AS (plots of 3 rows needs 400-600 MB): a 1 GB text column read whole cannot fit


def _workspace(root: Path) -> Path:
    """params.yaml naming release r and source s, s's clean report and clusters; r's folder, empty."""
    import pandas as pd

    (root / "data" / "clean").mkdir(parents=True)
    (root / "data" / "clean" / "s.report.json").write_text('{"dropped_by_reason": {"empty": 1}}', encoding="utf-8")
    write_parquet(
        pd.DataFrame({"id": ["a"], "duplicate_of": ["k"], "jaccard": [0.9]}),
        root / "data" / "dedup" / "s.clusters.parquet",
    )
    params = {
        "sources": {"s": {"kind": "text", "path": "x"}},
        "releases": {"r": {"components": [{"source": "s"}]}},
        "preview": {"length_bin": 1000},
        "dedup": {"threshold": 0.7},
    }
    (root / "params.yaml").write_text(json.dumps(params), encoding="utf-8")
    (root / "data" / "releases" / "r").mkdir(parents=True)
    return root / "data" / "releases" / "r"


# ---------------------------------------------------------------- 1. a large release, in bounded memory


def _metadata(release: Path, rows: int, chars: int) -> None:
    """An old release (no rows.parquet): train/metadata.jsonl of `rows` lines of `chars`-character captions."""
    (release / "validation").mkdir()
    (release / "validation" / "metadata.jsonl").write_bytes(b"")
    (release / "train").mkdir()
    line = json.dumps({"file_name": "x.jpg", "source": "a", "text": "x" * chars}) + "\n"
    with open(release / "train" / "metadata.jsonl", "w", encoding="utf-8") as out:
        for start in range(0, rows, 1000):
            out.write(line * min(1000, rows - start))


LARGE = {  # case: (writes the release, rows, caption length)
    "10^5 captions of 10,000 characters": (write_release, 100_000, 10_000),
    "2x10^5 captions of 5,000 characters": (write_release, 200_000, 5_000),
    "an old release's metadata.jsonl, 3x10^5 lines of 2 KB": (_metadata, 300_000, 2_000),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", LARGE)
def test_plots_counts_a_large_release_in_800_mb_of_address_space(tmp_path, case):
    write, rows, chars = LARGE[case]
    write(_workspace(tmp_path), rows, chars)
    done = run_limited(ARGV, tmp_path, resource.RLIMIT_AS, ADDRESS_SPACE, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lengths = (tmp_path / "data" / "plots" / "prompt_lengths.csv").read_text(encoding="utf-8").splitlines()
    assert lengths[0] == "release,split,chars,rows" and f"r,train,{chars // 1000 * 1000}," in "\n".join(lengths)
    counted = sum(int(line.rsplit(",", 1)[1]) for line in lengths[1:])
    assert counted == rows
    mix = (tmp_path / "data" / "plots" / "source_mix.csv").read_text(encoding="utf-8")
    assert sum(int(line.split(",")[3]) for line in mix.splitlines()[1:]) == rows


# ---------------------------------------------------------------- 2. a bad cell past the first batch

ROWS = 10_000  # over two batches (BATCH_ROWS 4096) and two row groups
BAD = 9_001  # the file's row (1-based) holding the bad cell


def _column(kind, value, default):
    """ROWS cells of `default`, `value` at row BAD."""
    values = [default] * ROWS
    values[BAD - 1] = value
    return pa.array(values, kind)


def _not_utf8(valid: str) -> pa.Array:
    """ROWS texts `valid`, row BAD the bytes \\xff\\xfe (a string column pyarrow reads unchecked)."""
    return _column(pa.binary(), b"\xff\xfe", valid.encode()).view(pa.string())


BAD_CELLS = {  # case: (column, its cells, what the one line says)
    "a null source": ("source", lambda: _column(pa.string(), None, "a"), f"row {BAD}: column 'source' is missing"),
    "a list caption": (
        "text",
        lambda: _column(pa.list_(pa.string()), ["x"], None),
        f"row {BAD}: column 'text' holds a list",
    ),
    "a number caption (a float in pandas, as read whole)": (
        "text",
        lambda: _column(pa.int64(), 5, None),
        f"row {BAD}: column 'text' holds float 5.0, not text",
    ),
    "a null split": ("split", lambda: _column(pa.string(), None, "train"), f"row {BAD}: column 'split' is missing"),
    "an id not UTF-8": (
        "id",
        lambda: _not_utf8("i"),
        f"column 'id' holds invalid data, such as text that is not UTF-8, first in row {BAD}",
    ),
    "a caption not UTF-8": (
        "text",
        lambda: _not_utf8("t"),
        f"column 'text' holds invalid data, such as text that is not UTF-8, first in row {BAD}",
    ),
}


@pytest.mark.parametrize("case", BAD_CELLS)
def test_plots_refuses_a_bad_cell_past_the_first_batch_naming_its_row(tmp_path, monkeypatch, capfd, case):
    column, cells, said = BAD_CELLS[case]
    release = _workspace(tmp_path)
    columns = {name: pa.array(["a"] * ROWS, pa.string()) for name in ("id", "source", "text", "image")}
    columns["split"] = pa.array(["train"] * ROWS, pa.string())
    pq.write_table(pa.table({**columns, column: cells()}), release / "rows.parquet", row_group_size=5_000)
    done = cli(ARGV, tmp_path, monkeypatch, capfd)
    assert done.returncode == 2 and f"data/releases/r/rows.parquet: {said}" in error_line(done.stderr), done.stderr
    assert not (tmp_path / "data" / "plots").exists()


LINES = 10_000


BAD_LINES = {  # case: (the bytes of line BAD, what the one line says)
    "a line that is no JSON": (b"{not json\n", f"line {BAD}: not a metadata record with source, text"),
    "a record without its text": (b'{"source": "a"}\n', f"line {BAD}: not a metadata record with source, text"),
    "a list for a record": (b"[1, 2]\n", f"line {BAD}: not a metadata record with source, text"),
    "bytes not UTF-8": (b'{"source": "a", "text": "\xff"}\n', "not UTF-8 text"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_plots_refuses_a_bad_metadata_line_past_the_first_batch_naming_it(tmp_path, monkeypatch, capfd, case):
    line, said = BAD_LINES[case]
    release = _workspace(tmp_path)
    (release / "train").mkdir()
    good = b'{"file_name": "x.jpg", "source": "a", "text": "xyz"}\n'
    (release / "train" / "metadata.jsonl").write_bytes(good * (BAD - 1) + line + good * (LINES - BAD))
    done = cli(ARGV, tmp_path, monkeypatch, capfd)
    assert done.returncode == 2 and said in error_line(done.stderr), done.stderr
    if case == "bytes not UTF-8":  # the byte counted in the file, as the whole decode counted it
        at = len(good) * (BAD - 1) + line.index(b"\xff")
        assert f"byte {at}: not UTF-8 text" in error_line(done.stderr)
    assert not (tmp_path / "data" / "plots").exists()


# ---------------------------------------------------------------- 3. the counts are those of the whole read


@pytest.mark.parametrize("bin_width", [1, 7, 1000])
def test_counts_batch_by_batch_give_the_tables_of_rows_read_whole(tmp_path, bin_width):
    """Splits (one outside SPLITS) and sources interleaved over three batches, missing captions: the CSVs from
    caption_counts are those of the rows read whole and grouped in their order (as plots did before)."""
    import pandas as pd

    from scripts import plots

    n = 10_000
    rows = pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(n)],
            "source": [("b", "a", "c")[i % 3 if i > 5000 else i % 2] for i in range(n)],
            "split": [("extra", "validation", "train")[i % 3] for i in range(n)],
            "text": [None if i % 11 == 0 else "x" * (i % 97) for i in range(n)],
            "image": "x.jpg",
        }
    )
    (tmp_path / "r").mkdir()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), tmp_path / "r" / "rows.parquet")
    order = {split: k for k, split in enumerate(SPLITS)}  # any other split last, in file order
    whole = rows.sort_values("split", key=lambda s: s.map(order), kind="stable").assign(release="r")
    whole["text"] = whole["text"].fillna("")
    counts = plots.caption_counts(tmp_path, ["r"])
    for table in (plots.prompt_lengths, plots.source_mix):
        expected = table(whole, bin_width) if table is plots.prompt_lengths else table(whole)
        got = table(counts, bin_width) if table is plots.prompt_lengths else table(counts)
        assert got.to_csv(index=False) == expected.to_csv(index=False)
