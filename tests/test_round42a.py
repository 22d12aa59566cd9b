"""Round 42a: a corrupt header in a tar shard ended the walk, and every later sample of the shard was lost.

A bad checksum, a bad number field, a bad pax record, two extension headers for one member or a pax header whose
own path record is over 1 MiB ended archive.iter_tar there: one counted skip saying how many bytes were not read,
and every later sample gone (a shard of samples a..e with c's header broken: 2 rows). The walk now does what GNU
tar does ("Skipping to next header"): it scans on block by block to the next valid header and resumes there, the
bytes passed over one counted skip naming their range (a..e: 4 rows, c counted). Rows, every one failing before
its fix unless its id says guard:

1. per corrupt-header kind, the later samples are read (and counted);
2. a sample with members on both sides of the skipped bytes is one counted incomplete sample, never paired;
3. a resync that lands inside a member's data (a tar inside a tar) walks what GNU tar walks, a lone zero block in
   the skipped bytes is data, and nothing of the member before the corrupt header (a pax size) is carried over;
4. a shard with no valid header after the corruption: one skip naming the bytes;
5. what is built on the walk (read_member's index: bucketed, simpletuner, release; caption's image list; ingest
   as a user runs it) sees the later samples;
6. (slow) a 10,000-member shard with one bad header in the middle is read once, byte for byte, not rescanned.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from helpers.workspace import PNG, run_scripts, write_params
from scripts.lib import archive
from scripts.lib.archive import TarBuffer, UnsafeArchive, iter_samples, iter_tar, open_tar, read_member
from scripts.lib.caption_images import _tar_images
from scripts.lib.readers.dalle3 import Dalle3Sample, iter_dalle3

KEYS = "abcde"


def record(key: str) -> bytes:
    return json.dumps({"short_caption": f"caption {key}", "width": 1, "height": 1}).encode()


def raw_member(name: str, data: bytes, typeflag: bytes = tarfile.REGTYPE) -> bytes:
    """One header (ustar) and its padded data, of any type: an `L` long-name header too."""
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), typeflag
    return info.tobuf(tarfile.USTAR_FORMAT) + data + b"\x00" * (-len(data) % 512)


def shard_bytes(keys: str = KEYS, exts=("png", "json"), pax: dict | None = None, on: str = "c.png", data=None) -> bytes:
    """A real pax-format shard of samples `keys`; member `on` carries the pax records `pax` (and bytes `data`)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key in keys:
            for ext in exts:
                name = f"{key}.{ext}"
                body = data if (data is not None and name == on) else (record(key) if ext == "json" else PNG)
                info = tarfile.TarInfo(name)
                info.size, info.pax_headers = len(body), (pax or {}) if name == on else {}
                tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def header_at(shard: bytes, name: str) -> int:
    """The offset of member `name`'s own (ustar) header (tarfile's `offset` is of its first, pax, header)."""
    with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        return next(m.offset_data - 512 for m in tar.getmembers() if m.name == name or m.name.startswith("qqq"))


def after_json(data: bytes, key: str) -> int:
    """Where the member after `key`.json starts (its header and one block of data: a record is under 512 bytes)."""
    return data.index(f"{key}.json".encode() + b"\x00") + 1024


def broken(how: str, on: str = "c.png", exts=("png", "json")) -> bytes:
    """A shard of samples a..e with member `on`'s header broken `how`."""
    pax = {"comment": "x"} if how in ("bad pax record", "two extension headers") else None
    if how == "path record over 1 MiB":
        pax = {"path": "q" * (archive.EXTENSION_CAP + 10) + ".png"}
    data = bytearray(shard_bytes(exts=exts, pax=pax, on=on))
    at = header_at(bytes(data), on)
    if how == "bad checksum":
        data[at] = ord("q")
    elif how == "bad size field":
        data[at + 124] = ord("9")
    elif how == "bad checksum field":
        data[at + 148] = ord("x")
    elif how == "bad pax record":
        record_at = data.index(b"comment=x") - 3
        data[record_at : record_at + 2] = b"99"
    elif how == "two extension headers":  # a GNU long name between the member's pax header and its own header
        data[at:at] = raw_member("././@LongLink", b"z.png\x00", tarfile.GNUTYPE_LONGNAME)
    return bytes(data)


def counted(path: Path) -> tuple[list[str], Counter]:
    """iter_dalle3's rows (sample keys) and skip reasons of one shard."""
    rows, skips = [], Counter()
    for item in iter_dalle3(path):
        if isinstance(item, Dalle3Sample):
            rows.append(item.key)
        else:
            skips[item.reason] += 1
    return rows, skips


def skips_of(path: Path) -> list[UnsafeArchive]:
    with open_tar(path) as buf:
        return [item for item in iter_samples(buf) if isinstance(item, UnsafeArchive)]


