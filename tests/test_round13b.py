"""Round 13b: the image half, fed real-world images and sizes (every row failed before its fix).

1. Re-encoding changed the picture at exit 0: PIL's convert("RGB") clipped a 16-bit grey PNG to white
   (webdataset `image_format: jpg`, the bucketed layout, the contact sheet), a JPEG's EXIF rotation was
   dropped (a portrait photo exported lying down), a JPEG written from a PNG lost its colour profile, and a
   CMYK JPEG failed a png export. Now every writer draws the image as it is shown (scripts/lib/pixels.py).
2. A PNG whose pixels break past a sound header (SyntaxError in PIL) was a traceback at release@V's
   contact sheet: now a grey box, as any unreadable image.
3. A width or height that is no pixel count: 2.5, inf, 1e30 were tracebacks (captions@S, compose@V, the
   simpletuner tool), -5 and 0 went into the caption table, a release and SimpleTuner's parquet. Now one
   line naming the file and row, or a counted `bad_size` skip.
4. tiny_model.bpe_merges: 0 (allowed by its range) wrote a merges file the tokenizer refused in a traceback.
5. generate.model naming a broken pipeline folder (a part missing, a config of the wrong shape) was an
   80-line traceback, or the error after lines diffusers logged; now one line naming generate.model.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageCms, ImageOps

from helpers import cli, write_tar
from helpers.workspace import error_line

# ---------------------------------------------------------------- 1. re-encoding shows the same picture


def grey16(path: Path) -> Path:
    """A 16-bit grey PNG, a ramp from black to white (mean brightness about 127)."""
    Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)).save(path)
    return path


def rotated_jpeg(path: Path) -> Path:
    """A 40x20 JPEG whose EXIF orientation (6) shows it 20x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 30, 30)).save(path, format="JPEG", exif=exif.tobytes())
    return path


def profiled_png(path: Path) -> Path:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (24, 24), (30, 200, 30)).save(path, format="PNG", icc_profile=profile)
    return path


def cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(path, format="JPEG")  # red
    return path


def shown_size(image: Image.Image) -> tuple[int, int]:
    return ImageOps.exif_transpose(image).size


