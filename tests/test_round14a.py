"""Round 14a's breaks, one table per class (every row failed before its fix), on real files and the real
commands:

1. A UTF-8 byte order mark before a JSON document (Notepad and other Windows tools write one; RFC 8259 lets a
   parser ignore it) was `malformed json` at every reader: a DALL-E-3 shard's per-image json and a bucketed
   export's sample json were skipped, its manifest.json and a DiffusionDB part's listing stopped the stage.
   Now nesting.loads_json, the one JSON parser of files, reads past it: the rows are those of the file
   without it.
2. An image whose EXIF orientation turns it a quarter (5 to 8: a phone's portrait photo, stored 4032x3024,
   shown 3024x4032) recorded its stored size: a release's simpletuner.parquet and multidatabackend.json,
   caption@S's captions.parquet, and every reader's width and height (pixels.image_size). Every writer and trainer shows it upright
   (exif_transpose), so the size is now the one shown (pixels.shown_size).
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageOps

from helpers import cli, tar_bytes
from helpers.workspace import ingest_source, write_files

BOM = b"\xef\xbb\xbf"


def picture(image_format: str = "PNG", orientation: int | None = None, size=(40, 20), exif: bytes | None = None):
    """A real image stored `size`, with an EXIF orientation (or the raw EXIF block `exif`) when given."""
    buffer = io.BytesIO()
    options = {}
    if orientation is not None:
        block = Image.Exif()
        block[0x0112] = orientation
        options["exif"] = block.tobytes()
    if exif is not None:
        options["exif"] = exif
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def shown(data: bytes) -> tuple[int, int]:
    """The size PIL's exif_transpose (every writer's `upright`, a trainer's loader) shows the image at."""
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.exif_transpose(image).size


# ---------------------------------------------------------------- 1. a byte order mark before JSON
def dalle3_files(bom: bytes) -> dict[str, bytes]:
    record = {"short_caption": "a red fox", "width": 40, "height": 20, "image_name": "fox.png"}
    return {"data-000000.tar": tar_bytes([("0000.png", picture()), ("0000.json", bom + json.dumps(record).encode())])}


def bucketed_files(manifest_bom: bytes = b"", sample_bom: bytes = b"") -> dict[str, bytes]:
    meta = json.dumps({"target_w": 512, "target_h": 512, "bucket_id": "p1"}).encode()
    shard = tar_bytes([("k1.png", picture()), ("k1.txt", b"a red fox\n"), ("k1.json", sample_bom + meta)])
    manifest = json.dumps({"format": "bucketed_shards_v1", "buckets": {"p1": {"shards": ["buckets/p1/s.tar"]}}})
    return {"manifest.json": manifest_bom + manifest.encode(), "buckets/p1/s.tar": shard}


