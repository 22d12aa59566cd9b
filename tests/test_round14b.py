"""Round 14b, one table per class (every row failed before its fix), on real files and the real commands:

1. caption paid before it refused what it could have seen up front: an image whose name is not UTF-8 (a
   file, a folder, a tar member) was refused at the write, every request sent and its answer cached; a
   user's file at an output's temp or lock name was refused after them too. Every check that needs no
   request now runs before the first one: a run refused for any of them sends none.
2. sample-data refused to rewrite its own folder at another `--seed` (it could not prove the folder its
   own): the folder now carries the marker every folder output carries, so a rerun replaces it, while a
   file added or edited since, or a copy, is still the user's: refused in one line, untouched.
3. PIL's warnings reached stderr at exit 0 (DecompressionBombWarning, the palette transparency warning,
   corrupt EXIF tags), and an image over PIL's bomb limit was "not a readable image header" or "not an
   image": pixels.opened is the one way an image is opened, and settles each.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import REPO, file_digests, send_json, tar_bytes, write_tar
from helpers.loopback import JsonServer
from helpers.tiers import fast_first
from helpers.workspace import SUMMARY, make_splits, snapshot
from helpers.workspace import write_params as write_repo_params
from scripts.lib.marks import MARKER, MARKER_TEXT

PROXIES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def run(argv: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` as a user runs it; loopback requests never go through a proxy."""
    env = {k: v for k, v in os.environ.items() if k not in PROXIES} | {"PYTHONPATH": str(REPO)}
    argv = [str(a) for a in argv]
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line a refused run ends with (after the command's own progress lines, if any)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
    return lines[0]


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- 1. caption checks before it pays


class CountingServer(JsonServer):
    """A vision chat server on loopback answering every request with one good caption, counting them."""

    def __init__(self):
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__()

    def answer(self, handler, body):
        with self.lock:
            self.requests += 1
        message = {"role": "assistant", "content": "A red square on a plain background, evenly lit."}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        send_json(handler, 200, {"object": "chat.completion", "model": body["model"], "choices": [choice]})


@pytest.fixture
def server():
    counting = CountingServer()
    yield counting
    counting.close()


def caption_params(root: Path, base_url: str, **overrides) -> None:
    entry = {"images": "images", "base_url": base_url, "api_key_env": None, "max_images": None}
    entry |= {"models": [{"model": "m1", "variant": "v1"}], "max_attempts": 1, "concurrency": 1, "timeout_s": 30.0}
    (root / "params.yaml").write_text(yaml.safe_dump({"caption": {"t": entry | overrides}}), encoding="utf-8")


def caption_images(root: Path) -> Path:
    """Three good images, one in a subfolder and one in a WebDataset shard."""
    images = root / "images"
    (images / "more").mkdir(parents=True)
    (images / "a.png").write_bytes(png())
    (images / "more" / "b.png").write_bytes(png((30, 30, 200)))
    write_tar(images / "shard-000000.tar", [("000001.png", png((30, 200, 30))), ("000001.txt", b"x\n")])
    return images


def _name_not_utf8(root: Path) -> tuple[Path, str]:
    path = Path(os.fsdecode(os.fsencode(root / "images") + b"/red\xff.png"))
    path.write_bytes(png())
    return path, "red\\xff.png"


def _folder_not_utf8(root: Path) -> tuple[Path, str]:
    folder = Path(os.fsdecode(os.fsencode(root / "images") + b"/d\xe9j\xe0"))  # Latin-1 "déjà"
    folder.mkdir()
    (folder / "c.png").write_bytes(png())
    return folder, "d\\xe9j\\xe0/c.png"


def _member_not_utf8(root: Path) -> tuple[Path, str]:
    shard = root / "images" / "shard-000001.tar"
    shard.write_bytes(tar_bytes([(os.fsdecode(b"x\xff.png"), png()), (os.fsdecode(b"x\xff.txt"), b"x\n")]))
    return shard, "shard-000001.tar!/x\\xff.png"


def _user_file_at_a_temp_name(root: Path) -> tuple[Path, str]:
    path = root / "out" / ".captions.parquet.tmp-new"
    path.parent.mkdir()
    path.write_text("my draft\n", encoding="utf-8")
    return path, ".captions.parquet.tmp-new"


def _user_file_at_a_lock_name(root: Path) -> tuple[Path, str]:
    path = root / "out" / ".report.json.tmp-lock"
    path.parent.mkdir()
    path.write_text("my notes\n", encoding="utf-8")
    return path, ".report.json.tmp-lock"


REFUSED_BEFORE_ANY_REQUEST = [
    pytest.param(_name_not_utf8, id="image-name-not-utf8"),
    pytest.param(_folder_not_utf8, id="folder-name-not-utf8"),
    pytest.param(_member_not_utf8, id="tar-member-name-not-utf8"),
    pytest.param(_user_file_at_a_temp_name, id="user-file-at-an-outputs-temp-name"),
    pytest.param(_user_file_at_a_lock_name, id="user-file-at-an-outputs-lock-name"),
]


@pytest.mark.parametrize("plant", REFUSED_BEFORE_ANY_REQUEST)
def test_caption_refuses_what_it_can_see_before_it_sends_a_request(tmp_path, server, plant):
    caption_images(tmp_path)
    caption_params(tmp_path, server.base_url)
    planted, named = plant(tmp_path)
    result = run(["caption", "t", "out"], tmp_path)
    assert named in one_error_line(result)
    assert server.requests == 0  # nothing paid for, nothing cached
    cache = tmp_path / "out" / "cache"
    assert not cache.exists() or not any(cache.iterdir())
    assert not (tmp_path / "out" / "captions.parquet").exists()
    # the harness sends requests: the same folder, the planted file moved away, is captioned
    shutil.rmtree(planted) if planted.is_dir() else planted.unlink()
    again = run(["caption", "t", "out"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert server.requests == len(pd.read_parquet(tmp_path / "out" / "captions.parquet")) >= 3


# ---------------------------------------------------------------- 2. sample-data replaces its own folder


def _written(root: Path) -> Path:
    assert run(["sample-data", "raw"], root).returncode == 0
    return root / "raw"


def _cloned(root: Path) -> Path:
    """data/raw as a clone has it: the committed bytes, the marker's mark not kept (git keeps no xattr)."""
    shutil.copytree(REPO / "data" / "raw", root / "raw", copy_function=shutil.copyfile)
    return root / "raw"


def _added(folder: Path) -> str:
    (folder / "notes.txt").write_text("my notes\n", encoding="utf-8")
    return "'notes.txt'"


def _source_added(folder: Path) -> str:
    (folder / "mine").mkdir()
    (folder / "mine" / "prompts.txt").write_text("my own prompt\n", encoding="utf-8")
    return "'mine/prompts.txt'"


def _edited(folder: Path) -> str:
    with (folder / "chatgpt" / "prompts.txt").open("a", encoding="utf-8") as f:
        f.write("my curated prompt\n")
    return "'chatgpt/prompts.txt'"


def _copied(folder: Path) -> str:
    """A `cp -a` copy of our folder (the marker's attribute too) put where the folder was."""
    shutil.copytree(folder, folder.with_name("copy"))  # copy2: extended attributes kept
    shutil.rmtree(folder)
    folder.with_name("copy").rename(folder)
    return "which this command did not write"


SAMPLE_FOLDERS = [
    pytest.param(_written, _added, id="own-folder-then-a-file-added"),
    pytest.param(_written, _edited, id="own-folder-then-a-file-edited"),
    pytest.param(_cloned, _source_added, id="cloned-data-raw-then-a-source-added"),
    pytest.param(_written, _copied, id="own-folder-then-replaced-by-a-copy"),
]


@pytest.mark.parametrize(("start", "change"), SAMPLE_FOLDERS)
def test_sample_data_replaces_its_own_folder_at_a_new_seed_never_a_users(tmp_path, start, change):
    from scripts.tools.sample_data import write_all

    folder = start(tmp_path)
    for seed in (5, 6):  # refused before: the folder could not be proved its own
        result = run(["sample-data", "raw", "--seed", seed], tmp_path)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        write_all(tmp_path / f"expected{seed}", seed)
        digests = file_digests(folder)
        assert digests.pop(MARKER) and (folder / MARKER).read_text(encoding="utf-8") == MARKER_TEXT
        assert digests == file_digests(tmp_path / f"expected{seed}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left
    named = change(folder)
    mine = snapshot(folder)
    result = run(["sample-data", "raw", "--seed", 7], tmp_path)
    assert named in one_error_line(result)
    assert snapshot(folder) == mine


# ---------------------------------------------------------------- 3. PIL's warnings are settled, not printed


def jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG whose header says width x height (over PIL's warning or error limit), its data 8x8."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def palette_png() -> bytes:
    """A palette PNG whose transparency is one byte per entry (PIL warns when it is converted to RGB)."""
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=b"\x00\x80\xff")
    return buffer.getvalue()


def corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block says 5 tags and holds one ("Corrupt EXIF data" when read)."""
    ifd = b"MM\x00\x2a\x00\x00\x00\x08\x00\x05" + struct.pack(">HHII", 0x0112, 3, 1, 6 << 16)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 30, 200)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + ifd)
    return buffer.getvalue()


def exif_tag_past_the_end_jpeg() -> bytes:
    """A JPEG whose EXIF tag points past the block's end ("Tag data larger than file")."""
    ifd = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + struct.pack(">HHII", 0x010E, 2, 1000, 26) + b"\x00" * 4
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 30, 200)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + ifd)
    return buffer.getvalue()


def released(root: Path, image: bytes, export) -> subprocess.CompletedProcess:
    """`release r` of a split whose image is `image` (its header check, its export, the contact sheet)."""
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_repo_params(root, releases={"r": {"components": components, "export": export}})
    make_splits(root, n=4)
    (root / "data" / "images" / "diffusiondb" / "img.png").write_bytes(image)
    return run(["release", "r", "data/splits", "data/releases/r"], root)


def dalle3_tool(root: Path, image: bytes, *options: str) -> subprocess.CompletedProcess:
    """The simpletuner tool over a DALL-E-3 shard (readers/dalle3.py: the image header) of one good sample
    and one whose image is `image`."""
    record = {"short_caption": "a fox in the snow", "width": 8, "height": 8}
    members = [("000.jpg", image), ("000.json", json.dumps(record | {"image_name": "a.jpg"}).encode())]
    members += [("001.png", png()), ("001.json", json.dumps(record | {"image_name": "b.png"}).encode())]
    write_tar(root / "dalle3" / "data-000000.tar", members)
    return run(["simpletuner", "dalle3", "st.parquet", *options], root)


WEBDATASET_JPG = {"format": "webdataset", "image_format": "jpg"}
BUCKETED = {"format": "bucketed", "base_resolution": 64, "divisible": 4, "on_error": "skip", "allow_empty": True}
QUIET = [
    # (what runs, over which image): exit 0 and stderr only the command's own lines
    pytest.param(lambda root: released(root, jpeg_claiming(10000, 9000), "imagefolder"), id="bomb-warning-release"),
    pytest.param(lambda root: released(root, palette_png(), WEBDATASET_JPG), id="palette-transparency-webdataset-jpg"),
    pytest.param(lambda root: released(root, palette_png(), BUCKETED), id="palette-transparency-bucketed"),
    pytest.param(lambda root: released(root, corrupt_exif_jpeg(), WEBDATASET_JPG), id="corrupt-exif-webdataset"),
    pytest.param(lambda root: released(root, exif_tag_past_the_end_jpeg(), BUCKETED), id="exif-tag-past-end-bucketed"),
    pytest.param(lambda root: released(root, corrupt_exif_jpeg(), "simpletuner"), id="corrupt-exif-simpletuner"),
    pytest.param(lambda root: dalle3_tool(root, jpeg_claiming(10000, 9000)), id="bomb-warning-reader-header"),
]


@pytest.mark.parametrize("command", fast_first(QUIET, keep=2))
def test_pil_warnings_never_reach_stderr(tmp_path, command):
    result = command(tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if not SUMMARY.match(line)] == [], result.stderr


def test_caption_opens_an_image_pil_warns_of_quietly(tmp_path, server):
    """max_image_pixels raised over PIL's warning limit: the user's cap decides, PIL's warning is not printed."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "wide.jpg").write_bytes(jpeg_claiming(10000, 9000))
    caption_params(tmp_path, server.base_url, max_image_pixels=1 << 28)
    result = run(["caption", "t", "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and server.requests == 1, result.stderr


def ingested(root: Path, image: bytes, on_error: str) -> subprocess.CompletedProcess:
    """`ingest s` of a DALL-E-3 source (readers/dalle3.py: the image header) whose one shard's first
    sample's image is `image`."""
    record = {"short_caption": "a fox in the snow", "width": 8, "height": 8}
    members = [("000.jpg", image), ("000.json", json.dumps(record | {"image_name": "a.jpg"}).encode())]
    members += [("001.png", png()), ("001.json", json.dumps(record | {"image_name": "b.png"}).encode())]
    write_tar(root / "raw" / "data-000000.tar", members)
    write_repo_params(root, sources={"s": {"kind": "dalle3", "path": "raw", "on_error": on_error}})
    return run(["ingest", "s", "s.parquet"], root)


BOMB = jpeg_claiming(20000, 10000)  # over PIL's DecompressionBombError limit (2 x 89,478,485 pixels)
BOMBS = [
    # (what runs over BOMB, the file its line names)
    pytest.param(lambda root: released(root, BOMB, "imagefolder"), "img.png", id="release-export-header-check"),
    pytest.param(lambda root: dalle3_tool(root, BOMB, "--on-error", "fail"), "000.jpg", id="simpletuner-tool-reader"),
    pytest.param(lambda root: ingested(root, BOMB, "fail"), "000.jpg", id="ingest-dalle3-reader"),
]


@pytest.mark.parametrize(("command", "named"), BOMBS)
def test_an_image_over_pils_bomb_limit_is_one_line_naming_it(tmp_path, command, named):
    """It was "not an image ... replaced after ingest" (release) or "not a readable image header"."""
    line = one_error_line(command(tmp_path))
    assert named in line and "200,000,000 pixels, over PIL's decompression bomb limit" in line, line


def _tool_counts(root: Path) -> dict:
    result = dalle3_tool(root, BOMB)
    assert result.returncode == 0, result.stderr
    assert pd.read_parquet(root / "st.parquet")["filename"].tolist() == ["b.png"]
    return {"image_too_large": 1} if "image_too_large 1" in result.stdout else {"stdout": result.stdout}


def _ingest_counts(root: Path) -> dict:
    result = ingested(root, BOMB, "skip")
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    return json.loads((root / "s.report.json").read_text(encoding="utf-8"))["skipped"]


def _caption_counts(root: Path) -> dict:
    """caption with max_image_pixels at its highest (268M, over PIL's limit): PIL's limit counts it too."""
    (root / "images").mkdir()
    (root / "images" / "huge.jpg").write_bytes(BOMB)
    (root / "images" / "red.png").write_bytes(png())
    counting = CountingServer()
    try:
        caption_params(root, counting.base_url, max_image_pixels=1 << 28)
        result = run(["caption", "t", "out"], root)
    finally:
        counting.close()
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    assert counting.requests == 1
    return json.loads((root / "out" / "report.json").read_text(encoding="utf-8"))["images"]["skipped"]


@pytest.mark.parametrize("counts", [_tool_counts, _ingest_counts, _caption_counts])
def test_an_image_over_pils_bomb_limit_is_counted_too_large_not_unreadable(tmp_path, counts):
    assert counts(tmp_path) == {"image_too_large": 1}
