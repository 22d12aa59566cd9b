"""Round 16b: the breaks round 16 found and left, one table per class (every row failed before its fix), on
real files, real tar and TIFF bytes and runs of the command (`helpers.cli`: scripts.cli.main in this process,
as __main__ runs it; two rows as `python -m scripts` itself):

1. A URL's password in a source's metadata (an OpenPrompts `image_uri` of https://user:pass@host/x.png, a
   DALL-E-3 json's `url`) was copied into `meta` of the prompt table, and from it into clean's: a secret in a
   file. The user:password@ is ***@ now (ingest.without_userinfo).
2. A tar number that GNU tar refuses (`1_0`, `+12`, `0o12`, ` 10` in a pax record, Unicode digits) was read by
   int(), so our member boundaries could differ from what `tar` sees. A malformed archive now (archive._OCTAL,
   _DECIMAL): one line under fail, `corrupt_archive` under skip.
3. A float TIFF (PIL mode F) was ingested and came out black when re-encoded; a 32-bit one (mode I) saturated
   at 65,535, and as PNG failed `cannot write mode I as PNG`. Refused as an unsupported pixel format
   (pixels.check_pixel_format): from the header at ingest, and again at every re-encode.
4. `publish --dry-run --tag X` never checked tag X: outside git the card named it with an empty commit.
5. caption passed over a FIFO or socket named `x.png` (or `x.tar`) in its images folder, uncounted.
6. A source `path` that is a FIFO or a device (/dev/zero) was `source path not found`.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_publish import tiny_release

from helpers import GIT_ENV, cli, tar_bytes
from helpers.repos import REPO
from helpers.workspace import PNG, error_line, write_files, write_params
from scripts.lib.archive import TarMember, iter_tar
from scripts.lib.caption_images import list_images
from scripts.lib.errors import DataError
from scripts.lib.export import image_as

SECRET = "hunter2Secret"


def source(kind: str, path: str = "raw", **keys) -> dict:
    return {"kind": kind, "path": path, "images": path, "on_error": "fail", "clean": False, "dedup": False, **keys}


def dalle3_json(**fields) -> bytes:
    record = {"image_name": "a.png", "short_caption": "a red fox", "width": 1, "height": 1, **fields}
    return json.dumps(record).encode()


def ingest(root: Path, entry: dict, monkeypatch, capfd):
    """`ingest s out/s.parquet` of `entry`, in-process: (its CliResult, its report or None)."""
    write_params(root, sources={"s": entry})
    result = cli(["ingest", "s", "out/s.parquet"], root, monkeypatch, capfd)
    report = root / "out" / "s.report.json"
    return result, (json.loads(report.read_text()) if report.exists() else None)


def run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` in `root`, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600"}
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv], cwd=root, env=env, capture_output=True, text=True, timeout=180
    )


# --- 1. a URL's password in a source's metadata ---------------------------------------------------------------


def openprompts_uri(uri: str):
    def files(root: Path) -> dict:
        raw = json.dumps({"raw_discord_data": {"seed": 1, "image_uri": uri}}).replace('"', '""')
        write_files(root, {"raw/a.csv": f'prompt,raw_data\na red fox,"{raw}"\n'.encode()})
        return source("openprompts")

    return files


def dalle3_url(root: Path) -> dict:
    shard = tar_bytes([("a.png", PNG), ("a.json", dalle3_json(url=f"https://me:{SECRET}@cdn.example/a.png"))])
    write_files(root, {"raw/data-000000.tar": shard})
    return source("dalle3", caption_field="short_caption")


# row -> (the source entry it writes, what meta holds in the secret's place)
META_SECRET_ROWS = {
    "openprompts-user-password": (openprompts_uri(f"https://user:{SECRET}@host.example/x.png"), "https://***@host"),
    "openprompts-password-only": (openprompts_uri(f"https://:{SECRET}@host.example/x.png"), "https://***@host"),
    "openprompts-upper-case-scheme": (openprompts_uri(f"HTTPS://u:{SECRET}@host.example/x"), "HTTPS://***@host"),
    "dalle3-json-url": (dalle3_url, "https://***@cdn.example"),
}


@pytest.mark.parametrize("row", META_SECRET_ROWS)
def test_a_urls_password_in_source_metadata_never_reaches_a_file(tmp_path, monkeypatch, capfd, row):
    make, redacted = META_SECRET_ROWS[row]
    result, _ = ingest(tmp_path, make(tmp_path), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    [meta] = pq.read_table(tmp_path / "out" / "s.parquet")["meta"].to_pylist()
    assert redacted in meta and SECRET not in meta
    for path in (tmp_path / "out").iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stdout + result.stderr


# --- 2. a tar number GNU tar refuses -------------------------------------------------------------------------

DATA = b"a red fox\n"  # 10 bytes: octal 12


def header(name: bytes, size: bytes, typeflag: bytes = b"0") -> bytes:
    """A ustar header block whose 12-byte size field is `size` as given, its checksum right."""
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136] = size.ljust(12, b"\0")
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def ustar(size_field: bytes, data: bytes = DATA, name: bytes = b"a.txt") -> bytes:
    return header(name, size_field) + padded(data) + b"\0" * 1024


def pax_record(key: str, value: str, length: str | None = None) -> bytes:
    """`LENGTH key=value\\n`, its length written as `length` (int() reads it as the record's true length)."""
    body = f" {key}={value}\n".encode()
    true = len(body) + (len(length) if length else 2)  # the length's own digits (two of its own)
    assert true < 100 and (length is None or int(length) == true)
    return (length or str(true)).encode() + body


def pax(record: bytes, data: bytes = DATA, name: bytes = b"a.txt") -> bytes:
    """A member `name` whose pax header holds `record`; its ustar size field says its true size."""
    extension = header(b"PaxHeaders/" + name, b"%011o" % len(record), b"x") + padded(record)
    return extension + ustar(b"%011o" % len(data), data, name)


# row -> the archive's bytes: int() read its member a.txt as 10 bytes; GNU tar refuses the field
TAR_NUMBER_ROWS = {
    "pax-size-underscore": pax(pax_record("size", "1_0")),
    "pax-size-plus": pax(pax_record("size", "+10")),
    "pax-size-spaces": pax(pax_record("size", " 10 ")),
    "pax-size-unicode-digits": pax(pax_record("size", "١٠")),  # Arabic-Indic 1, 0
    "pax-record-length-underscore": pax(pax_record("size", "10", length="1_2")),
    "ustar-size-underscore": ustar(b"0000000001_2"),
    "ustar-size-plus": ustar(b"+0000000012"),
    "ustar-size-0o": ustar(b"0o000000012"),
}


@pytest.mark.parametrize("row", TAR_NUMBER_ROWS)
def test_a_tar_number_gnu_tar_refuses_is_a_malformed_archive(row):
    items = list(iter_tar(TAR_NUMBER_ROWS[row]))
    assert not [item for item in items if isinstance(item, TarMember)], items
    assert [item.reason for item in items] == ["corrupt_archive"]


def dalle3_pax_shard(root: Path, on_error: str) -> dict:
    member = dalle3_json()
    size = str(len(member))
    record = pax_record("size", f"{size[:-1]}_{size[-1]}")  # int() reads it as the json's size
    image = header(b"a.png", b"%011o" % len(PNG)) + padded(PNG)
    write_files(root, {"raw/data-000000.tar": image + pax(record, member, b"a.json")})
    return source("dalle3", caption_field="short_caption", on_error=on_error)


def test_a_shard_of_a_refused_tar_number_is_one_line_under_fail(tmp_path):
    write_params(tmp_path, sources={"s": dalle3_pax_shard(tmp_path, "fail")})
    result = run(tmp_path, "ingest", "s", "out/s.parquet")
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = error_line(result.stderr)
    assert "raw/data-000000.tar" in line and "bad pax header" in line and "not a plain decimal number" in line
    assert not (tmp_path / "out").exists()


def test_a_shard_of_a_refused_tar_number_is_counted_under_skip(tmp_path, monkeypatch, capfd):
    result, report = ingest(tmp_path, dalle3_pax_shard(tmp_path, "skip"), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert report["skipped"] == {"corrupt_archive": 1, "incomplete_sample": 1}  # a.png's json is past the refusal
    assert report["rows_written"] == 0


# --- 3. float and 32-bit TIFFs ------------------------------------------------------------------------------


def tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    return buffer.getvalue()


# row -> a TIFF no 8- or 16-bit picture shows as it is, and the PIL mode its line names
TIFF_ROWS = {
    "float": (tiff(np.array([[0.25, 0.75]], dtype=np.float32)), "mode F"),
    "32-bit-over-65535": (tiff(np.array([[70_000, 100]], dtype=np.int32)), "mode I"),
    "32-bit-negative": (tiff(np.array([[-300, 100]], dtype=np.int32)), "mode I"),
}


@pytest.mark.parametrize("row", TIFF_ROWS)
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_float_or_32_bit_tiff_is_refused_at_ingest(tmp_path, monkeypatch, capfd, row, on_error):
    data, mode = TIFF_ROWS[row]
    write_files(tmp_path, {"raw/prompts.csv": b"prompt\na red fox\n", "raw/0.png": data})
    result, report = ingest(tmp_path, source("kaggle_sd2", on_error=on_error), monkeypatch, capfd)
    if on_error == "fail":
        assert result.returncode == 2, (result.stdout, result.stderr)
        line = error_line(result.stderr)
        assert "raw/prompts.csv: row 1" in line and "raw/0.png" in line
        assert f"(PIL {mode}), an unsupported pixel format" in line
        assert report is None
    else:
        assert result.returncode == 0, result.stderr
        assert report["skipped"] == {"unsupported_pixel_format": 1}


@pytest.mark.parametrize("row", TIFF_ROWS)
@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_a_float_or_32_bit_tiff_is_refused_when_re_encoded(row, image_format):
    data, mode = TIFF_ROWS[row]
    with pytest.raises(DataError) as caught:
        image_as(data, image_format, "tif", "raw/x.tif")  # black, white or `cannot write mode I as PNG`
    line = str(caught.value)
    assert line.startswith("raw/x.tif: ") and f"(PIL {mode}), an unsupported pixel format" in line


# --- 4. publish --dry-run --tag X ---------------------------------------------------------------------------


def git(root: Path, *argv: str) -> None:
    subprocess.run(["git", *argv], cwd=root, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)


def committed(root: Path) -> Path:
    git(root, "init", "-q")
    git(root, "add", "params.yaml")
    git(root, "commit", "-q", "-m", "one")
    return root


def tag_behind_head(root: Path) -> Path:
    committed(root)
    git(root, "tag", "v9")
    git(root, "commit", "-q", "--allow-empty", "-m", "two")
    return root


# row -> (the workspace around the release, what the line says)
PUBLISH_TAG_ROWS = {
    "no-git-repository": (lambda root: root, "git tag v9 not found: not in a git repository"),
    "no-such-tag": (committed, "git tag v9 not found: tag the release first"),
    "tag-behind-head": (tag_behind_head, "`git checkout v9`"),
}


@pytest.mark.parametrize("row", PUBLISH_TAG_ROWS)
def test_publish_dry_run_checks_the_tag_it_names(tmp_path, monkeypatch, capfd, row):
    make, expected = PUBLISH_TAG_ROWS[row]
    root = make(tiny_release(tmp_path / "repo"))
    argv = ["publish", "v2", "--repo-id", "me/v2", "--dry-run", "--tag", "v9", "--out", "hub"]
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in error_line(result.stderr)
    assert not (root / "hub").exists()


# --- 5. caption: a FIFO or socket named as an image ---------------------------------------------------------


def fifo(folder: Path, name: str) -> None:
    os.mkfifo(folder / name)


def unix_socket(folder: Path, name: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(name)  # relative: the folder is the working directory (a socket path is 108 bytes at most)


CAPTION_ROWS = {
    "fifo-png": (fifo, "x.png"),
    "socket-png": (unix_socket, "x.png"),
    "fifo-tar": (fifo, "x.tar"),
}


@pytest.mark.parametrize("row", CAPTION_ROWS)
def test_caption_counts_a_fifo_or_socket_named_as_an_image(tmp_path, monkeypatch, row):
    make, name = CAPTION_ROWS[row]
    write_files(tmp_path, {"images/a.png": PNG})
    monkeypatch.chdir(tmp_path / "images")
    make(tmp_path / "images", name)
    listed, skipped = list_images(tmp_path / "images")
    assert [image.id for image in listed] == ["a.png"]
    assert skipped == Counter({"not_a_regular_file": 1})


# --- 6. a source path that is a FIFO or a device ------------------------------------------------------------


def fifo_path(root: Path) -> str:
    os.mkfifo(root / "raw")
    return "raw"


# row -> (kind, the source path it makes, what the line says)
SOURCE_PATH_ROWS = {
    "text-fifo": ("text", fifo_path, "raw: is a FIFO, not a folder or a file (sources.s.path)"),
    "text-dev-zero": ("text", lambda root: "/dev/zero", "/dev/zero: is a device, not a folder or a file"),
    "gustavosta-fifo": ("gustavosta", fifo_path, "raw: is a FIFO, not a folder or a file"),
    "diffusiondb-dev-null": ("diffusiondb", lambda root: "/dev/null", "/dev/null: is a device"),
}


@pytest.mark.parametrize("row", SOURCE_PATH_ROWS)
def test_a_source_path_that_is_a_fifo_or_a_device_says_so(tmp_path, monkeypatch, capfd, row):
    kind, make, expected = SOURCE_PATH_ROWS[row]
    result, _ = ingest(tmp_path, source(kind, make(tmp_path)), monkeypatch, capfd)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def test_the_simpletuner_tool_says_its_shards_path_is_a_fifo(tmp_path, monkeypatch, capfd):
    os.mkfifo(tmp_path / "shards")
    result = cli(["simpletuner", "shards", "out/st.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "shards: is a FIFO, not a folder or a tar shard file" in error_line(result.stderr)
