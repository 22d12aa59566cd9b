"""Round 45b: two ingest holes of issue #24's classes, on real parquet, zips, text files and subprocesses.

1. "One line and exit 2" for a repeated native key: a DiffusionDB `image_name` twice in metadata.parquet (or in
   two part zips) printed a success summary (`ingest@s: 2 records in 0.0 s`) and then
   `sources.s: 1 records repeat a native key (e.g. id 7657a75ecba23688)`, a 64-bit hash no user can map back,
   and `on_error: skip` stopped on it too. Now it is one line, before any summary, naming the file and row (or
   zip entry) of the repeat and of the first record, and the key escaped (scripts/lib/readers/native_keys.py);
   `on_error: skip` keeps the first record and counts each later one as `duplicate_key`, as an archive's
   repeated name already was.
2. A source file that grew or was rewritten while ingest read it was taken as whatever the reader caught, at
   exit 0, and dvc.lock then held an md5 of another content. Every file under the source's path is stat'ed
   (device, inode, size, mtime) before the read and after its last record (scripts/lib/side_files.py, which
   dedup's input check of round 18 now uses too): one line naming the file, nothing written.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.workspace import PARAMS, ingest_source, leftovers, run_scripts, write_files, write_params
from scripts.lib.errors import DataError

# ---------------------------------------------------------------- sources on real files


def metadata(names: list[str], prompts: list[str] | None = None) -> bytes:
    """A DiffusionDB metadata.parquet of one row per image name (a row group of 2 rows at most)."""
    n = len(names)

    def same(kind, value):
        return pa.array([value] * n, kind)

    table = pa.table(
        {
            "image_name": names,
            "prompt": prompts or [f"prompt {i}" for i in range(n)],
            "part_id": same(pa.uint16(), 1),
            "seed": same(pa.uint32(), 1),
            "step": same(pa.uint16(), 1),
            "sampler": same(pa.uint8(), 1),
            "width": same(pa.uint16(), 512),
            "height": same(pa.uint16(), 512),
            "user_name": ["u"] * n,
            "image_nsfw": same(pa.float32(), 0.1),
            "prompt_nsfw": same(pa.float32(), 0.1),
            "timestamp": pa.array([None] * n, pa.timestamp("us")),
            "cfg": same(pa.float32(), 1.0),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    return buf.getvalue()


def png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buf, "PNG")
    return buf.getvalue()


def part_zip(number: int, names: list[str]) -> bytes:
    """A DiffusionDB part-NNNNNN.zip holding `names` (PNGs) and its listing."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"part-{number:06d}.json", json.dumps({name: {"p": f"p {name}"} for name in names}))
        for name in names:
            zf.writestr(name, png())
    return buf.getvalue()


METADATA = {"kind": "diffusiondb", "read": "metadata"}
PARTS = {"kind": "diffusiondb", "read": "parts"}


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# ---------------------------------------------------------------- 1. a repeated native key: one line
FAIL_CASES = {
    "metadata_rows_1_and_3": (
        METADATA,
        {"metadata.parquet": metadata(["a.png", "b.png", "a.png"])},
        ["data/raw/s/metadata.parquet: row 3: native key 'a.png' repeats that of data/raw/s/metadata.parquet: row 1"],
    ),
    "metadata_key_escaped": (
        METADATA,
        {"metadata.parquet": metadata(["x\x1b[31m.png", "x\x1b[31m.png"])},
        ["row 2: native key 'x\\x1b[31m.png' repeats", ": row 1"],
    ),
    "across_part_zips": (
        PARTS,
        {"part-000001.zip": part_zip(1, ["a.png", "b.png"]), "part-000002.zip": part_zip(2, ["c.png", "a.png"])},
        ["part-000002.zip: member part-000002.json: entry 'a.png': native key 'a.png' repeats", "part-000001.zip"],
    ),
    "many_repeats_counted": (
        METADATA,
        {"metadata.parquet": metadata(["a.png", "b.png", "a.png", "b.png", "a.png"])},
        ["row 3: native key 'a.png'", "(3 records repeat a key in all)"],
    ),
}


@pytest.mark.parametrize("case", FAIL_CASES)
def test_repeated_key_is_one_line_before_any_summary(case, tmp_path, monkeypatch, capfd):
    source, files, said = FAIL_CASES[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**source, "on_error": "fail"}, files)
    lines = stderr_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr  # no `ingest@s: N records` before it
    assert lines[0].startswith("error: ") and all(part in lines[0] for part in said), lines[0]
    assert "Traceback" not in result.stderr and rows is None and not leftovers(tmp_path)


SKIP_CASES = {
    "metadata_later_rows_dropped": (
        METADATA,
        {"metadata.parquet": metadata(["a.png", "b.png", "a.png", "c.png", "b.png"], list("ABCDE"))},
        ["A", "B", "D"],
        2,
    ),
    "across_row_groups": (  # rows 1..7 in row groups of 2: the drops fall in three of them
        {**METADATA, "batch_rows": 2},
        {"metadata.parquet": metadata(["k1", "k2", "k1", "k3", "k1", "k2", "k4"], list("ABCDEFG"))},
        ["A", "B", "D", "G"],
        3,
    ),
    "across_part_zips": (
        PARTS,
        {"part-000001.zip": part_zip(1, ["a.png", "b.png"]), "part-000002.zip": part_zip(2, ["a.png", "c.png"])},
        ["p a.png", "p b.png", "p c.png"],
        1,
    ),
}


