"""Round 42d: a release table read whole, or in batches counted in rows, holds memory in proportion to the file.

`diff` read a release's rows.parquet as its bytes, then every column in Arrow and pandas; `publish` read every
column; `plots` (round 41b) read 4,096 rows a batch, 400 MB of 100 KB captions, and 4,096 metadata.jsonl lines a
batch. All three now read through tables.byte_batches (batches of about tables.BATCH_BYTES decoded bytes; a row
group's rows per batch from its metadata and a decoded probe, so a dictionary-encoded caption repeated on every
row counts at its decoded size), diff and publish only the columns they use (tables.read_columns). Default
tier: the bytes of one batch, on real parquet and jsonl files. Slow tier: each tool's peak RSS in a child process,
and guards that the outputs are those a whole read gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
BATCH_LIMIT = 24 * MB  # a batch's caption bytes, at most (BATCH_BYTES is 16 MB; a whole-read batch was 40 MB here)


def write_rows(
    path: Path, rows: int, chars: int, same: bool = False, group: int = 100_000, image: str = "images/{}.png"
) -> Path:
    """A release's rows.parquet: `rows` captions of `chars` characters (one repeated caption when `same`: one
    dictionary entry on disk), and an orig_text column of the same size that diff never uses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [f"r{i}" for i in range(rows)]
    texts = ["x" * chars] * rows if same else [f"{i} ".ljust(chars, "x") for i in ids]
    table = pa.table(
        {
            "id": ids,
            "source": ["a" if i % 3 else "b" for i in range(rows)],
            "split": ["validation" if i % 10 == 0 else "train" for i in range(rows)],
            "text": texts,
            "orig_text": texts,
            "image": [image.format(i) for i in ids],
        }
    )
    pq.write_table(table, path, compression="zstd", row_group_size=group)
    return path


def write_metadata(folder: Path, rows: int, chars: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (
        json.dumps({"id": f"r{i}", "source": "a", "text": "x" * chars, "file_name": f"{i}.png"}) for i in range(rows)
    )
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def plots_parquet_batches(tmp: Path, same: bool) -> list[int]:
    from scripts import plots

    path = write_rows(tmp / "r" / "rows.parquet", 1000, 40_000, same=same)
    return [sum(map(len, texts)) for _, _, texts in plots.parquet_batches(path, lengths=False)]


def plots_metadata_batches(tmp: Path, same: bool) -> list[int]:
    from scripts import plots

    folder = write_metadata(tmp / "r" / "train", 1000, 40_000)
    return [sum(map(len, texts)) for _, texts in plots.metadata_batches(folder, "")]


BATCH_ROWS = [  # (read: tmp -> caption characters of each batch, same caption on every row)
    pytest.param(plots_parquet_batches, False, id="plots-parquet-distinct-40KB-captions", marks=pytest.mark.slow),
    pytest.param(
        plots_parquet_batches, True, id="plots-parquet-one-40KB-caption-dictionary-encoded", marks=pytest.mark.slow
    ),
    pytest.param(plots_metadata_batches, False, id="plots-metadata-jsonl-40KB-captions"),
]


@pytest.mark.parametrize("read,same", BATCH_ROWS)
def test_a_batch_is_bounded_in_bytes(tmp_path, read, same):
    sizes = read(tmp_path, same)
    assert sum(sizes) == 1000 * 40_000  # every row read once
    assert max(sizes) <= BATCH_LIMIT, f"a batch of {max(sizes) / MB:.0f} MB of captions"


# --- slow tier: each tool's peak RSS in a child, and its outputs against a whole read ---------------------

CHILD = """
import resource, sys
from pathlib import Path
from types import SimpleNamespace
root, tool = Path(sys.argv[1]), sys.argv[2]
from scripts import plots
from scripts.tools import diff, publish
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
folder = root / "data" / "releases" / "r"
if tool == "plots":
    plots.caption_counts(folder.parent, ["r"])
elif tool == "diff":  # the workspace's release, as open_fs's filesystem reads it (workspace_file)
    diff.read_snapshot(SimpleNamespace(t2i_root=root, t2i_commit=None), "WORKSPACE", "r")
else:
    publish.read_split(folder, "train")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) // 1024)
"""
CAPTIONS = 2000 * 100_000  # bytes of the slow rows' captions: 2,000 of 100 KB


def peak_growth_mb(folder: Path, tool: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), tool], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


MEMORY_ROWS = [  # (id, tool, MB its read may add to the peak, at most)
    (
        "guard-diff-reads-its-columns-in-batches",
        "diff",
        3 * CAPTIONS // MB,
    ),  # whole: the file, 2 columns x Arrow+pandas
    ("guard-publish-reads-its-columns-in-batches", "publish", 3 * CAPTIONS // MB),
    ("guard-plots-counts-in-byte-batches", "plots", 100),  # 2,000 rows were one 4,096-row batch: 200 MB of captions
]


@pytest.mark.slow
@pytest.mark.parametrize("tool,bound_mb", [r[1:] for r in MEMORY_ROWS], ids=[r[0] for r in MEMORY_ROWS])
def test_peak_memory_of_a_release_read(tmp_path, tool, bound_mb):
    folder = tmp_path / "data" / "releases" / "r"
    write_rows(folder / "rows.parquet", 2000, 100_000, group=500, image="part.tar!/{}.png")
    (folder / "part.tar").write_bytes(b"")
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "reason": pa.array([], pa.string())}), folder / "removed.parquet"
    )  # images in an archive: read neither by diff nor by read_split
    grew = peak_growth_mb(tmp_path, tool)
    assert grew <= bound_mb, f"{tool}: the read added {grew} MB to the peak (bound {bound_mb} MB)"
