"""Round 15a's breaks, one table per class (every row failed before its fix), on real files and the real
commands:

1. A GIF's size was read from its logical screen alone (pixels.image_size). A frame may reach past the
   screen its header declares, and PIL then decodes the frame's whole extent: a GIF declaring 1x1 that
   holds a 7000x7000 frame passed the pixel cap (max_image_pixels) and was recorded as 1x1. Now the size
   is the screen grown to hold the first frame, as PIL decodes it (pixels.gif_shown_size).
2. A DALL-E-3 json's `image_name` whose parts each fit NAME_MAX but whose whole path is longer than the
   kernel takes (25 folders of 200 bytes) stopped the simpletuner tool at the write, even under
   `--on-error skip`: `dd: cannot write (File name too long)`, naming neither shard nor sample, every
   other record lost. Now a name over 1024 bytes is a bad record (`bad_image_name`), named and skipped.
3. The bucketed layout with `too_small_policy: upsample` cover-resized a 1x40000 image to 256x10240000
   (2.6G pixels, 31 GB of float32) to crop its 256x1024 bucket from it: the allocation failed in a
   traceback, or took the machine. A resize past the pixel cap is now the image's encode error (counted
   under `on_error: skip`, one line naming it under `fail`).
4. `publish` read a parquet-layout release's part whole once per row: quadratic in its rows.
5. An image name from data in the folder `.t2i-output/` (the name of an output folder's own mark) made the
   simpletuner tool's folders unmarkable at the rename: every record lost, the config left beside no parquet.
6. The readers took an image's size from its first 64 KiB: a JPEG or WebP whose header runs past them (a
   200 KB ICC profile, a print workflow's) was `bad_image`, a valid image refused (the stage stopped, or its
   row dropped). The head now grows while the header runs past it (readers/base.head_pixels).
7. A release kept the member index of 8 source tar shards: its rows, in id order, hop shards, and past 8 every
   image read walked its whole shard again. A zip (a DiffusionDB part) was opened, its directory parsed, for
   each member read: quadratic in its members.
8. PIL opened an image by its bytes in any of some forty formats, whatever its name: an EPS named 0.png was
   ingested (decoding it runs Ghostscript where installed). pixels.opened takes the formats of
   safe_paths.IMAGE_EXTENSIONS only (pixels.FORMATS).
9. commit_together closed a command's atomic_paths in turn, each renaming its output in as it closed: one whose
   folder mark then failed (a disk full just then) left those before it in place. Now all are finished first,
   then renamed in by replace_together, all or none.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import cli, tar_bytes
from helpers.repos import REPO
from helpers.workspace import ingest_source, write_files
from scripts.lib import tables


def gif(screen: tuple[int, int], frame: tuple[int, int], at: tuple[int, int] = (0, 0)) -> bytes:
    """A real 2x2 GIF whose header then claims a logical screen `screen` and a first frame of `frame` at `at`."""
    buffer = io.BytesIO()
    Image.new("P", (2, 2)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", *screen)
    descriptor = data.index(b",", 13)
    data[descriptor + 1 : descriptor + 9] = struct.pack("<HHHH", *at, *frame)
    return bytes(data)


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def diffusiondb_part(image: bytes) -> dict[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("part-000001.json", json.dumps({"a.gif": {"p": "a red fox"}}))
        zf.writestr("a.gif", image)
    return {"part-000001.zip": buffer.getvalue()}


DIFFUSIONDB = {"kind": "diffusiondb", "read": "parts", "part_ids": [1], "images": "data/images/x", "on_error": "fail"}
KAGGLE = {"kind": "kaggle_sd2", "csv_files": ["gpt_generated_prompts.csv"], "on_error": "fail"}
GUSTAVOSTA = {"kind": "gustavosta", "format": "kaggle_csv", "on_error": "fail"}
BOMB = gif((1, 1), (7000, 7000))  # 49M pixels: over the 40M cap
WIDE = gif((1, 1), (30, 20), at=(100, 50))  # decoded 130x70
GIFS = [  # (source, its files) -> the size recorded, or None: refused over the pixel cap
    pytest.param(DIFFUSIONDB, diffusiondb_part(gif((1, 1), (30, 20))), (30, 20), id="zip-member-frame-past-screen"),
    pytest.param(DIFFUSIONDB, diffusiondb_part(BOMB), None, id="zip-member-over-the-cap"),
    pytest.param(
        KAGGLE,
        {"gpt_generated_prompts.csv": b'prompt\n"a red fox"\n', "0.png": WIDE},
        (130, 70),
        id="kaggle-png-holding-a-gif-frame-at-an-offset",
    ),
    pytest.param(
        KAGGLE, {"gpt_generated_prompts.csv": b'prompt\n"a red fox"\n', "0.png": BOMB}, None, id="kaggle-over-the-cap"
    ),
    pytest.param(
        GUSTAVOSTA,
        {"train.csv": b'Prompt,image_path\n"a red fox",i/a.gif\n', "i/a.gif": BOMB},
        None,
        id="gustavosta-image-path-over-the-cap",
    ),
]


@pytest.mark.parametrize(("source", "files", "size"), GIFS)
def test_a_gifs_size_is_the_size_pil_decodes(tmp_path, monkeypatch, capfd, source, files, size):
    """Recorded 1x1 before (the logical screen), the 49M-pixel frame let past the 40M cap at exit 0."""
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    if size is None:
        assert result.returncode == 2 and rows is None, result.stderr
        assert "7000x7000 pixels exceeds the cap of 40000000" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert rows is not None and (rows[0]["width"], rows[0]["height"]) == size


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(gif((1, 1), (30, 20)), id="frame-past-screen"),
        pytest.param(gif((1, 1), (30, 20), at=(100, 50)), id="frame-at-an-offset"),
        pytest.param(gif((5, 400), (30, 20)), id="frame-wider-screen-taller"),
    ],
)
def test_image_size_of_a_gif_is_its_decoded_size(data):
    from scripts.lib.pixels import image_size

    assert image_size(data) == decoded_size(data) != struct.unpack("<HH", data[6:10])


# ---------------------------------------------------------------- 2. an image_name too long a path to write
def dalle3_shard(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, "PNG")
    members = []
    for number, name in enumerate(names):
        record = {"short_caption": "a red fox", "width": 4, "height": 4, "image_name": name}
        members += [(f"{number:04d}.png", buffer.getvalue()), (f"{number:04d}.json", json.dumps(record).encode())]
    return tar_bytes(members)


LONG_NAMES = [  # every part within NAME_MAX (255 bytes), the whole past what the kernel opens
    pytest.param("/".join(["d" * 200] * 25) + "/x.png", id="25-folders-of-200-bytes"),
    pytest.param("/".join(["a"] * 2100) + "/x.png", id="2100-one-letter-folders"),
    pytest.param("/".join(["é" * 120] * 20) + "/x.jpg", id="20-folders-of-240-utf8-bytes"),
]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_an_image_name_too_long_to_write_is_a_skipped_record(tmp_path, monkeypatch, capfd, name):
    """The run stopped at the write (exit 2, `dd: cannot write (File name too long)`), the good record lost."""
    write_files(tmp_path / "raw", {"data-000000.tar": dalle3_shard(["fox.png", name])})
    argv = ["simpletuner", "raw", "st.parquet", "--data-dir", "dd", "--on-error", "skip"]
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "st.parquet").column("filename").to_pylist() == ["fox.png"]
    assert (tmp_path / "dd" / "fox.png").is_file() and (tmp_path / "dd" / "fox.txt").read_text() == "a red fox"
    result = cli([*argv[:-1], "fail"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert "raw/data-000000.tar: sample '0001': image_name" in result.stderr and "over 1024" in result.stderr


# ---------------------------------------------------------------- 5. a name in the folder of an output's mark
MARKER_NAMES = [  # an image_name in a folder named as the output folder's own mark, and the folders written
    pytest.param(".t2i-output/x.png", ["--data-dir", "dd"], id="data-dir"),
    pytest.param(".t2i-output/a/b.jpg", ["--txt-dir", "tt"], id="txt-dir"),
    pytest.param(".t2i-output/x.webp", ["--data-dir", "dd", "--txt-dir", "tt"], id="both"),
]


@pytest.mark.parametrize(("name", "folders"), MARKER_NAMES)
def test_an_image_name_in_the_marks_folder_is_a_skipped_record(tmp_path, monkeypatch, capfd, name, folders):
    """The mark failed as the folder was renamed in (`dd: cannot write (Is a directory)`, naming no record), every
    record lost, and multidatabackend.json, renamed in first, left without the parquet it points at."""
    write_files(tmp_path / "raw", {"data-000000.tar": dalle3_shard(["fox.png", name])})
    result = cli(["simpletuner", "raw", "st.parquet", *folders], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "st.parquet").column("filename").to_pylist() == ["fox.png"]
    for folder in folders[1::2]:
        expected = {".t2i-output", "fox.txt"} | ({"fox.png"} if folder == "dd" else set())
        assert {p.name for p in (tmp_path / folder).iterdir()} == expected
        assert (tmp_path / folder / ".t2i-output").is_file()
    result = cli(["simpletuner", "raw", "st2.parquet", *folders, "--on-error", "fail"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and "sample '0001': image_name '.t2i-output/" in result.stderr


# ---------------------------------------------------------------- 3. an upsample past the pixel cap
EXPORT = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))  # the machine is not the test's to take
import pandas as pd, torch
from pathlib import Path
from scripts.lib.errors import DataError
from scripts.lib.export import export_options, write_split
torch.set_num_threads(1)
rows = pd.DataFrame({"id": ["i0", "i1"], "source": "s", "text": "a red fox", "image": ["thin.png", "fine.png"]})
for on_error in ("skip", "fail"):  # the summary of a skipping export, then the line of a failing one
    spec = {"format": "bucketed", "too_small_policy": "upsample", "on_error": on_error}
    try:
        print(json.dumps(write_split(rows.assign(orig_text=rows.text), Path(on_error), *export_options(spec, "t"))))
    except DataError as exc:
        sys.exit(print(f"error: {exc}", file=sys.stderr) or 2)
"""
THIN = [  # each an image of a few thousand pixels that the cover-resize blows up past a billion
    pytest.param((1, 40000), id="1x40000"),
    pytest.param((40000, 1), id="40000x1"),
    pytest.param((2, 9000), id="2x9000"),
]