@pytest.mark.parametrize("case", SKIP_CASES)
def test_repeated_key_skipped_keeps_the_first(case, tmp_path, monkeypatch, capfd):
    source, files, prompts, dropped = SKIP_CASES[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**source, "on_error": "skip"}, files)
    assert result.returncode == 0, result.stderr
    assert [row["prompt"] for row in rows] == prompts
    report = json.loads((tmp_path / "data" / "prompts" / "s.report.json").read_text())
    assert report["skipped"] == {"duplicate_key": dropped}
    assert report["rows_written"] == len(prompts) and report["rows_read"] == len(prompts) + dropped
    assert not leftovers(tmp_path)


def test_guard_unique_keys_untouched(tmp_path, monkeypatch, capfd):
    files = {"metadata.parquet": metadata(["a.png", "b.png"])}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**METADATA, "on_error": "skip"}, files)
    assert result.returncode == 0 and [row["prompt"] for row in rows] == ["prompt 0", "prompt 1"]


def test_later_repeats_is_sorted_and_keeps_the_first():
    from array import array

    from scripts.lib.readers.native_keys import later_repeats

    ids = array("Q", [7, 3, 7, 9, 3, 7, 1 << 63])
    assert later_repeats(ids).tolist() == [2, 4, 5]
    assert later_repeats(array("Q")).tolist() == []


@pytest.mark.slow
def test_repeated_key_subprocess_one_line(tmp_path):
    """The probe's repro as a user runs it: `python -m scripts ingest` prints one line, exit 2."""
    write_files(tmp_path / "data" / "raw" / "hdb", {"metadata.parquet": metadata(["a.png", "a.png"])})
    write_params(tmp_path, sources={**PARAMS["sources"], "hdb": {"path": "data/raw/hdb", **METADATA}})
    done = run_scripts(tmp_path, "ingest", "hdb", "data/prompts/hdb.parquet")
    lines = stderr_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "metadata.parquet: row 2: native key 'a.png' repeats that of" in lines[0]
    assert not (tmp_path / "data" / "prompts").exists()


# ---------------------------------------------------------------- 2. a source file changed while it was read
def appended_after_first_record(monkeypatch, kind: str, target: str) -> None:
    """The real reader of `kind`, with `target` (under the source) appended to once its first record is out:
    a writer racing the read, made deterministic."""
    from scripts.lib import readers

    real = readers.READERS[kind]

    def racing(cfg, info):
        for number, item in enumerate(real(cfg, info)):
            if number == 1:
                with open(Path(cfg.path) / target, "ab") as file:
                    file.write(b"written during the read\n")
            yield item

    monkeypatch.setitem(readers.READERS, kind, racing)


CHANGED_CASES = {
    "text_file": ({"kind": "text"}, {"prompts.txt": b"one\ntwo\nthree\n"}, "prompts.txt"),
    "metadata_parquet": (METADATA, {"metadata.parquet": metadata(["a.png", "b.png", "c.png"])}, "metadata.parquet"),
    "part_zip": (PARTS, {"part-000001.zip": part_zip(1, ["a.png", "b.png", "c.png"])}, "part-000001.zip"),
}


@pytest.mark.parametrize("case", CHANGED_CASES)
def test_source_changed_during_read_is_one_line(case, tmp_path, monkeypatch, capfd):
    source, files, target = CHANGED_CASES[case]
    appended_after_first_record(monkeypatch, source["kind"], target)
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    lines = stderr_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == f"error: data/raw/s/{target}: changed (size {len(files[target]):,} -> " + (
        f"{len(files[target]) + 24:,} bytes) while it was read; run again"
    )
    assert rows is None and not leftovers(tmp_path)


def test_file_states_name_each_change(tmp_path):
    from scripts.lib.side_files import check_files_unchanged, tree_state

    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    before = tree_state(tmp_path)
    check_files_unchanged(before, tmp_path)  # as it was: no line
    (tmp_path / "c.txt").write_text("c")
    with pytest.raises(DataError, match=r"c\.txt: appeared while it was read"):
        check_files_unchanged(before, tmp_path)
    os.unlink(tmp_path / "c.txt")
    (tmp_path / "b.txt").write_text("B")  # same size, a later time
    os.utime(tmp_path / "b.txt", ns=(before[str(tmp_path / "b.txt")][3] + 10**9,) * 2)
    with pytest.raises(DataError, match=r"b\.txt: changed \(modification time\)"):
        check_files_unchanged(before, tmp_path)


def test_guard_dedup_input_check_still_refuses(tmp_path):
    """dedup's round-18 check, now on the shared file_state: a shard rewritten is still one line."""
    from scripts.lib.dedup.stage_input import check_unchanged, input_state

    shard = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), shard)
    before = input_state(shard)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"]}), shard)
    with pytest.raises(DataError, match="the input changed during the run"):
        check_unchanged(shard, before)


@pytest.mark.slow
def test_source_growing_under_subprocess(tmp_path):
    """The probe's repro: a 300,000-line prompts.txt appended to every 10 ms while `python -m scripts ingest` reads it."""
    raw = tmp_path / "data" / "raw" / "chatgpt"
    write_files(raw, {"prompts.txt": b"".join(b"a prompt of a red cat number %d\n" % i for i in range(300_000))})
    write_params(tmp_path)
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            with open(raw / "prompts.txt", "ab") as file:
                file.write(b"one more prompt\n" * 100)
            time.sleep(0.01)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        done = run_scripts(tmp_path, "ingest", "chatgpt", "data/prompts/chatgpt.parquet")
    finally:
        stop.set()
        writer.join()
    lines = stderr_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "data/raw/chatgpt/prompts.txt: changed (size" in lines[0] and lines[0].endswith("run again")
    assert not (tmp_path / "data" / "prompts").exists() or not any((tmp_path / "data" / "prompts").iterdir())