def brightness(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L")).mean())


REENCODED = [
    # (image, image_format, what must hold of the exported image)
    pytest.param(grey16, "jpg", lambda im: 110 < brightness(im) < 145, id="16-bit-grey-png-to-jpg-not-white"),
    pytest.param(rotated_jpeg, "png", lambda im: shown_size(im) == (20, 40), id="exif-rotated-jpeg-to-png-upright"),
    pytest.param(profiled_png, "jpg", lambda im: bool(im.info.get("icc_profile")), id="png-colour-profile-kept-in-jpg"),
    pytest.param(cmyk_jpeg, "png", lambda im: im.convert("RGB").getpixel((5, 5))[0] > 200, id="cmyk-jpeg-to-png"),
]


@pytest.mark.parametrize(("make", "image_format", "holds"), REENCODED)
def test_a_webdataset_export_shows_the_picture_the_stored_image_shows(tmp_path, monkeypatch, make, image_format, holds):
    from scripts.lib.export import write_split

    monkeypatch.chdir(tmp_path)
    image = make(tmp_path / f"in{'.jpg' if make in (rotated_jpeg, cmyk_jpeg) else '.png'}")
    rows = pd.DataFrame(
        {"id": ["a1"], "source": ["s"], "text": ["a picture"], "orig_text": ["a picture"], "image": [image.name]}
        | {"width": [None], "height": [None]}
    )
    write_split(rows, tmp_path / "train", "webdataset", {"shard_size": 10, "image_format": image_format})
    with tarfile.open(tmp_path / "train" / "shard-000000.tar") as tar:
        member = next(m for m in tar if m.name.endswith(f".{image_format}"))
        exported = Image.open(io.BytesIO(tar.extractfile(member).read()))  # type: ignore[union-attr]
        assert holds(exported)


def test_the_bucketed_layout_draws_a_16_bit_grey_image_not_white(tmp_path, monkeypatch):
    from scripts.lib.bucketed import decode

    monkeypatch.chdir(tmp_path)
    _, _, image = decode(str(grey16(tmp_path / "g.png")))
    assert 110 < brightness(image) < 145


# ---------------------------------------------------------------- 2. the contact sheet


def broken_png(path: Path) -> Path:
    """A PNG whose header reads, and whose IDAT length is cut in half: PIL reads the next chunk's header
    from inside the image data and raises SyntaxError while decoding."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    data[at : at + 4] = struct.pack(">I", length // 2)
    path.write_bytes(bytes(data))
    return path


def grey_box(cell: Image.Image) -> bool:
    from scripts.lib.preview import MISSING

    return cell.getpixel((cell.width // 2, cell.height // 2)) == MISSING


SHEET = [
    # (image, what the sheet's first cell must show)
    pytest.param(broken_png, grey_box, id="pixels-broken-past-the-header-grey-box"),
    pytest.param(grey16, lambda cell: 90 < brightness(cell) < 145, id="16-bit-grey-drawn-not-white"),
]


@pytest.mark.parametrize(("make", "shows"), SHEET)
def test_the_contact_sheet_draws_each_image_or_a_grey_box(tmp_path, monkeypatch, make, shows):
    from scripts.lib.params import Preview
    from scripts.lib.preview import contact_sheet

    monkeypatch.chdir(tmp_path)
    geometry = Preview(columns=1, rows=1, thumb=64, caption_height=12)
    sheet = contact_sheet([(make(tmp_path / "x.png"), "caption")], geometry)
    assert shows(sheet.crop((4, 4, 60, 60)))


# ---------------------------------------------------------------- 3. sizes that are no pixel counts

BAD_SIZES = [
    pytest.param(2.5, "not a whole number of pixels", id="fraction"),
    pytest.param(float("inf"), "not a whole number of pixels", id="infinite"),
    pytest.param(1e30, "not a size from 1 to 2147483647", id="huge"),
    pytest.param(-5.0, "not a size from 1 to 2147483647", id="negative"),
    pytest.param(0.0, "not a size from 1 to 2147483647", id="zero"),
]


def caption_rows(tmp_path: Path, width: float) -> None:
    """A prefilter table of a source carrying its images (params.yaml: no sources): the third row's width is
    `width`."""
    (tmp_path / "params.yaml").write_text("runtime: {}\n", encoding="utf-8")
    (tmp_path / "raw").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "raw" / "x.png")
    n = 4
    pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "source": ["s"] * n,
            "split": [None] * n,
            "text": [f"a fox {i}" for i in range(n)],
            "prompt": [f"a fox {i}" for i in range(n)],
            "image": ["raw/x.png"] * n,
            "width": [8.0, 8.0, width, 8.0],
            "height": [8] * n,
            "meta": ["{}"] * n,
        }
    ).to_parquet(tmp_path / "in.parquet")


@pytest.mark.parametrize(("width", "said"), BAD_SIZES)
def test_captions_refuses_a_width_that_is_no_pixel_count(tmp_path, monkeypatch, capfd, width, said):
    caption_rows(tmp_path, width)
    result = cli(["captions", "s", "in.parquet", "raw", "out.parquet"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "in.parquet: row 3: column 'width'" in line and said in line
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(("width", "said"), BAD_SIZES)
def test_a_release_row_whose_width_is_no_pixel_count_is_refused(tmp_path, monkeypatch, width, said):
    from scripts.lib.errors import DataError
    from scripts.lib.paths import check_split_rows
    from scripts.lib.tables import read_parquet

    monkeypatch.chdir(tmp_path)
    caption_rows(tmp_path, width)
    rows = read_parquet(tmp_path / "in.parquet").drop(columns=["prompt"]).assign(orig_text="a fox")
    rows.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match=f"train.parquet: row 3: column 'width' .*{said}"):
        check_split_rows(read_parquet(tmp_path / "train.parquet"), Path("train.parquet"), "s", [Path("raw")])


def dalle3_shard(root: Path, width) -> Path:
    """A DALL-E-3 shard of two samples, the first one's json `width` as given."""

    def record(name: str, w) -> bytes:
        return json.dumps({"image_name": name, "short_caption": f"a fox {name}", "width": w, "height": 8}).encode()

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    members = [("000.png", buffer.getvalue()), ("000.json", record("a.png", width))]
    members += [("001.png", buffer.getvalue()), ("001.json", record("b.png", 8))]
    return write_tar(root / "dalle3" / "data-000000.tar", members)


@pytest.mark.parametrize("width", [-64, 0, 3_000_000_000, 10**25])
def test_the_simpletuner_tool_skips_a_json_size_that_is_no_pixel_count(tmp_path, monkeypatch, capfd, width):
    dalle3_shard(tmp_path, width)
    result = cli(["simpletuner", "dalle3", "st.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0 and "bad_size 1" in result.stdout, result.stderr
    assert pd.read_parquet(tmp_path / "st.parquet")["filename"].tolist() == ["b.png"]
    failed = cli(["simpletuner", "dalle3", "st2.parquet", "--on-error", "fail"], tmp_path, monkeypatch, capfd)
    assert failed.returncode == 2 and "sample '000': width/height out of range" in error_line(failed.stderr)


# ---------------------------------------------------------------- 4. the tiny model's tokenizer


def test_the_tiny_models_tokenizer_loads_with_no_merges(tmp_path, monkeypatch):
    from transformers import CLIPTokenizer

    from scripts.tiny_model import build_tokenizer_files, write_tokenizer_files

    monkeypatch.chdir(tmp_path)
    write_tokenizer_files(*build_tokenizer_files(0), tmp_path / "tok")  # bpe_merges: 0, its range's floor
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tok", model_max_length=77)
    assert tokenizer("a red fox")["input_ids"][0] == tokenizer.bos_token_id


# ---------------------------------------------------------------- 5. a broken pipeline folder


def set_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **fields}), encoding="utf-8")