@pytest.mark.parametrize("size", THIN)
def test_an_upsample_past_the_pixel_cap_is_an_encode_error(tmp_path, size):
    """A MemoryError or torch's 'DefaultCPUAllocator: not enough memory' traceback before, or the OOM killer."""
    Image.new("RGB", size, (200, 30, 30)).save(tmp_path / "thin.png")
    Image.new("RGB", (64, 64), (30, 200, 30)).save(tmp_path / "fine.png")

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", EXPORT]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["encode_errors"] == 1 and summary["images_exported"] == 1
    assert "thin.png: cannot encode JPEG" in result.stderr and "over the cap of 40000000" in result.stderr


# ---------------------------------------------------------------- 4. publish of a parquet release
def parquet_release(root, rows: int, shard_size: int):
    """root/ with this repo's params.yaml and data/releases/v2/, a release in the parquet layout (its images
    embedded in `part-*.parquet`, rows.parquet pointing into them) of `rows` train rows."""
    import pandas as pd

    from scripts.lib.export import export_options, write_rows_table, write_split

    release, images = root / "data" / "releases" / "v2", root / "images"
    images.mkdir(parents=True)
    (root / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    for number in range(rows):
        Image.new("RGB", (16, 12), (number % 256, 80, 160)).save(images / f"{number}.png")
    table = pd.DataFrame(
        {
            "id": [f"t{number:015d}" for number in range(rows)],
            "source": "diffusiondb",
            "split": "train",
            "text": [f"a picture number {number}" for number in range(rows)],
            "image": [str(images / f"{number}.png") for number in range(rows)],
            "width": 16,
            "height": 12,
        }
    ).assign(orig_text=lambda frame: frame.text)
    for split in ("train", "validation"):
        fmt, options = export_options({"format": "parquet", "shard_size": shard_size}, "test")
        write_split(table[table.split == split], release / split, fmt, options)
    write_rows_table(table, release)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(release / "preview.jpg", format="JPEG")
    (release / "README.md").write_text("---\nlicense: other\n---\n# v2\n\nrelease card text\n", encoding="utf-8")
    return root


def read_name(source) -> str:
    """The file a pq.read_table call reads: a path, or what an open file's descriptor names (parts are read from
    one checked open since round 31d)."""
    if hasattr(source, "fileno"):
        return os.readlink(f"/proc/self/fd/{source.fileno()}")
    return str(source)


@pytest.mark.parametrize(
    ("rows", "shard_size"),
    [
        pytest.param(12, 4, id="3-parts-of-4"),
        pytest.param(60, 30, id="2-parts-of-30"),
        pytest.param(90, 90, id="1-part"),
    ],
)
def test_publish_reads_each_parquet_part_once(tmp_path, monkeypatch, capfd, rows, shard_size):
    """publish read a whole part for each of its rows: 1000 reads of a 1000-row part (500 GB for 500 MB)."""
    import pyarrow.parquet as pq

    root = parquet_release(tmp_path / "repo", rows, shard_size)
    monkeypatch.setattr(tables, "_PART_IMAGES", {})  # the release's own listing of its parts read them in this process
    reads: list[str] = []
    read_table = pq.read_table
    monkeypatch.setattr(
        pq, "read_table", lambda source, *a, **k: reads.append(read_name(source)) or read_table(source, *a, **k)
    )
    argv = ["publish", "v2", "--repo-id", "me/t2i-v2", "--dry-run", "--out", tmp_path / "hub"]
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    parts = [read for read in reads if "/part-" in read]
    assert len(parts) == len(set(parts)) == rows // shard_size
    published = pq.read_table(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    assert published.num_rows == rows and published["id"].to_pylist() == sorted(published["id"].to_pylist())


# ---------------------------------------------------------------- 6. a header past the first 64 KiB
def with_profile(image_format: str, size=(40, 20)) -> bytes:
    """A real image whose 200 KB ICC profile comes before its size (JPEG's APP2, WebP's ICCP chunk)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, image_format, icc_profile=bytes(range(256)) * 800)
    return buffer.getvalue()


def gif_after_a_comment() -> bytes:
    """A GIF whose 30x20 frame (on a 1x1 screen) comes after a 100 KB comment extension."""
    data = gif((1, 1), (30, 20))
    comment = b"\x21\xfe" + b"".join(b"\xff" + b"c" * 255 for _ in range(400)) + b"\x00"
    return data[: 13 + 6] + comment + data[13 + 6 :]  # after the 2-entry global colour table


def dalle3_image(name: str, image: bytes) -> dict[str, bytes]:
    record = {"short_caption": "a red fox", "width": 40, "height": 20, "image_name": f"fox.{name.rpartition('.')[2]}"}
    return {"data-000000.tar": tar_bytes([(name, image), ("0000.json", json.dumps(record).encode())])}


def zip_part(name: str, image: bytes) -> dict[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("part-000001.json", json.dumps({name: {"p": "a red fox"}}))
        zf.writestr(name, image)
    return {"part-000001.zip": buffer.getvalue()}


KAGGLE_CSV = {"gpt_generated_prompts.csv": b'prompt\n"a red fox"\n'}
LONG_HEADERS = [  # (source, its files) -> the size recorded (a DALL-E-3 row's measured `pixels`)
    pytest.param(
        {"kind": "dalle3", "on_error": "fail"},
        dalle3_image("0000.jpg", with_profile("JPEG")),
        (40, 20),
        id="dalle3-jpeg",
    ),
    pytest.param(
        {"kind": "dalle3", "on_error": "fail"},
        dalle3_image("0000.webp", with_profile("WEBP")),
        (40, 20),
        id="dalle3-webp",
    ),
    pytest.param(DIFFUSIONDB, zip_part("a.jpg", with_profile("JPEG")), (40, 20), id="diffusiondb-zip-jpeg"),
    pytest.param(KAGGLE, {**KAGGLE_CSV, "0.png": with_profile("WEBP", (20, 40))}, (20, 40), id="kaggle-webp"),
    pytest.param(
        GUSTAVOSTA,
        {"train.csv": b'Prompt,image_path\n"a red fox",a.jpg\n', "a.jpg": with_profile("JPEG")},
        (40, 20),
        id="gustavosta-jpeg",
    ),
    pytest.param(
        KAGGLE, {**KAGGLE_CSV, "0.png": gif_after_a_comment()}, (30, 20), id="kaggle-gif-frame-after-a-comment"
    ),
]


@pytest.mark.parametrize(("source", "files", "size"), LONG_HEADERS)
def test_an_image_whose_header_runs_past_64_kib_is_read(tmp_path, monkeypatch, capfd, source, files, size):
    """`not a readable image header` (exit 2 under on_error fail) before; the GIF's size its 1x1 screen."""
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0, result.stderr
    assert rows is not None and len(rows) == 1
    pixels = json.loads(rows[0]["meta"]).get("pixels") or [rows[0]["width"], rows[0]["height"]]
    assert tuple(pixels) == size


# ---------------------------------------------------------------- 7. a release's images from many shards
@pytest.mark.parametrize(
    ("shards", "per_shard"),
    [pytest.param(9, 4, id="9-shards"), pytest.param(12, 3, id="12-shards"), pytest.param(30, 2, id="30-shards")],
)
def test_a_release_walks_each_source_shard_once(tmp_path, shards, per_shard):
    """Its rows in id order hop from shard to shard: with 8 shards indexed at most, each image read past the 8th
    shard walked a whole shard's headers again (40 shards of 200 MB: 400 images in 11.6 s, 320 walks)."""
    import pandas as pd

    from scripts.lib.archive import _tar_index
    from scripts.lib.export import export_options, write_split

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, "PNG")
    refs = []
    for shard in range(shards):
        path = tmp_path / f"data-{shard:06d}.tar"
        path.write_bytes(tar_bytes([(f"{m:04d}.png", buffer.getvalue()) for m in range(per_shard)]))
        refs += [f"{path}!/{m:04d}.png" for m in range(per_shard)]
    order = sorted(range(len(refs)), key=lambda n: (n % per_shard, n))  # every shard's first image, then its second
    rows = pd.DataFrame(
        {"id": [f"i{n:04d}" for n in order], "source": "s", "text": "a red fox", "image": [refs[n] for n in order]}
    ).assign(orig_text="a red fox", width=4, height=4)
    _tar_index.cache_clear()
    write_split(rows, tmp_path / "out", *export_options("imagefolder", "test"))
    assert _tar_index.cache_info().misses == shards
    assert len(list((tmp_path / "out" / "images" / "s").iterdir())) == shards * per_shard


@pytest.mark.parametrize(
    ("parts", "per_part"),
    [pytest.param(1, 30, id="1-part"), pytest.param(3, 10, id="3-parts"), pytest.param(10, 3, id="10-parts")],
)
def test_a_release_parses_each_source_zip_once(tmp_path, monkeypatch, parts, per_part):
    """A DiffusionDB part's directory was parsed for each of its images a release read (20,000 members: 68 ms a
    read, 13.6 s for 200 of them)."""
    import pandas as pd

    from scripts.lib.export import export_options, write_split

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, "PNG")
    refs = []
    for part in range(parts):
        path = tmp_path / f"part-{part:06d}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for member in range(per_part):
                zf.writestr(f"{member:04d}.png", buffer.getvalue())
        refs += [f"{path}!/{member:04d}.png" for member in range(per_part)]
    order = sorted(range(len(refs)), key=lambda n: (n % per_part, n))  # rows hop from part to part
    rows = pd.DataFrame(
        {"id": [f"i{n:04d}" for n in order], "source": "s", "text": "a red fox", "image": [refs[n] for n in order]}
    ).assign(orig_text="a red fox", width=4, height=4)
    parsed: list[str] = []
    parse = zipfile.ZipFile._RealGetContents  # the central directory's parse, once per opening
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda zf: parsed.append(zf.filename) or parse(zf))
    write_split(rows, tmp_path / "out", *export_options("imagefolder", "test"))
    assert sorted(parsed) == sorted(set(parsed)) and len(parsed) == parts
    assert len(list((tmp_path / "out" / "images" / "s").iterdir())) == parts * per_part