def written(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "data-000000.tar"
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- 1. per corrupt-header kind, later samples read

KINDS = ["bad checksum", "bad size field", "bad checksum field", "bad pax record", "two extension headers"]
KINDS += ["path record over 1 MiB"]


@pytest.mark.parametrize("how", KINDS)
def test_the_walk_resumes_after_a_corrupt_header(tmp_path, how):
    shard = written(tmp_path, broken(how))
    rows, skips = counted(shard)
    assert rows == ["a", "b", "d", "e"], (rows, skips)
    assert skips == {"corrupt_archive": 1, "incomplete_sample": 1}, skips  # c's json, alone
    data = shard.read_bytes()
    start, stop = after_json(data, "b"), data.index(b"c.json\x00")  # c.png's headers and data, passed over
    [skip] = [item for item in skips_of(shard) if item.reason == "corrupt_archive"]
    assert isinstance(skip, archive.SkippedRegion) and (skip.start, skip.stop) == (start, stop), (skip, start, stop)
    assert f"bytes {start} to {stop} ({stop - start} bytes) skipped to the next valid header" in str(skip), skip


# ---------------------------------------------------------------- 2. a sample on both sides of the skipped bytes

TORN = ["bad checksum", "bad size field", "bad pax record"]


@pytest.mark.parametrize("how", TORN)
def test_a_sample_torn_by_a_skip_is_one_incomplete_sample(tmp_path, how):
    """c.png before the corrupt header of c.txt, c.json after it: c is one counted incomplete sample, not paired."""
    shard = written(tmp_path, broken(how, on="c.txt", exts=("png", "txt", "json")))
    rows, skips = counted(shard)
    assert rows == ["a", "b", "d", "e"], (rows, skips)
    assert skips == {"corrupt_archive": 1, "incomplete_sample": 1}, skips
    with open_tar(shard) as buf:
        items = list(iter_samples(buf))
    assert "c" not in [item[0] for item in items if isinstance(item, tuple)], items
    [torn] = [item for item in items if isinstance(item, UnsafeArchive) and item.reason == "incomplete_sample"]
    assert "sample 'c' has members on both sides of the bytes skipped" in str(torn), torn


def test_a_sample_ending_at_the_skip_is_counted_by_its_reader(tmp_path):
    """c.png, then c.json's header broken, then d: c is the reader's incomplete sample, d and e are read."""
    rows, skips = counted(written(tmp_path, broken("bad checksum", on="c.json")))
    assert rows == ["a", "b", "d", "e"] and skips == {"corrupt_archive": 1, "incomplete_sample": 1}, (rows, skips)


# ---------------------------------------------------------------- 3. where the resync lands


def inner_tar(end_blocks: bool) -> bytes:
    """A tar of sample x, as a member's data: with its end blocks, or cut just after its last member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in (("x.png", PNG), ("x.json", record("x"))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        members_end = out.tell()
    return out.getvalue() if end_blocks else out.getvalue()[:members_end]


def test_a_resync_into_a_tar_inside_a_member_walks_it_as_gnu_tar_does(tmp_path):
    """c.png's data is a tar: its members are walked (as GNU tar walks them), and its end blocks end the walk,
    counted with the bytes left unread (tar stops there too)."""
    data = bytearray(shard_bytes(on="c.png", data=inner_tar(end_blocks=True)))
    at = header_at(bytes(data), "c.png")
    data[at] = ord("q")
    shard = written(tmp_path, bytes(data))
    rows, skips = counted(shard)
    assert rows == ["a", "b", "x"] and skips == {"corrupt_archive": 2}, (rows, skips)
    ended = str(skips_of(shard)[-1])
    assert "end-of-archive blocks at byte" in ended and "the rest of the shard (" in ended, ended


def test_a_resync_into_a_member_holding_headers_goes_on_after_it(tmp_path):
    data = bytearray(shard_bytes(on="c.png", data=inner_tar(end_blocks=False)))
    data[header_at(bytes(data), "c.png")] = ord("q")
    rows, skips = counted(written(tmp_path, bytes(data)))
    assert rows == ["a", "b", "x", "d", "e"], (rows, skips)
    assert skips == {"corrupt_archive": 1, "incomplete_sample": 1}, skips


def test_a_lone_zero_block_in_the_skipped_bytes_is_data(tmp_path):
    """An uncompressed image's black rows: one zero block is not the archive's end (two are)."""
    data = bytearray(shard_bytes(on="c.png", data=b"\x01" * 512 + b"\x00" * 512 + b"\x01" * 100))
    data[header_at(bytes(data), "c.png")] = ord("q")
    rows, skips = counted(written(tmp_path, bytes(data)))
    assert rows == ["a", "b", "d", "e"] and skips == {"corrupt_archive": 1, "incomplete_sample": 1}, (rows, skips)


def test_a_pax_size_before_a_corrupt_header_is_not_carried_over(tmp_path):
    """c.png's pax header says 5000 bytes, its own header is broken: c.json is read at its own size."""
    data = bytearray(shard_bytes(pax={"size": "5000"}, on="c.png"))
    data[header_at(bytes(data), "c.png")] = ord("q")
    shard = written(tmp_path, bytes(data))
    with open_tar(shard) as buf:
        sizes = {item.name: item.size for item in iter_tar(buf) if not isinstance(item, UnsafeArchive)}
    assert sizes["c.json"] == len(record("c")) and sizes["e.json"] == len(record("e")), sizes
    assert counted(shard)[0] == ["a", "b", "d", "e"]


# ---------------------------------------------------------------- 4. no valid header after the corruption

END_KINDS = ["bad checksum", "bad size field", "bad pax record"]


@pytest.mark.parametrize("how", END_KINDS)
def test_a_corrupt_last_header_is_one_skip_naming_its_bytes(tmp_path, how):
    data = broken(how, on="e.json")
    start = after_json(data, "d") + 1024  # e.png (one header, one block of data) is read
    shard = written(tmp_path, data)
    rows, skips = counted(shard)
    assert rows == ["a", "b", "c", "d"] and skips == {"corrupt_archive": 1, "incomplete_sample": 1}, (rows, skips)
    [skip] = [item for item in skips_of(shard) if item.reason == "corrupt_archive"]
    said = f"no valid tar header follows: bytes {start} to {len(data)} ({len(data) - start} bytes) are passed over"
    assert said in str(skip) and skip.stop is None, skip


def test_a_shard_cut_after_a_corrupt_header_is_one_skip(tmp_path):
    data = bytearray(shard_bytes())
    at = header_at(bytes(data), "e.png")
    data[at] = ord("q")
    shard = written(tmp_path, bytes(data[: at + 1024]))  # the header and part of its data, no end blocks
    rows, skips = counted(shard)
    assert rows == ["a", "b", "c", "d"] and skips == {"corrupt_archive": 1}, (rows, skips)
    assert f"bytes {at} to {at + 1024} (1024 bytes) are passed over" in str(skips_of(shard)[0])


# ---------------------------------------------------------------- 5. what is built on the walk


def test_read_member_finds_a_member_after_the_skip(tmp_path):
    """read_member's index (bucketed exports, simpletuner, a release's images): d.png after c's bad header."""
    shard = written(tmp_path, broken("bad checksum"))
    assert read_member(f"{shard}!/d.png") == PNG and read_member(f"{shard}!/e.json") == record("e")


def test_caption_lists_the_images_after_the_skip(tmp_path):
    shard = written(tmp_path, broken("bad pax record"))
    skipped: Counter = Counter()
    listed = [image.id for image in _tar_images(tmp_path, shard, skipped)]
    assert listed == [f"data-000000.tar!/{key}.png" for key in "abde"] and skipped == {"corrupt_archive": 1}, listed


@pytest.mark.slow  # a real `python -m scripts ingest`: ~2 s
def test_ingest_counts_the_samples_after_a_corrupt_header(tmp_path):
    (tmp_path / "raw").mkdir()
    written(tmp_path / "raw", broken("bad checksum"))
    entry = {"kind": "dalle3", "path": "raw", "images": "raw", "on_error": "skip", "clean": False, "dedup": False}
    write_params(tmp_path, sources={"s": {**entry, "caption_field": "short_caption"}})
    done = run_scripts(tmp_path, "ingest", "s", "out/s.parquet")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "s.report.json").read_text())
    assert report["rows_written"] == 4, report
    assert report["skipped"] == {"corrupt_archive": 1, "incomplete_sample": 1}, report


