"""Round 40c: caption@S given hostile image files (bytes sent as they are, never decoded).

1. A JPEG, PNG or GIF cut short (a scan without its end of image, a PNG without IEND, a GIF without its
   trailer) was sent: the fake server took it, a real one answers HTTP 400 and the stage failed for every
   image. caption_images.check_whole walks the file's segments, chunks or blocks (never its pixels) to the
   end of image: the file is skipped and counted `truncated_image`.
2. A JPEG of thousands of segments before its pixels (APPn, COM): PIL kept each in a list while reading the
   header (a 16 MB file of 4 million segments: 600 MB and 24 s). Over MAX_JPEG_SEGMENTS it is skipped as
   `bad_image` before PIL reads it.
Held (probed, no change): a 60000x60000 PNG bomb (image_too_large, 156 MB), a 10,000-frame GIF (sent), a
CMYK JPEG, a 16-bit PNG, an EXIF-6 JPEG (sent byte for byte, its size recorded turned), a 100 MB zTXt/iTXt
PNG (bad_image), JPEG/SVG/HTML/zip/0-byte named .png (sent as JPEG, or bad_image).
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from test_caption import VisionServer, image_bytes, run

pytestmark = pytest.mark.usefixtures("no_proxy")


@pytest.fixture
def server():
    vision = VisionServer()
    yield vision
    vision.close()


def _noise(fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image = Image.effect_noise((96, 64), 60).convert("RGB")
    image = image.convert("P") if fmt == "GIF" else image
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def _png_without_iend() -> bytes:
    data = image_bytes("red")
    return data[: data.rindex(b"IEND") - 4]


def _flood(kind: bytes, count: int) -> bytes:
    """A valid JPEG with `count` empty segments of marker `kind` after its SOI."""
    data = image_bytes("red", "JPEG")
    return data[:2] + (b"\xff" + kind + struct.pack(">H", 2)) * count + data[2:]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


CUT = {
    "scan cut.jpg": lambda: _cut(_noise("JPEG"), 0.6),
    "progressive cut.jpg": lambda: _cut(_noise("JPEG", progressive=True), 0.7),
    "idat cut.png": lambda: _cut(_noise("PNG"), 0.6),
    "no iend.png": _png_without_iend,
    "frame cut.gif": lambda: _cut(_noise("GIF"), 0.6),
}
FLOOD = {
    "app5 flood.jpg": lambda: _flood(b"\xe5", 5000),
    "comment flood.jpg": lambda: _flood(b"\xfe", 5000),
    "app1 flood.jpg": lambda: _flood(b"\xe1", 5000),
}


def _caption_one(tmp_path: Path, server: VisionServer, name: str, data: bytes) -> dict:
    images = tmp_path / "images"
    images.mkdir()
    (images / "ok.png").write_bytes(image_bytes("red"))
    (images / name).write_bytes(data)
    return run(tmp_path, server, models=[{"model": "m1"}])


@pytest.mark.parametrize("name", CUT)
def test_a_cut_image_is_skipped_and_counted_not_sent(tmp_path, server, name):
    report = _caption_one(tmp_path, server, name, CUT[name]())
    assert report["images"]["skipped"] == {"truncated_image": 1}
    assert report["images"]["captioned"] == 1 and len(server.received) == 1


@pytest.mark.parametrize("name", FLOOD)
def test_a_flood_of_jpeg_segments_is_skipped_before_pil_reads_it(tmp_path, server, name):
    report = _caption_one(tmp_path, server, name, FLOOD[name]())
    assert report["images"]["skipped"] == {"bad_image": 1}
    assert len(server.received) == 1


def _motion_photo() -> bytes:  # a JPEG with a video after its end of image, as phones write
    return _noise("JPEG") + b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64


def _exif6() -> bytes:
    image = Image.new("RGB", (40, 30), (220, 30, 30))
    exif = image.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


WHOLE = {  # held: complete files are sent byte for byte
    "motion.jpg": _motion_photo,
    "progressive.jpg": lambda: _noise("JPEG", progressive=True),
    "frames.gif": lambda: _noise("GIF", save_all=True, append_images=[Image.new("P", (96, 64), 3)] * 3),
    "orientation 6.jpg": _exif6,
    "text chunk.png": lambda: (
        image_bytes("red")[:33] + _chunk(b"tEXt", b"k\x00" + b"v" * 5000) + image_bytes("red")[33:]
    ),
    "many segments.jpg": lambda: _flood(b"\xe5", 4000),
}


@pytest.mark.parametrize("name", WHOLE)
def test_a_whole_image_is_sent_byte_for_byte(tmp_path, server, name):
    data = WHOLE[name]()
    report = _caption_one(tmp_path, server, name, data)
    assert report["images"]["skipped"] == {} and len(server.received) == 2
    sent = [r["body"]["messages"][-1]["content"][1]["image_url"]["url"] for r in server.received]
    assert any(url.endswith(base64.b64encode(data).decode("ascii")) for url in sent)
