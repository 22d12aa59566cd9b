"""Hostile and malformed input: one-line errors naming file and row (on_error: fail), counted skips
(on_error: skip), never a traceback, never an output file left behind.

Each case writes a small source holding good records plus ONE bad thing. `fail` runs the CLI's
`python -m scripts ingest` (`helpers.cli`: scripts.cli.main in this process; two cases also as a
real subprocess); `skip` runs the same config through `ingest()` and checks the report counts exactly it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import cli
from scripts.ingest import ingest
from scripts.lib.errors import DataError
from scripts.lib.readers import SourceConfig

REPO = Path(__file__).resolve().parents[1]


def png(width: int = 8, height: int = 6) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb as far as a decoder knows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def record(i: int) -> bytes:
    return json.dumps(
        {"image_name": f"{i:04d}.png", "short_caption": f"a good caption {i}", "width": 8, "height": 6}
    ).encode()


def tar_with(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return path


def good_sample(i: int) -> list[tuple[str, bytes]]:
    return [(f"{i:04d}.png", png()), (f"{i:04d}.json", record(i))]


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


# ---------------------------------------------------------------- the cases
# each builder writes into `root` and returns (config, reason or None for fatal, substrings of the error)
def dalle3_case(root: Path, extra: list, **config):
    tar_with(root / "data-000000.tar", good_sample(1) + extra + good_sample(2))
    return dict(kind="dalle3", path=str(root), **config)


def case_absolute_path(root):
    return dalle3_case(root, [("/etc/cron.d/evil.png", b"x")]), "unsafe_member", ["data-000000.tar", "absolute path"]


def case_dotdot(root):
    return dalle3_case(root, [("../../evil.png", b"x")]), "unsafe_member", ["data-000000.tar", "'..'"]


def case_symlink(root):
    return (
        dalle3_case(root, [special("evil.png", tarfile.SYMTYPE, "/etc/passwd")]),
        "unsafe_member",
        ["data-000000.tar", "symlink"],
    )


def case_hardlink(root):
    return (
        dalle3_case(root, [special("evil.png", tarfile.LNKTYPE, "0001.png")]),
        "unsafe_member",
        ["data-000000.tar", "hardlink"],
    )


def case_device(root):
    return (
        dalle3_case(root, [special("dev.png", tarfile.CHRTYPE)]),
        "unsafe_member",
        ["data-000000.tar", "character device"],
    )


def case_fifo(root):
    return dalle3_case(root, [special("pipe.png", tarfile.FIFOTYPE)]), "unsafe_member", ["data-000000.tar", "fifo"]


def case_member_too_large(root):
    cfg = dalle3_case(root, [("huge.bin", b"\0" * 5000)], max_member_bytes=4096)
    return cfg, "member_too_large", ["data-000000.tar", "'huge.bin' is 5000 bytes"]


def case_pixel_bomb(root):
    bomb = [("0009.png", png_header_only(60000, 60000)), ("0009.json", record(9))]
    return dalle3_case(root, bomb), "image_too_large", ["data-000000.tar", "sample '0009'", "60000x60000"]


def case_corrupt_tar_header(root):
    # a note after sample 1: its header broken, the walk goes on to the next valid header (round 42a: it ended)
    path = tar_with(root / "data-000000.tar", good_sample(1) + [("0001.txt", b"a note")] + good_sample(2))
    data = bytearray(path.read_bytes())
    data[2 * 1024] ^= 0xFF  # first byte of 0001.txt's header (after 2 members of 1 block each)
    path.write_bytes(bytes(data))
    return dict(kind="dalle3", path=str(root)), "corrupt_archive", ["data-000000.tar", "checksum"]


def case_pax_record_length_zero(root):
    path = root / "data-000000.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in good_sample(1) + [("d" * 120 + ".png", png())]:  # long name: a pax 'path' record
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = bytearray(path.read_bytes())
    at = data.index(b" path=", 2048)
    data[at - 3 : at] = b"000"  # a record of length 0 would loop forever in a naive parser
    path.write_bytes(bytes(data))
    return dict(kind="dalle3", path=str(root)), "corrupt_archive", ["data-000000.tar", "bad pax header"]


def case_malformed_json_member(root):
    cfg = dalle3_case(root, [("0005.png", png()), ("0005.json", b'{"short_caption": "unterminated')])
    return cfg, "bad_json", ["data-000000.tar", "sample '0005'", "malformed json"]


def case_webdataset_non_utf8_json(root):
    shard = "buckets/p512/shard-000000.tar"
    tar_with(
        root / shard,
        [
            ("k1.jpg", png()),
            ("k1.txt", b"a fine caption\n"),
            ("k1.json", b'{"w": 512, "h": 512}'),
            ("k2.jpg", png()),
            ("k2.txt", b"another caption\n"),
            ("k2.json", b'{"w": "\xff\xfe"}'),
        ],
    )
    (root / "manifest.json").write_text(json.dumps({"format": "bucketed_shards_v1", "buckets": [{"shards": [shard]}]}))
    return dict(kind="bucketed_webdataset", path=str(root)), "not_utf8", ["shard-000000.tar", "sample 'k2'"]


def case_manifest_escapes_folder(root):
    (root / "manifest.json").write_text(
        json.dumps({"format": "bucketed_shards_v1", "buckets": [{"shards": ["../../etc/x.tar"]}]})
    )
    return dict(kind="bucketed_webdataset", path=str(root)), None, ["manifest.json", "leaves the export folder"]


def case_text_non_utf8(root):
    (root / "p.txt").write_bytes(b"a fine prompt\ncaf\xe9 au lait in paris\nanother fine prompt\n")
    return dict(kind="text", path=str(root)), "not_utf8", ["p.txt", "line 2", "UTF-8"]


def case_text_nul_byte(root):
    (root / "p.txt").write_bytes(b"a fine prompt\nnul\x00byte prompt\nanother fine prompt\n")
    return dict(kind="text", path=str(root)), "nul_byte", ["p.txt", "line 2", "NUL"]


def openprompts_case(root: Path, rows: list[str], header: str = "prompt,raw_data"):
    good = json.dumps({"raw_discord_data": {"seed": 1}}).replace('"', '""')
    lines = [header, f'a fine prompt,"{good}"'] + rows + [f'another fine prompt,"{good}"']
    (root / "op.csv").write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return dict(kind="openprompts", path=str(root))


def case_csv_empty_prompt(root):
    return openprompts_case(root, ['"   ","{}"']), "empty_prompt", ["op.csv", "row 2", "empty prompt"]


def case_csv_wrong_field_count(root):
    return openprompts_case(root, ["just one field"]), "bad_row", ["op.csv", "row 2", "expected 2 fields, got 1"]


def case_csv_malformed_raw_data(root):
    return openprompts_case(root, ['a prompt,"{not json"']), "bad_json", ["op.csv", "row 2", "raw_data"]


def case_csv_non_utf8(root):
    return openprompts_case(root, ['caf\udce9 prompt,"{}"']), "not_utf8", ["op.csv", "row 2", "UTF-8"]


def case_csv_nul_byte(root):
    return openprompts_case(root, ['nul\x00 prompt,"{}"']), "nul_byte", ["op.csv", "row 2", "NUL"]


def case_csv_field_too_large(root):
    return (
        openprompts_case(root, ['"' + "x" * 200_000 + '","{}"']),
        "bad_csv",
        ["op.csv", "row 2", "field larger than field limit"],
    )


def case_text_line_too_long(root):
    (root / "p.txt").write_bytes(b"a fine prompt\n" + b"y" * 3_000_000 + b"\nanother fine prompt\n")
    return dict(kind="text", path=str(root)), "line_too_long", ["p.txt", "line 2", "longer than 65536 bytes"]


def case_csv_missing_column(root):
    return openprompts_case(root, [], header="prompt,extra"), None, ["op.csv", "missing column 'raw_data'"]


def case_csv_non_utf8_inside_raw_data(root):
    bad = '{""raw_discord_data"": {""image_uri"": ""caf\udce9.png""}}'
    return openprompts_case(root, [f'a prompt,"{bad}"']), "not_utf8", ["op.csv", "row 2", "native metadata"]


def case_webdataset_size_out_of_range(root):
    shard = "buckets/p512/shard-000000.tar"
    tar_with(
        root / shard,
        [
            ("k1.jpg", png()),
            ("k1.txt", b"a fine caption\n"),
            ("k1.json", b'{"w": 512, "h": 512}'),
            ("k2.jpg", png()),
            ("k2.txt", b"another caption\n"),
            ("k2.json", b'{"w": 99999999999, "h": 5}'),
        ],
    )
    (root / "manifest.json").write_text(json.dumps({"format": "bucketed_shards_v1", "buckets": [{"shards": [shard]}]}))
    return (
        dict(kind="bucketed_webdataset", path=str(root)),
        "bad_size",
        ["shard-000000.tar", "sample 'k2'", "out of range"],
    )


def case_kaggle_image_path_traversal(root):
    (root / "imgs").mkdir()
    (root / "imgs" / "0.png").write_bytes(png())
    (root / "train.csv").write_text("Prompt,image_path\na fine prompt,imgs/0.png\nsneaky prompt,../../etc/passwd\n")
    return dict(kind="gustavosta", path=str(root)), "unsafe_path", ["train.csv", "row 2", "leaves the source folder"]


def case_zip_slip_in_part(root):
    listing = {"a.png": {"p": "a fine prompt"}, "../evil.png": {"p": "an evil prompt"}}
    with zipfile.ZipFile(root / "part-000001.zip", "w") as zf:
        zf.writestr("a.png", png())
        zf.writestr("../evil.png", png())
        zf.writestr("part-000001.json", json.dumps(listing))
    return dict(kind="diffusiondb", path=str(root), read="parts"), "unsafe_member", ["part-000001.zip", "'../evil.png'"]


def case_parquet_missing_column(root):
    (root / "data").mkdir()
    pq.write_table(pa.table({"prompt": ["lowercase column name"]}), root / "data" / "train.parquet")
    return dict(kind="gustavosta", path=str(root)), None, ["train.parquet", "missing column 'Prompt'"]


def case_parquet_not_parquet(root):
    (root / "data").mkdir()
    (root / "data" / "train.parquet").write_bytes(b"PAR1 this is not really parquet")
    return dict(kind="gustavosta", path=str(root)), None, ["train.parquet", "not a readable parquet file"]


CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


def test_there_are_at_least_12_distinct_bad_cases(tmp_path):
    reasons = set()
    for name, build in CASES.items():
        (tmp_path / name).mkdir()
        reasons.add(build(tmp_path / name)[1])
    assert len(CASES) >= 12 and len(reasons) >= 10


# ---------------------------------------------------------------- fail: the CLI, one line, no output
def check_fail_policy(tmp_path: Path, name: str, run) -> None:
    src = tmp_path / "src"
    src.mkdir()
    config, _, expected = CASES[name](src)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sources": {"bad": dict(config, on_error="fail")}}))
    proc = run(["ingest", "bad", "out/bad.parquet"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in expected:
        assert part in lines[0], (part, lines[0])
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []  # no output, no temp file left behind


def run_subprocess(cwd: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_fail_policy_stops_with_one_line_naming_file_and_row(tmp_path, name, monkeypatch, capfd):
    check_fail_policy(tmp_path, name, lambda argv: cli(argv, tmp_path, monkeypatch, capfd))


@pytest.mark.parametrize("name", ["dotdot", "csv_non_utf8"])
def test_fail_policy_in_a_real_process(tmp_path, name):
    check_fail_policy(tmp_path, name, lambda argv: run_subprocess(tmp_path, argv))


# ---------------------------------------------------------------- skip: counted per reason, good rows kept
@pytest.mark.parametrize("name", sorted(CASES))
def test_skip_policy_counts_the_bad_record_and_keeps_the_good_ones(tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    config, reason, expected = CASES[name](src)
    out = tmp_path / "out" / "bad.parquet"
    if reason is None:  # the whole file is unusable: an error even under skip
        with pytest.raises(DataError) as err:
            ingest("bad", SourceConfig(**dict(config, on_error="skip")), out)
        assert all(part in str(err.value) for part in expected)
        assert not out.parent.exists() or list(out.parent.iterdir()) == []
        return
    report = ingest("bad", SourceConfig(**dict(config, on_error="skip")), out)
    assert report["skipped"] == {reason: 1}
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == report["rows_written"] >= 1
    assert all("fine" in r["prompt"] or "good" in r["prompt"] for r in rows)


def test_unknown_source_and_bad_params_are_one_line_errors(tmp_path, monkeypatch, capfd):
    cases = [
        ({"x": {"kind": "text", "path": "."}}, "y", "no source 'y'"),
        ({"x": {"kind": "nope", "path": "."}}, "x", "sources.x.kind"),
    ]
    for i, (sources, source, expected) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "params.yaml").write_text(yaml.safe_dump({"sources": sources}))
        proc = cli(["ingest", source, "o.parquet"], tmp_path / str(i), monkeypatch, capfd)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, (
            proc.stderr
        )


# ---------------------------------------------------------------- references re-validated on read
def test_read_member_revalidates_names_types_and_caps(tmp_path):
    from scripts.lib.archive import UnsafeArchive, read_image, read_member

    shard = tar_with(
        tmp_path / "s.tar",
        good_sample(1)
        + [special("link.png", tarfile.SYMTYPE, "/etc/passwd"), ("bomb.png", png_header_only(60000, 60000))],
    )
    assert read_member(f"{shard}!/0001.png") == png()
    with pytest.raises(UnsafeArchive, match="'..'"):
        read_member(f"{shard}!/../0001.png")
    with pytest.raises(UnsafeArchive, match="absolute"):
        read_member(f"{shard}!//etc/passwd")
    with pytest.raises(FileNotFoundError):  # the symlink is not a regular member: never served
        read_member(f"{shard}!/link.png")
    with pytest.raises(UnsafeArchive) as too_big:
        read_member(f"{shard}!/0001.json", max_bytes=10)
    assert too_big.value.reason == "member_too_large"
    with pytest.raises(UnsafeArchive) as bomb:
        read_image(f"{shard}!/bomb.png", tmp_path)
    assert bomb.value.reason == "image_too_large"


def test_zip_member_that_inflates_past_the_cap_is_refused(tmp_path):
    from scripts.lib.archive import UnsafeArchive, read_member

    with zipfile.ZipFile(tmp_path / "z.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 1_000_000)  # ~1 KB compressed
    assert len(read_member(f"{tmp_path / 'z.zip'}!/zeros.bin")) == 1_000_000
    with pytest.raises(UnsafeArchive) as err:
        read_member(f"{tmp_path / 'z.zip'}!/zeros.bin", max_bytes=100_000)
    assert err.value.reason == "member_too_large"


def test_truncated_tar_is_reported_not_crashed(tmp_path):
    path = tar_with(
        tmp_path / "src" / "data-000000.tar", good_sample(1) + [("0002.png", png() * 50), ("0002.json", record(2))]
    )
    path.write_bytes(path.read_bytes()[: 2048 + 700])  # cut inside 0002.png's data
    report = ingest(
        "t", SourceConfig(kind="dalle3", path=str(tmp_path / "src"), on_error="skip"), tmp_path / "t.parquet"
    )
    assert report["rows_written"] == 1 and report["skipped"] == {"corrupt_archive": 1}


def test_a_sample_key_repeated_later_in_a_shard_is_refused_once(tmp_path):
    tar_with(tmp_path / "src" / "data-000000.tar", good_sample(1) + good_sample(2) + good_sample(1))
    report = ingest(
        "t", SourceConfig(kind="dalle3", path=str(tmp_path / "src"), on_error="skip"), tmp_path / "t.parquet"
    )
    assert report["rows_written"] == 2 and report["skipped"] == {"duplicate_key": 1}


def test_repeated_native_keys_skipped_under_skip(tmp_path):
    """Round 45b: a repeated key is a bad record like the others: `skip` keeps the first and counts the rest as
    `duplicate_key` (as an archive's repeated name is); `fail` is one line naming both rows (tests/test_round45b.py)."""
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table(
        {
            "image_name": ["a.png", "a.png"],
            "prompt": ["one prompt", "two prompt"],
            "part_id": pa.array([1, 1], pa.uint16()),
        }
    )
    for column in (
        "seed",
        "step",
        "cfg",
        "sampler",
        "width",
        "height",
        "user_name",
        "timestamp",
        "image_nsfw",
        "prompt_nsfw",
    ):
        table = table.append_column(column, pa.array([None, None], pa.int32()))
    pq.write_table(table, src / "metadata.parquet")
    report = ingest("t", SourceConfig(kind="diffusiondb", path=str(src), on_error="skip"), tmp_path / "t.parquet")
    assert report["skipped"] == {"duplicate_key": 1} and report["rows_written"] == 1
    assert pq.read_table(tmp_path / "t.parquet").column("prompt").to_pylist() == ["one prompt"]
    with pytest.raises(DataError, match="row 2: native key 'a.png' repeats that of .*metadata.parquet: row 1"):
        ingest("t", SourceConfig(kind="diffusiondb", path=str(src), on_error="fail"), tmp_path / "u.parquet")
    assert not (tmp_path / "u.parquet").exists()