# ---------------------------------------------------------------- 8. formats no source holds


def saved(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 12), (30, 60, 90)).save(buffer, image_format)
    return buffer.getvalue()


OTHER_FORMATS = [  # (PIL's format of the image, the source holding it under an image's name)
    pytest.param("EPS", "kaggle", id="eps-as-a-kaggle-png"),
    pytest.param("SGI", "dalle3", id="sgi-in-a-dalle3-shard"),
    pytest.param("PCX", "diffusiondb", id="pcx-in-a-diffusiondb-zip"),
    pytest.param("QOI", "kaggle", id="qoi-as-a-kaggle-png"),
    pytest.param("JPEG2000", "dalle3", id="jpeg2000-in-a-dalle3-shard"),
]


@pytest.mark.parametrize(("image_format", "holder"), OTHER_FORMATS)
def test_an_image_of_a_format_no_source_holds_is_refused(tmp_path, monkeypatch, capfd, image_format, holder):
    """PIL opens some forty formats by their bytes, whatever the name: an EPS named 0.png was ingested with its
    size (decoding it later runs Ghostscript where one is installed), and so was any other of PIL's decoders'
    formats. pixels.opened takes the formats of the image names a source may hold, and no other."""
    data = saved(image_format)
    source, files = {
        "kaggle": (KAGGLE, {**KAGGLE_CSV, "0.png": data}),
        "dalle3": ({"kind": "dalle3", "on_error": "fail"}, dalle3_image("0000.png", data)),
        "diffusiondb": (DIFFUSIONDB, zip_part("a.png", data)),
    }[holder]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 2 and not rows, (result.returncode, rows)
    assert "not a readable image header" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_format_a_source_may_hold_still_opens(image_format):
    """The formats of safe_paths.IMAGE_EXTENSIONS, and a phone's MPO (a JPEG with a second picture), open as
    they did: naming "MPO" among PIL's openers (it has none) failed every format PIL loads late, WebP and TIFF."""
    from scripts.lib.pixels import image_size, opened

    extra = {"save_all": True, "append_images": [Image.new("RGB", (10, 12))]} if image_format == "MPO" else {}
    buffer = io.BytesIO()
    Image.new("RGB", (10, 12), (30, 60, 90)).save(buffer, image_format, **extra)
    with opened(io.BytesIO(buffer.getvalue()), "x") as image:
        assert image.format == image_format and image.size == (10, 12)
    assert image_size(buffer.getvalue()) == (10, 12)


