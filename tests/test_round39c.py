"""Round 39c: `simpletuner`'s memory and its stop by a signal (scripts/lib/readers/dalle3.py compile_simpletuner).

Memory: compile_simpletuner kept every name it wrote (the image, its `.txt`, its folders) in a dict to refuse a
second record of one name: linear, about 0.8 KB a record with the rest (227 MB at 100,000 records, round 38b).
The names are now in SQLite's private temporary file (readers.dalle3.WrittenNames); what a run holds in memory no
longer grows with the records (benchmarks/simpletuner_memory_bench.py measures peak RSS against the dict).

Signals: SIGINT or SIGTERM mid-run is one line, 130 or 143, no temp left, an earlier output untouched.
"""

from __future__ import annotations

import io
import json
import signal
import tarfile
import time
import tracemalloc

import pytest
from PIL import Image

from helpers.children import start_scripts
from scripts.lib.readers.dalle3 import compile_simpletuner

slow = pytest.mark.slow  # records by the thousand, and real children stopped mid-run


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder, records: int, per_shard: int, png: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, records, per_shard):
        with tarfile.open(folder / f"data-{first // per_shard:06d}.tar", "w") as tar:
            for n in range(first, min(first + per_shard, records)):
                meta = {
                    "image_name": f"f{n % 7}/image-{n:07d}.png",
                    "short_caption": f"cat {n}",
                    "width": 4,
                    "height": 4,
                }
                for name, data in ((f"{n:07d}.png", png), (f"{n:07d}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def traced_peak(root, records: int, outputs: dict) -> int:
    """Python's peak allocation (bytes) over one compile of `records` records in shards of 200."""
    write_shards(root / "in", records, 200, tiny_png())
    tracemalloc.start()
    try:
        compile_simpletuner(
            root / "in", root / "out.parquet", batch_rows=100, **{k: root / v for k, v in outputs.items()}
        )
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MEMORY = {  # case: the outputs besides the parquet
    "the parquet alone": {},
    "with --data-dir and its config": {"data_dir": "data", "config": "multidatabackend.json"},
    "with --txt-dir": {"write_txt_dir": "txt"},
}


@slow
@pytest.mark.parametrize("case", MEMORY)
def test_memory_does_not_grow_with_the_records(tmp_path, case):
    """Before: each record's names stayed in a dict (about 300 bytes a record traced); now the growth from
    600 to 2,400 records is noise: the parquet's row group (100 here) and one shard's keys are all it holds."""
    traced_peak(tmp_path / "warm", 10, MEMORY[case])  # its first imports are no part of either peak
    small = traced_peak(tmp_path / "small", 600, MEMORY[case])
    large = traced_peak(tmp_path / "large", 2400, MEMORY[case])
    assert (large - small) / 1800 < 60, (small, large)


def everything(root) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


STOPS = {  # case: (signal, exit status, outputs as argv, whether an earlier run's outputs are there)
    "SIGINT, a first --data-dir run": (signal.SIGINT, 130, ["out.parquet", "--data-dir", "data"], False),
    "SIGTERM, a first --data-dir run": (signal.SIGTERM, 143, ["out.parquet", "--data-dir", "data"], False),
    "SIGTERM over an earlier run's outputs": (signal.SIGTERM, 143, ["out.parquet", "--data-dir", "data"], True),
    "SIGINT, --txt-dir over an earlier run": (signal.SIGINT, 130, ["out.parquet", "--txt-dir", "txt"], True),
}


@slow
@pytest.mark.parametrize("case", STOPS)
def test_a_signal_mid_run_is_one_line_and_leaves_no_temp(tmp_path, case):
    signum, status, outputs, earlier = STOPS[case]
    png = tiny_png()
    write_shards(tmp_path / "in", 6000, 1000, png)
    if earlier:  # a finished run's outputs, from a shard of 3 records: they stay as they are, byte for byte
        write_shards(tmp_path / "old", 3, 3, png)
        done = start_scripts(tmp_path, "simpletuner", "old", *outputs)
        assert done.wait(60) == 0, done.communicate()
    before = everything(tmp_path)
    child = start_scripts(tmp_path, "simpletuner", "in", *outputs)
    deadline = time.monotonic() + 60
    while set(everything(tmp_path)) <= set(before) and time.monotonic() < deadline:  # its temps: under way
        time.sleep(0.05)
    time.sleep(0.3)
    assert child.poll() is None, "the run ended before the signal: make the shards larger"
    child.send_signal(signum)
    _stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == status, (child.returncode, stderr)
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert everything(tmp_path) == before  # no temp left, nothing half-written, the earlier outputs untouched


@pytest.mark.parametrize("call", ["get", "setdefault", "contains"])
def test_a_failing_name_index_is_one_line(call):
    """SQLite failing under the index (here: closed under it; on a machine, a full temp folder past its 2 MiB
    cache) is a DataError, one line, not sqlite3's traceback (lead's review of round 39c)."""
    from scripts.lib.errors import DataError
    from scripts.lib.readers.dalle3 import WrittenNames

    names = WrittenNames()
    names.setdefault("a.png", "a.png")
    names.close()
    actions = {
        "get": lambda: names.get("a.png"),
        "setdefault": lambda: names.setdefault("b", "b"),
        "contains": lambda: "a.png" in names,
    }
    with pytest.raises(DataError, match="index of written names") as raised:
        actions[call]()
    assert "\n" not in str(raised.value)
