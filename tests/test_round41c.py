"""Round 41c: round 39f's leftovers in release@V.

A source's `images:` folder (or `path`) that was itself a link when release started was followed and its target
became the root every image was checked in: a link to a folder outside the repository released what lies there.
Now one line naming the params key and the link (release_images.check_folder_links); a link inside the
repository stays. The streamed preview (`--composed` rows of a `prompts` release) read the sample's images with no
root: a link out put at an image's name after the rows' check went into preview.jpg. A folder, FIFO or 0-byte
file at an image's name was one line naming the file but not the row, worded by layout: each now names the row
id and its source (release_images.of_row).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.commands import cli
from helpers.workspace import PNG, error_line, make_splits, write_params

SOURCE = "diffusiondb"
COMPONENTS = [{"source": SOURCE, "split": s, "into": s} for s in ("train", "validation")]

# ---------------------------------------------------------------- a source folder that is a link out at start


def absolute_link(folder: Path, outside: Path) -> None:
    folder.symlink_to(outside)


def relative_link(folder: Path, outside: Path) -> None:
    folder.symlink_to(os.path.relpath(outside, folder.parent))


def link_to_a_link_out(folder: Path, outside: Path) -> None:
    (outside.parent / "hop").symlink_to(outside)
    folder.symlink_to(outside.parent / "hop")


LINKS_OUT = [absolute_link, relative_link, link_to_a_link_out]


@pytest.mark.parametrize("key", ["images", "path"])
@pytest.mark.parametrize("link", LINKS_OUT, ids=lambda link: link.__name__)
def test_a_source_folder_linked_out_of_the_repository_is_refused(tmp_path, monkeypatch, key, link):
    from scripts.lib import release_images
    from scripts.lib.errors import DataError
    from scripts.lib.release_images import check_folder_links

    root, outside = tmp_path / "ws", tmp_path / "home\nuser"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    link(root / "data/imgs", outside)
    monkeypatch.chdir(root)
    monkeypatch.setattr(release_images, "dvc_cache_of", lambda repository: None)  # no DVC repository here
    entry = SimpleNamespace(**{"images": None, "path": None, key: "data/imgs"})
    with pytest.raises(DataError, match=rf"^params.yaml: sources.{SOURCE}.{key}: data/imgs is a link to .*outside"):
        check_folder_links({SOURCE: entry}, [SOURCE])


@pytest.mark.parametrize("target", ["elsewhere", "../../ws/other", "../../cache/files/md5/ab/cd.dir"])
def test_a_source_folder_linked_inside_the_repository_or_into_dvcs_cache_stays(tmp_path, monkeypatch, target):
    from scripts.lib import release_images
    from scripts.lib.release_images import check_folder_links

    root = tmp_path / "ws"
    (root / "data" / target).mkdir(parents=True)
    (root / "data/imgs").symlink_to(root / "data" / target)
    monkeypatch.chdir(root)
    cache = os.path.realpath(tmp_path / "cache")  # `dvc cache dir` put beside the repository
    monkeypatch.setattr(release_images, "dvc_cache_of", lambda repository: cache)
    check_folder_links({SOURCE: SimpleNamespace(images="data/imgs", path=None)}, [SOURCE])


@pytest.mark.slow  # release in-process: seconds each
@pytest.mark.parametrize("link", LINKS_OUT, ids=lambda link: link.__name__)
def test_release_refuses_a_source_folder_linked_out(tmp_path, monkeypatch, capfd, link):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    write_params(root, releases={"r": {"components": COMPONENTS, "export": "imagefolder"}})
    make_splits(root, n=4)
    folder = root / "data/images" / SOURCE
    folder.rename(outside)
    link(folder, outside)
    result = cli(["release", "r", "data/splits", "data/releases/r"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert f"sources.{SOURCE}.images: data/images/{SOURCE} is a link to" in line, line
    assert not (root / "data/releases/r").exists()


# ---------------------------------------------------------------- the streamed preview's roots


def link_out(image: Path, outside: Path) -> None:
    (outside / "secret.png").write_bytes(PNG)
    image.unlink()
    image.symlink_to(outside / "secret.png")


def dotdot_link_out(image: Path, outside: Path) -> None:
    (image.parents[3] / "secret.png").write_bytes(PNG)
    image.unlink()
    image.symlink_to("../../../secret.png")


def chain_out(image: Path, outside: Path) -> None:
    (outside / "secret.png").write_bytes(PNG)
    (image.parent / "mid.png").symlink_to(outside / "secret.png")
    image.unlink()
    image.symlink_to("mid.png")


@pytest.mark.slow  # compose and release in-process
@pytest.mark.parametrize("swap", [link_out, dotdot_link_out, chain_out], ids=lambda swap: swap.__name__)
def test_the_streamed_preview_reads_each_image_in_its_source_folders(tmp_path, monkeypatch, capfd, swap):
    import scripts.release

    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_params(root, releases={"r": {"components": COMPONENTS, "export": "prompts"}})
    make_splits(root, n=4)
    assert cli(["compose", "r", "data/splits", "data/compose/r"], root, monkeypatch, capfd).returncode == 0
    image, real = root / "data/images" / SOURCE / "img.png", scripts.release.without_unexported

    def swapped_after_export(*args, **kwargs):
        swap(image, outside)
        return real(*args, **kwargs)

    monkeypatch.setattr(scripts.release, "without_unexported", swapped_after_export)
    argv = ["release", "r", "data/splits", "data/releases/r", "--composed", "data/compose/r"]
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "leads out of its source's folders" in error_line(result.stderr)
    assert not (root / "data/releases/r").exists()


# ---------------------------------------------------------------- a folder, FIFO or 0-byte file: the row named


def a_folder(image: Path) -> None:
    image.mkdir()


def a_fifo(image: Path) -> None:
    os.mkfifo(image)


def empty(image: Path) -> None:
    image.write_bytes(b"")


NOT_IMAGES = [a_folder, a_fifo, empty]
FAST_LAYOUTS = ["imagefolder", "webdataset", "parquet"]


def _write_split(tmp_path: Path, fmt, make) -> str:
    import pandas as pd

    from scripts.lib import export
    from scripts.lib.errors import DataError
    from scripts.lib.release_images import SourceRoots

    folder = tmp_path / "data/images/src\nx"
    folder.mkdir(parents=True)
    image = folder / "img.png"
    make(image)
    rows = pd.DataFrame(
        {"id": ["a\n1"], "source": ["src\nx"], "text": ["t"], "orig_text": ["t"], "image": [str(image)]}
    ).assign(width=64, height=64)
    layout, options = export.export_options(fmt, "test")
    with pytest.raises(DataError) as caught:
        export.write_split(rows, tmp_path / "out", layout, options, roots=SourceRoots({"src\nx": [folder]}))
    return str(caught.value)


@pytest.mark.parametrize("make", NOT_IMAGES, ids=lambda make: make.__name__)
@pytest.mark.parametrize("fmt", FAST_LAYOUTS)
def test_a_non_image_at_an_images_name_names_the_row(tmp_path, fmt, make):
    line = _write_split(tmp_path, fmt, make)
    assert "(image of row 'a\\n1', source 'src\\nx')" in line, line


@pytest.mark.slow  # bucketed imports torch; simpletuner writes its config
@pytest.mark.parametrize("make", NOT_IMAGES, ids=lambda make: make.__name__)
@pytest.mark.parametrize("fmt", ["simpletuner", "bucketed"])
def test_a_non_image_at_an_images_name_names_the_row_in_every_layout(tmp_path, fmt, make):
    fmt = {"format": "bucketed", "base_resolution": 64} if fmt == "bucketed" else fmt
    line = _write_split(tmp_path, fmt, make)
    assert "(image of row 'a\\n1', source 'src\\nx')" in line, line