# ---------------------------------------------------------------- 9. outputs renamed in all or none
FINISH_FAILS = [  # the simpletuner tool's folders, the one whose mark fails (a disk full just then), a run before?
    pytest.param(["--data-dir", "dd"], "dd", False, id="data-dir-beside-its-config"),
    pytest.param(["--data-dir", "dd", "--txt-dir", "tt"], "tt", False, id="txt-dir-after-data-dir"),
    pytest.param(["--data-dir", "dd", "--txt-dir", "tt"], "dd", True, id="data-dir-over-a-run-before"),
]


def tree(root) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("folders", "failing", "run_before"), FINISH_FAILS)
def test_a_command_s_outputs_appear_together_when_one_fails_to_finish(
    tmp_path, monkeypatch, capfd, folders, failing, run_before
):
    """commit_together closed each atomic_path in turn, and each renamed its output in as it closed: a folder
    whose mark then failed (ENOSPC, a disk full just then) left the outputs closed before it in place, the
    config (renamed in first) beside no parquet, or a new config beside the run before's folders. Now every
    output is finished first and renamed in by replace_together, all or none."""
    import errno

    from scripts.lib import io as lib_io

    write_files(tmp_path / "raw", {"data-000000.tar": dalle3_shard(["fox.png", "cat.png"])})
    argv = ["simpletuner", "raw", "st.parquet", *folders]
    if run_before:
        assert cli(argv, tmp_path, monkeypatch, capfd).returncode == 0
        write_files(tmp_path / "raw", {"data-000000.tar": dalle3_shard(["fox.png", "dog.png"])})
    before = tree(tmp_path)
    mark_folder = lib_io.mark_folder

    def full_disk_at(folder):
        if f".{failing}." in str(folder) or str(folder).endswith(f"/{failing}"):
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / ".t2i-output"))
        mark_folder(folder)

    monkeypatch.setattr(lib_io, "mark_folder", full_disk_at)
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert (
        result.returncode == 2 and result.stderr.strip() == f"error: {failing}: cannot write (No space left on device)"
    )
    after = tree(tmp_path)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


