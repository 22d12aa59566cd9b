"""Round 39f: release@V read each source image by name again after its rows were checked (archive.read_member had
no root), so an image swapped for a way out of its source's folders in between was exported as the release's own.

The rows' images are checked by name when release reads the split tables (paths.check_split_rows); the writers
(export's imagefolder, webdataset and parquet layouts, bucketed's decode, the preview) then opened each by name
with no root. Here the swap is made right after that check, before the first image is read (`write_split`
wrapped): a link out, a chain of links that ends out, a relative `..` link out, or the source's images folder
itself swapped for a link to a folder elsewhere. Each is now one line naming the file and the row, exit 2, no
release folder: every image is checked in its source's folders on the file it was read from
(release_images.SourceRoots, read_member's `check`). A link inside the folders and a hard link (DVC's
cache.type hardlink) are still read.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.workspace import PNG, error_line, make_splits, write_params

SOURCE = "diffusiondb"
COMPONENTS = [{"source": SOURCE, "split": s, "into": s} for s in ("train", "validation")]


def _png(size: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


# bucketed: an image large enough for a 64-pixel bucket, so the release is written on main (not "kept 0")
BUCKETED = {"format": "bucketed", "base_resolution": 64}
LAYOUTS = {"imagefolder": "imagefolder", "webdataset": "webdataset", "parquet": "parquet", "bucketed": BUCKETED}


def _workspace(root: Path, export) -> tuple[Path, bytes]:
    """A release `r` of make_splits' rows in `export`; (the rows' one image, its bytes)."""
    write_params(root, releases={"r": {"components": COMPONENTS, "export": export}})
    make_splits(root, n=4)
    image = root / "data/images" / SOURCE / "img.png"
    data = _png(64) if export == BUCKETED else PNG
    image.write_bytes(data)
    return image, data


# ---------------------------------------------------------------- the swaps, after the rows' check


def link_out(image: Path, data: bytes, outside: Path) -> None:
    (outside / "secret.png").write_bytes(data)
    image.unlink()
    image.symlink_to(outside / "secret.png")


def chain_out(image: Path, data: bytes, outside: Path) -> None:
    (outside / "secret.png").write_bytes(data)
    (image.parent / "mid.png").symlink_to(outside / "secret.png")  # a link inside, to a link out
    image.unlink()
    image.symlink_to("mid.png")


def dotdot_link_out(image: Path, data: bytes, outside: Path) -> None:
    (image.parents[3] / "secret.png").write_bytes(data)  # beside data/, in no source's folder
    image.unlink()
    image.symlink_to("../../../secret.png")


def images_folder_swapped(image: Path, data: bytes, outside: Path) -> None:
    folder = image.parent
    (outside / "elsewhere").mkdir()
    (outside / "elsewhere/img.png").write_bytes(data)
    shutil.rmtree(folder)
    folder.symlink_to(outside / "elsewhere")


SWAPS = [link_out, chain_out, dotdot_link_out, images_folder_swapped]


def _swapped_before_export(monkeypatch, swap) -> None:
    """`swap` runs once, right before release's first write_split: after the rows' images were checked by name."""
    import scripts.release

    real, pending = scripts.release.write_split, [swap]

    def write_split(*args, **kwargs):
        if pending:
            pending.pop()()
        return real(*args, **kwargs)

    monkeypatch.setattr(scripts.release, "write_split", write_split)


def _release(root: Path, monkeypatch, capfd):
    return cli(["release", "r", "data/splits", "data/releases/r"], root, monkeypatch, capfd)


@pytest.mark.slow  # runs release in-process: seconds each on two cores
@pytest.mark.parametrize("swap", SWAPS, ids=lambda swap: swap.__name__)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_an_image_swapped_out_of_its_folders_after_the_check_is_refused(tmp_path, monkeypatch, capfd, layout, swap):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    image, data = _workspace(root, LAYOUTS[layout])
    _swapped_before_export(monkeypatch, lambda: swap(image, data, outside))
    result = _release(root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "leads out of its source's folders" in line and "img.png" in line and "image of row '" in line
    assert not (root / "data/releases/r").exists()


# ---------------------------------------------------------------- still read: links inside, hard links


def link_inside(image: Path, data: bytes, outside: Path) -> None:
    (image.parent / "real.png").write_bytes(data)
    image.unlink()
    image.symlink_to("real.png")


def hard_link_outside(image: Path, data: bytes, outside: Path) -> None:
    os.link(image, outside / "copy.png")  # DVC's cache.type hardlink leaves such files


@pytest.mark.slow
@pytest.mark.parametrize("swap", [link_inside, hard_link_outside], ids=lambda swap: swap.__name__)
def test_a_link_inside_or_a_hard_link_is_still_released(tmp_path, monkeypatch, capfd, swap):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    image, data = _workspace(root, "imagefolder")
    _swapped_before_export(monkeypatch, lambda: swap(image, data, outside))
    result = _release(root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert (root / "data/releases/r/train/metadata.jsonl").is_file()


# ---------------------------------------------------------------- the writers themselves (default tier)


@pytest.mark.parametrize("swap", SWAPS, ids=lambda swap: swap.__name__)
@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset", "parquet"])
def test_write_split_reads_each_image_in_its_source_folders(tmp_path, fmt, swap):
    """export.write_split with `roots`, as release@V calls it: an image that leads out is one line naming the row."""
    import pandas as pd

    from scripts.lib import export
    from scripts.lib.errors import DataError
    from scripts.lib.release_images import SourceRoots

    root, outside = tmp_path / "ws", tmp_path / "outside"
    folder = root / "data/images" / SOURCE
    folder.mkdir(parents=True)
    outside.mkdir()
    image = folder / "img.png"
    image.write_bytes(PNG)
    roots = SourceRoots({SOURCE: [folder]})  # as release@V: its folders resolved before the images are read
    swap(image, PNG, outside)
    rows = pd.DataFrame(
        {"id": ["a1"], "source": [SOURCE], "text": ["t"], "orig_text": ["t"], "image": [str(image)]}
    ).assign(width=1, height=1)
    options = export.export_options(fmt, "test")[1]
    with pytest.raises(DataError, match=r"image of row 'a1' \(source 'diffusiondb'\) leads out of"):
        export.write_split(rows, tmp_path / "out", fmt, options, roots=roots)


@pytest.mark.slow
@pytest.mark.parametrize("swap", SWAPS, ids=lambda swap: swap.__name__)
def test_the_preview_reads_each_image_in_its_source_folders(tmp_path, monkeypatch, capfd, swap):
    """The swap after the export, before the contact sheet read the sample's images by name again."""
    import scripts.release

    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    image, data = _workspace(root, "imagefolder")
    real = scripts.release.without_unexported

    def swapped_after_export(*args, **kwargs):
        swap(image, data, outside)
        return real(*args, **kwargs)

    monkeypatch.setattr(scripts.release, "without_unexported", swapped_after_export)
    result = _release(root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "leads out of its source's folders" in error_line(result.stderr)
    assert not (root / "data/releases/r").exists()