def diffusiondb_files(bom: bytes) -> dict[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        listing = {"a.png": {"p": "a red fox", "se": 1, "c": 7.0, "st": 50, "sa": "k_lms"}}
        zf.writestr("part-000001.json", bom + json.dumps(listing).encode())
        zf.writestr("a.png", picture())
    return {"part-000001.zip": buffer.getvalue()}


DIFFUSIONDB = {"kind": "diffusiondb", "read": "parts", "part_ids": [1], "images": "data/images/x"}
BOM_SOURCES = {  # source, files with or without the mark -> the same rows either way
    "a DALL-E-3 shard's per-image json": ({"kind": "dalle3"}, dalle3_files),
    "a bucketed export's manifest.json": ({"kind": "bucketed_webdataset"}, lambda bom: bucketed_files(bom, b"")),
    "a bucketed sample's json": ({"kind": "bucketed_webdataset"}, lambda bom: bucketed_files(b"", bom)),
    "a DiffusionDB part's listing": (DIFFUSIONDB, diffusiondb_files),
}


@pytest.mark.parametrize("case", BOM_SOURCES)
def test_a_byte_order_mark_before_a_sources_json_is_read_past(tmp_path, monkeypatch, capfd, case):
    """The sample was skipped as `bad_json` (malformed json: Unexpected UTF-8 BOM), or the stage stopped."""
    source, files = BOM_SOURCES[case]
    result, plain = ingest_source(tmp_path, monkeypatch, capfd, source, files(b""))
    assert result.returncode == 0 and plain and plain[0]["prompt"] == "a red fox", result.stderr
    result, marked = ingest_source(tmp_path, monkeypatch, capfd, source, files(BOM))
    assert result.returncode == 0, result.stderr
    assert marked == plain


def simpletuner_tool(tmp_path, monkeypatch, capfd, bom: bytes) -> bytes:
    write_files(tmp_path / "raw", dalle3_files(bom))
    result = cli(["simpletuner", "raw", "st.parquet", "--on-error", "fail"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    return (tmp_path / "st.parquet").read_bytes()


def simpletuner_config(tmp_path, monkeypatch, capfd, bom: bytes) -> bytes:
    from scripts.lib.simpletuner import backend_config

    entries = backend_config("t2i-train", "train", "train/simpletuner.parquet", "cache")
    (tmp_path / "r1" / "train").mkdir(parents=True, exist_ok=True)
    (tmp_path / "r1" / "train" / "multidatabackend.json").write_bytes(bom + json.dumps(entries).encode())
    result = cli(["simpletuner-config", "r1/train", "out.json", "--cache-dir", "c"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    return (tmp_path / "out.json").read_bytes()


def loads_json(tmp_path, monkeypatch, capfd, bom: bytes) -> bytes:
    from scripts.lib.nesting import loads_json

    document = bom + '{"a": ["café", 1]}'.encode()
    return repr([loads_json(document), loads_json(bytearray(document)), loads_json(document.decode())]).encode()


BOM_FILES = {  # what reads a JSON file -> its output from the file with and without the mark
    "the simpletuner tool's DALL-E-3 json": simpletuner_tool,
    "simpletuner-config's multidatabackend.json": simpletuner_config,
    "loads_json of bytes and of text": loads_json,
}


@pytest.mark.parametrize("case", BOM_FILES)
def test_a_byte_order_mark_before_json_changes_no_output(tmp_path, monkeypatch, capfd, case):
    """The simpletuner tool skipped every record as bad_json; simpletuner-config said 'not valid JSON'."""
    run = BOM_FILES[case]
    plain = run(tmp_path, monkeypatch, capfd, b"")
    assert run(tmp_path, monkeypatch, capfd, BOM) == plain


# ---------------------------------------------------------------- 2. the size an image is shown at
BROKEN_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"  # an IFD of 65535 entries, cut after its count


def png_exif_before_a_long_chunk() -> bytes:
    """A PNG whose eXIf (orientation 6) comes before a 100 kB text chunk: in a 64 KiB head, cut before IDAT."""
    import zlib

    data = picture("PNG", 6)
    at = data.index(b"IDAT") - 4
    text = b"comment\x00" + b"x" * 100_000
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    return data[:at] + chunk + data[at:]


SIZES = [  # stored 40x20 -> the size recorded: turned by orientations 5 to 8, by no other, nor by a broken block
    pytest.param(picture("JPEG", 6), (20, 40), id="jpeg-orientation-6"),
    pytest.param(picture("JPEG", 8), (20, 40), id="jpeg-orientation-8"),
    pytest.param(picture("JPEG", 5), (20, 40), id="jpeg-orientation-5"),
    pytest.param(picture("JPEG", 7), (20, 40), id="jpeg-orientation-7"),
    pytest.param(picture("PNG", 6), (20, 40), id="png-exif-6"),
    pytest.param(picture("WEBP", 8), (20, 40), id="webp-orientation-8"),
    pytest.param(picture("JPEG", 3), (40, 20), id="jpeg-orientation-3"),
    pytest.param(picture("JPEG", 1), (40, 20), id="jpeg-orientation-1"),
    pytest.param(picture("JPEG"), (40, 20), id="jpeg-no-exif"),
    pytest.param(picture("JPEG", exif=BROKEN_EXIF), (40, 20), id="jpeg-broken-exif"),
    pytest.param(picture("PNG", exif=BROKEN_EXIF[6:]), (40, 20), id="png-broken-exif"),
]


@pytest.mark.parametrize(("data", "size"), SIZES)
def test_shown_size_is_the_size_exif_transpose_shows(data, size):
    """The helper every size goes through: from the header only, a broken EXIF block no orientation."""
    from scripts.lib.pixels import image_size, shown_size

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's open says "Corrupt EXIF data" itself
        image = Image.open(io.BytesIO(data))
    with image, warnings.catch_warnings():
        warnings.simplefilter("error")  # would be a line on a stage's stderr, per reader
        assert shown_size(image) == size
        assert image_size(data) == image_size(data[:65536]) == size
    if BROKEN_EXIF[6:] not in data:  # PIL's own transpose agrees (it raises on the broken block)
        assert shown(data) == size


def test_a_png_head_cut_before_its_pixels_keeps_its_orientation():
    """A reader's 64 KiB head of this PNG holds its eXIf but not its pixels: PIL's PNG parser refuses it."""
    from scripts.lib.pixels import image_size

    data = png_exif_before_a_long_chunk()
    assert data.index(b"eXIf") < 65536 < data.index(b"IDAT") and shown(data) == (20, 40)
    assert image_size(data[:65536]) == (20, 40)


RELEASE_IMAGES = [  # (file extension, stored bytes): every one stored 40x20 and shown 20x40
    pytest.param(".jpg", picture("JPEG", 6), id="jpeg-orientation-6"),
    pytest.param(".jpg", picture("JPEG", 8), id="jpeg-orientation-8"),
    pytest.param(".jpg", picture("JPEG", 5), id="jpeg-orientation-5"),
    pytest.param(".png", picture("PNG", 7), id="png-exif-7"),
    pytest.param(".webp", picture("WEBP", 6), id="webp-orientation-6"),
]


@pytest.mark.parametrize(("ext", "data"), RELEASE_IMAGES)
def test_a_simpletuner_release_records_the_size_an_image_is_shown_at(tmp_path, monkeypatch, ext, data):
    """simpletuner.parquet said 40x20 for a picture SimpleTuner loads (exif_transpose) as 20x40; the backend's
    resolution then fitted the wrong edges."""
    from scripts.lib.export import write_split

    monkeypatch.chdir(tmp_path)
    (tmp_path / f"in{ext}").write_bytes(data)
    (tmp_path / f"square{ext}").write_bytes(picture(ext.lstrip(".").replace("jpg", "jpeg").upper(), size=(30, 30)))
    rows = pd.DataFrame(
        {"id": ["a1", "a2"], "source": ["s", "s"], "text": ["a fox", "a cat"], "orig_text": ["a fox", "a cat"]}
        | {"image": [f"in{ext}", f"square{ext}"], "width": [20, 30], "height": [40, 30]}
    )
    write_split(rows, tmp_path / "train", "simpletuner", {})
    table = pd.read_parquet(tmp_path / "train" / "simpletuner.parquet")
    placed = table.set_index("filename").loc[f"images/s/a1{ext}"]
    assert (placed.width, placed.height) == shown((tmp_path / "train" / f"images/s/a1{ext}").read_bytes()) == (20, 40)
    image_entry = json.loads((tmp_path / "train" / "multidatabackend.json").read_text())[0]
    assert (image_entry["resolution"], image_entry["maximum_image_size"]) == (20, 512)  # 20: the shown short edge


def reader_files(kind: str, data: bytes) -> tuple[dict, dict[str, bytes]]:
    """A source of `kind` whose one row's image is `data` (its extension from its bytes)."""
    ext = "png" if data.startswith(b"\x89PNG") else "jpg"
    if kind == "kaggle_sd2":
        return {"kind": "kaggle_sd2"}, {"gpt_generated_prompts.csv": b"prompt\na red fox\n", "0.png": data}
    if kind == "gustavosta":
        return {"kind": "gustavosta", "format": "kaggle_csv"}, {
            "train.csv": f"Prompt,image_path\na red fox,i/0.{ext}\n".encode(),
            f"i/0.{ext}": data,
        }
    if kind == "diffusiondb":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("part-000001.json", json.dumps({f"a.{ext}": {"p": "a red fox", "se": 1}}))
            zf.writestr(f"a.{ext}", data)
        return DIFFUSIONDB, {"part-000001.zip": buffer.getvalue()}
    record = {"short_caption": "a red fox", "width": 20, "height": 40, "image_name": f"fox.{ext}"}
    if kind == "dalle3":
        return {"kind": "dalle3"}, {"d.tar": tar_bytes([(f"0.{ext}", data), ("0.json", json.dumps(record).encode())])}
    meta = json.dumps({"target_w": 512, "target_h": 512}).encode()
    shard = tar_bytes([(f"k.{ext}", data), ("k.txt", b"a red fox\n"), ("k.json", meta)])
    return {"kind": "bucketed_webdataset"}, {
        "manifest.json": b'{"format": "bucketed_shards_v1"}',
        "buckets/p/shard-0.tar": shard,
    }


READERS = [  # (source kind, the image, where its measured size is recorded)
    pytest.param("kaggle_sd2", picture("PNG", 6), "row", id="kaggle-sd2-png-exif-6"),
    pytest.param("gustavosta", picture("JPEG", 8), "row", id="gustavosta-jpeg-8"),
    pytest.param("diffusiondb", picture("JPEG", 5), "row", id="diffusiondb-part-jpeg-5"),
    pytest.param("diffusiondb", picture("PNG", 6), "row", id="diffusiondb-part-png-exif-6"),
    pytest.param("dalle3", picture("JPEG", 6), "meta", id="dalle3-jpeg-6"),
    pytest.param("dalle3", picture("PNG", 7), "meta", id="dalle3-png-exif-7"),
    pytest.param("bucketed_webdataset", picture("JPEG", 6), "meta", id="bucketed-jpeg-6"),
]


@pytest.mark.parametrize(("kind", "data", "where"), READERS)
def test_every_reader_records_the_size_an_image_is_shown_at(tmp_path, monkeypatch, capfd, kind, data, where):
    """The row's width and height (or its meta `pixels`, the image's measured size where the source's json
    names the size) were the stored 40x20 of a picture every writer and trainer shows 20x40."""
    source, files = reader_files(kind, data)
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0 and rows, result.stderr
    recorded = (rows[0]["width"], rows[0]["height"]) if where == "row" else tuple(json.loads(rows[0]["meta"])["pixels"])
    assert recorded == shown(data) == (20, 40)


def png_exif_after_a_long_chunk() -> bytes:
    """A PNG (stored 40x20, orientation 6) whose eXIf comes after a 100 kB text chunk, all before its pixels."""
    import zlib

    data = picture("PNG", 6)
    at = data.index(b"IHDR") + 4 + 13 + 4  # after IHDR's data and CRC: the first chunk after it
    text = b"comment\x00" + b"x" * 100_000
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    return data[:at] + chunk + data[at:]


@pytest.mark.parametrize("kind", ["kaggle_sd2", "diffusiondb", "dalle3"])
def test_a_pngs_orientation_after_a_long_chunk_is_read(tmp_path, monkeypatch, capfd, kind):
    """Each reader read a 64 KiB head: a PNG whose eXIf sits past it (after an ICC profile or text chunk,
    still before its pixels) was recorded at its stored 40x20; the head is now the chunks that decide."""
    data = png_exif_after_a_long_chunk()
    assert data.index(b"eXIf") > 65536 and shown(data) == (20, 40)
    source, files = reader_files(kind, data)
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0 and rows, result.stderr
    recorded = (
        (rows[0]["width"], rows[0]["height"]) if kind != "dalle3" else tuple(json.loads(rows[0]["meta"])["pixels"])
    )
    assert recorded == (20, 40)


@pytest.mark.parametrize(
    ("data", "most"),
    [
        pytest.param(png_exif_after_a_long_chunk(), 200, id="png-text-chunk-skipped"),
        pytest.param(png_exif_before_a_long_chunk(), 200, id="png-stops-at-its-pixels"),
        pytest.param(picture("JPEG", 6) + b"\0" * 100_000, 65536, id="jpeg-first-64-kib"),
    ],
)
def test_an_image_head_reads_only_the_bytes_that_decide_its_size(data, most):
    """pixels.image_head: a PNG's signature, IHDR, eXIf and IDAT header (its other chunks never read);
    another format's first 64 KiB. Every reader gives it its own read_at."""
    from scripts.lib.pixels import image_head, image_size

    read: list[int] = []

    def read_at(offset: int, count: int) -> bytes:
        read.append(len(data[offset : offset + count]))
        return data[offset : offset + count]

    head = image_head(read_at)
    assert len(head) <= sum(read) <= most and image_size(head) == shown(data) == (20, 40)


CAPTIONED = [  # (the images folder's files, the image captioned): caption@S's width and height of each
    pytest.param({"a.jpg": picture("JPEG", 6)}, picture("JPEG", 6), id="jpeg-file-orientation-6"),
    pytest.param({"a.png": picture("PNG", 8)}, picture("PNG", 8), id="png-file-exif-8"),
    pytest.param(
        {"s.tar": tar_bytes([("k.jpg", picture("JPEG", 5)), ("k.txt", b"a fox\n")])},
        picture("JPEG", 5),
        id="shard-jpeg-orientation-5",
    ),
]


@pytest.mark.parametrize(("files", "data"), CAPTIONED)
def test_caption_records_the_size_an_image_is_shown_at(tmp_path, monkeypatch, files, data):
    """captions.parquet's width and height (caption_images.inspect_image) were the stored 40x20."""
    from scripts.lib.caption_images import inspect_image, list_images
    from scripts.lib.params import CaptionEntry

    monkeypatch.chdir(tmp_path)
    write_files(tmp_path / "images", files)
    (image,), _ = list_images(Path("images"))
    info = inspect_image(image, CaptionEntry(images="images"))
    assert (info.width, info.height) == shown(data) == (20, 40)