# ---------------------------------------------------------------- 6. a large shard is read once


class CountingBuffer(TarBuffer):
    """A real TarBuffer that adds up the bytes it reads from the file."""

    read_bytes = 0

    def _pread(self, offset: int, length: int, need: int | None = None) -> bytes:
        data = super()._pread(offset, length, need)
        self.read_bytes += len(data)
        return data


@pytest.mark.slow  # builds a 10,000-member shard and a 32 MiB member: ~3 s
@pytest.mark.parametrize("shape", ["10,000 members, one bad header mid-shard", "a 32 MiB member's header broken"])
def test_a_resync_reads_the_shard_once(tmp_path, shape):
    if shape.startswith("10,000"):
        keys = [f"{i:05d}" for i in range(5000)]
        data = bytearray(shard_bytes(keys=keys, on="02500.png"))
        at, later = header_at(bytes(data), "02500.png"), 4999 * 2 + 1  # every member but 02500.png
    else:
        data = bytearray(shard_bytes(on="c.png", data=b"\x07" * (32 << 20)))
        at, later = header_at(bytes(data), "c.png"), 9
    data[at] = ord("q")
    shard = written(tmp_path, bytes(data))
    with open(shard, "rb") as f:
        buf = CountingBuffer(f.fileno(), len(data), shard)
        items = list(iter_tar(buf))
    assert sum(not isinstance(item, UnsafeArchive) for item in items) == later, len(items)
    assert buf.read_bytes <= len(data) + 2 * TarBuffer.WINDOW, (buf.read_bytes, len(data))