# ---------------------------------------------------------------- 10. a bucketed caption's length
def bucketed_with_caption(caption: bytes) -> dict[str, bytes]:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG")
    meta = json.dumps({"target_w": 512, "target_h": 512, "bucket_id": "p1"}).encode()
    samples = [("k1.jpg", buffer.getvalue()), ("k1.txt", caption), ("k1.json", meta)]
    manifest = json.dumps({"format": "bucketed_shards_v1", "buckets": {"p1": {}}}).encode()
    return {"manifest.json": manifest, "buckets/p1/shard-000000.tar": tar_bytes(samples)}


CAPTIONS = [  # (the .txt's bytes, the source's max_prompt_bytes or None) -> refused?
    pytest.param(b"a red fox " * 10_000, None, True, id="100-kB-caption"),
    pytest.param(b"x" * (10 << 20), None, True, id="10-MB-caption"),
    pytest.param(b"a red fox " * 10_000, 1 << 17, False, id="100-kB-caption-under-a-raised-cap"),
]


@pytest.mark.parametrize(("caption", "cap", "refused"), CAPTIONS)
def test_a_bucketed_caption_is_capped_as_a_text_line_is(tmp_path, monkeypatch, capfd, caption, cap, refused):
    """A text source's line is refused past max_prompt_bytes (64 KiB); a bucketed export's `.txt` caption of
    any size (20 MB) went into the prompt table, and the setting was refused for that kind."""
    source = {"kind": "bucketed_webdataset", "on_error": "fail"} | ({"max_prompt_bytes": cap} if cap else {})
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, bucketed_with_caption(caption))
    if refused:
        assert result.returncode == 2 and not rows, result.stderr
        assert "sample 'k1': .txt is" in result.stderr and "over max_prompt_bytes" in result.stderr
    else:
        assert result.returncode == 0 and [r["prompt"] for r in rows] == [caption.decode()], result.stderr
