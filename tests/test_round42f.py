"""Round 42f: `simpletuner`'s parquet row group held in memory (scripts/lib/simpletuner.py table_writer, over
scripts/lib/tables.py ParquetRows).

Class: a streamed parquet writer whose buffer is bounded in rows only. compile_simpletuner held 50,000 rows as
Python lists before writing a row group: peak RSS of the CLI grew about 1 KB a record up to 50,000 short-caption
records (+48 MiB, flat past it: benchmarks/simpletuner_memory_bench.py), and 50,000 rows of 64 KB captions (the
cap) were 3 GB. Now a row group is written at 8,192 rows or 8 MiB of text, whichever comes first. Guards: the
repo's sample shard compiles to the same bytes as the 50,000-row writer wrote, its `.txt` captions as before.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers.children import scripts_env
from helpers.repos import REPO
from scripts.lib.readers.dalle3 import compile_simpletuner
from scripts.lib.simpletuner import _schema
from scripts.lib.tables import ParquetRows

slow = pytest.mark.slow  # records by the ten thousand, children measured one at a time
SAMPLE = REPO / "data" / "raw" / "dalle3" / "data-000000.tar"


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder, records: int, caption_chars: int = 0, per_shard: int = 1000) -> None:
    """Shards of `per_shard` records: a 4x4 PNG and its json, the caption `cat N` padded to `caption_chars`."""
    png = tiny_png()
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, max(records, 1), per_shard):
        with tarfile.open(folder / f"data-{first // per_shard:06d}.tar", "w") as tar:
            for n in range(first, min(first + per_shard, records)):
                caption = f"cat {n} ".ljust(caption_chars, "x")
                meta = {"image_name": f"f{n % 7}/image-{n:07d}.png", "short_caption": caption, "width": 4, "height": 4}
                for name, data in ((f"{n:07d}.png", png), (f"{n:07d}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def peak_rss_mib(root, shards: str) -> float:
    """Peak RSS of `python -m scripts simpletuner` in a child of its own (os.wait4's rusage: KiB on Linux)."""
    argv = [sys.executable, "-m", "scripts", "simpletuner", shards, f"{shards}.parquet"]
    child = subprocess.Popen(argv, cwd=root, env=scripts_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, child.stderr.read() if child.stderr else status
    return usage.ru_maxrss / 1024


MEMORY = {  # case: (records, caption characters, most MiB of peak RSS over a 0-record run)
    # guard: passed before too through the CLI (the bench's in-process child measured +42 MiB before, +15 after)
    "guard: 50,000 short captions": (50_000, 0, 25),
    # before: 3,000 rows of 20 KB captions (60 MB) held whole, twice over at the flush; after: 8 MiB at a time
    "3,000 captions of 20 KB": (3_000, 20_000, 40),
    # before: 12,000 rows of 2 KB captions (24 MB) held; after: 8 MiB of text or 8,192 rows
    "12,000 captions of 2 KB": (12_000, 2_000, 30),
}


@slow
@pytest.mark.parametrize("case", MEMORY)
def test_peak_memory_is_bounded_by_the_row_group(tmp_path, case):
    records, chars, most = MEMORY[case]
    write_shards(tmp_path / "empty", 0)
    write_shards(tmp_path / "many", records, chars)
    growth = peak_rss_mib(tmp_path, "many") - peak_rss_mib(tmp_path, "empty")
    assert growth < most, f"{growth:.1f} MiB over a 0-record run"


def row_group_sizes(path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


ROW_GROUPS = {  # case: (records, caption characters, the row groups' sizes)
    "300 captions of 40 KB: 8 MiB of text a group": (300, 40_000, [210, 90]),
    "400 captions of 60 KB: 8 MiB of text a group": (400, 60_000, [140, 140, 120]),
}


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=[slow] if "60 KB" in case else []) for case in ROW_GROUPS]
)  # 24 MB of captions: the slow tier
def test_a_row_group_holds_at_most_8_mib_of_text(tmp_path, case):
    records, chars, sizes = ROW_GROUPS[case]
    write_shards(tmp_path / "in", records, chars)
    stats = compile_simpletuner(tmp_path / "in", tmp_path / "out.parquet", on_error="fail")
    assert stats["rows_written"] == records
    assert row_group_sizes(tmp_path / "out.parquet") == sizes


@slow
def test_a_row_group_holds_at_most_8192_rows(tmp_path):
    write_shards(tmp_path / "in", 9000)
    compile_simpletuner(tmp_path / "in", tmp_path / "out.parquet", on_error="fail")
    assert row_group_sizes(tmp_path / "out.parquet") == [8192, 808]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("caption").to_pylist() == [f"cat {n} " for n in range(9000)]


def old_writer_bytes(table, path) -> bytes:
    """The same rows as the writer before round 42f wrote them: one row group of up to 50,000 rows."""
    with ParquetRows(path, _schema(), 50_000) as writer:
        for row in table.to_pylist():
            writer.add(*row.values())
    return path.read_bytes()


@pytest.mark.parametrize("outputs", ["guard: parquet alone", "guard: --data-dir", "guard: --txt-dir"])
def test_the_sample_shard_compiles_to_the_same_bytes(tmp_path, outputs):
    folder = {"guard: --data-dir": "data_dir", "guard: --txt-dir": "write_txt_dir"}.get(outputs)
    compile_simpletuner([SAMPLE], tmp_path / "out.parquet", **({folder: tmp_path / "captions"} if folder else {}))
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows > 0
    assert (tmp_path / "out.parquet").read_bytes() == old_writer_bytes(table, tmp_path / "old.parquet")
    if folder:
        for caption, filename in zip(table.column("caption").to_pylist(), table.column("filename").to_pylist()):
            stem = filename.rsplit(".", 1)[0]
            assert (tmp_path / "captions" / f"{stem}.txt").read_bytes() == caption.encode("utf-8")