BROKEN_MODELS = [
    # (what is broken, generate settings beyond the model, what the line says)
    pytest.param(lambda m: [p.unlink() for p in (m / "unet").glob("*.safetensors")], {}, "not a pipeline diffusers can load", id="weights-missing"),
    pytest.param(lambda m: set_json(m / "unet" / "config.json", block_out_channels="x"), {}, "not a pipeline diffusers can load", id="unet-config-wrong-shape"),
    pytest.param(lambda m: (m / "vae" / "config.json").write_text("[1, 2]"), {}, "not a pipeline diffusers can load", id="vae-config-a-list"),
    pytest.param(lambda m: shutil.rmtree(m / "tokenizer"), {}, "the pipeline failed on the batch from id r0", id="tokenizer-missing"),
    pytest.param(lambda m: set_json(m / "unet" / "config.json", sample_size="abc"), {"height": "model", "width": "model"}, "sample_size 'abc' is no size", id="sample-size-text"),
    pytest.param(lambda m: (m / "vae" / "config.json").write_text("[1, 2]"), {"height": "model", "width": "model"}, "vae/config.json: not a JSON object", id="model-size-from-a-list"),
]  # fmt: skip


@pytest.mark.parametrize(("breaks", "keys", "said"), BROKEN_MODELS)
def test_a_broken_pipeline_folder_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capfd, breaks, keys, said):
    import yaml

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    breaks(tmp_path / "model")
    params = {"generate": {"model": "model", "steps": 1, "batch_size": 1, "sources": ["s"], **keys}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    pd.DataFrame({"id": ["r0"], "text": ["a red fox"], "prompt": ["a red fox"]}).to_parquet(tmp_path / "in.parquet")
    result = cli(["generate", "s", "in.parquet", "out"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and said in line, line
    assert not any((tmp_path / "out").rglob("*.jpg"))  # nothing rendered
    # and the process goes on as it was: a load that failed half way put torch's default dtype back
    import torch

    assert torch.get_default_dtype() == torch.float32
