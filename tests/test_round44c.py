"""Round 44c: a file another name shares, or one put at an image's name after it was looked at, is never what a
reader reads (issue #24 class 4, "Every path derived from data stays in its declared root"), on real files, hard
links, symbolic links and FIFOs:

1. caption read a HARD link in its images folder whatever its other names: a user's file hard-linked in from
   elsewhere was captioned (sent to the API). It now reads a file with another name only when that name is
   generate's store entry for that very image (the manifest row's key; same device and inode as the descriptor
   it opened) or DVC's cache copy; any other is the counted `hard_link` skip, nothing read from it.
2. ingest looked at a source's image by name, then opened it by name: a link out, a link through a folder, or a
   FIFO put there in between was read (its header) or hung the run. It opens the image once and checks that
   descriptor (a regular file, in its root by what the descriptor names). The swap is made at the open itself.
"""

from __future__ import annotations

import io
import os
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.refusals import caption_reads
from scripts.lib.archive import UnsafeArchive

KEY_A, KEY_B = "a" * 64, "b" * 64


def png(width: int = 4, height: int = 3, red: int = 200) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (red, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _outside(tmp_path: Path) -> Path:
    """A file outside every root of the test (7x5): what must never be read."""
    (tmp_path / "outside").mkdir(exist_ok=True)
    path = tmp_path / "outside" / "secret.png"
    path.write_bytes(png(7, 5, red=1))
    return path


# ---------------------------------------------------------------- 1. caption
def _store_entry(key: str, data: bytes) -> Path:
    """generate's store entry for `key` at the pipeline's store (data/image_store, under the test's folder)."""
    entry = Path("data/image_store") / key[:2] / f"{key}.png"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(data)
    return entry


def _generated(images: Path, rows: list[tuple[str, str]]) -> None:
    """A generate manifest (id, file, key) naming `rows` (file, key)."""
    pq.write_table(
        pa.table(
            {"id": [f"r{n}" for n in range(len(rows))], "file": [f for f, _ in rows], "key": [k for _, k in rows]}
        ),
        images / "manifest.parquet",
    )


def _linked_a(images: Path) -> None:
    os.link(_store_entry(KEY_A, png()), images / "a.png")  # generate's own link: still read


def cap_hard_link_from_outside_under_a_generate_row(tmp_path, images):
    _linked_a(images)
    _store_entry(KEY_B, png(5, 5))  # the row's own store entry exists, and is another file
    os.link(_outside(tmp_path), images / "b.png")
    _generated(images, [("a.png", KEY_A), ("b.png", KEY_B)])


def cap_hard_link_to_another_images_store_entry(tmp_path, images):
    _linked_a(images)
    _store_entry(KEY_B, png(5, 5))  # row b's own entry
    os.link(Path("data/image_store") / KEY_A[:2] / f"{KEY_A}.png", images / "b.png")  # row a's: the wrong image
    _generated(images, [("a.png", KEY_A), ("b.png", KEY_B)])


def cap_hard_link_under_a_manifest_without_keys(tmp_path, images):
    (images / "a.png").write_bytes(png())
    os.link(_outside(tmp_path), images / "b.png")
    pq.write_table(pa.table({"id": ["r0", "r1"], "file": ["a.png", "b.png"]}), images / "manifest.parquet")


def cap_hard_link_in_a_folder_without_manifest(tmp_path, images):
    (images / "a.png").write_bytes(png())
    os.link(_outside(tmp_path), images / "b.png")


@pytest.mark.slow  # a manifest or a hard link asks DVC (dvc_cache_of, is_cache_copy), which imports dvc (2.5 s)
@pytest.mark.parametrize(
    "case",
    [
        cap_hard_link_from_outside_under_a_generate_row,
        cap_hard_link_to_another_images_store_entry,
        cap_hard_link_under_a_manifest_without_keys,
        cap_hard_link_in_a_folder_without_manifest,
    ],
    ids=lambda case: case.__name__,
)
def test_caption_reads_no_hard_link_but_generates(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    case(tmp_path, images)
    sent, skipped = caption_reads(images)
    assert skipped == Counter({"hard_link": 1}), skipped
    assert len(sent) == 1 and sent[0] in ("r0", "a.png"), sent  # a.png is read (a store link or one name), b never


@pytest.mark.slow
def test_guard_caption_reads_every_generate_row_linked_to_its_own_store_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    os.link(_store_entry(KEY_A, png()), images / "a.png")
    os.link(_store_entry(KEY_B, png(5, 5)), images / "b.png")
    _generated(images, [("a.png", KEY_A), ("b.png", KEY_B)])
    sent, skipped = caption_reads(images)
    assert sent == ["r0", "r1"] and not skipped, (sent, skipped)


@pytest.mark.slow
def test_caption_names_a_refused_hard_link_escaped_in_one_line(tmp_path, monkeypatch):
    from scripts.lib.caption_images import inspect_image, list_images

    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    os.link(_outside(tmp_path), images / "b\x1b[2J.png")
    listed, _ = list_images(images)
    params = SimpleNamespace(images=str(images), max_image_bytes=1 << 20, max_image_pixels=1 << 24)
    with pytest.raises(UnsafeArchive) as caught:
        inspect_image(listed[0], params)
    message = str(caught.value)
    assert caught.value.reason == "hard_link" and "\n" not in message and "\x1b" not in message, message


# ---------------------------------------------------------------- 2. ingest
def _swapped_at_open(monkeypatch, name: Path, swap) -> None:
    """`swap()` runs just before `name` is opened (by io.open or os.open): what a user's rename between a
    reader's look by name and its open puts there."""
    real_os_open, real_io_open, done = os.open, io.open, []

    def first(path) -> None:
        if not done and os.fspath(path) == os.fspath(name):
            done.append(True)
            swap()

    def os_open(path, *args, **kwargs):
        first(path)
        return real_os_open(path, *args, **kwargs)

    def io_open(path, *args, **kwargs):
        first(path)
        return real_io_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)


def _size_of(image: Path, root: Path | None, follow: bool = False) -> object:
    """image_file_size in a thread (a FIFO opened blocking hung it): its answer, or "hung" after 3 s (the FIFO
    then given a writer, so the thread ends)."""
    from scripts.lib.readers.csv_sources import image_file_size

    answer: list[object] = []
    extra = {} if root is None else {"root": root}
    thread = threading.Thread(target=lambda: answer.append(image_file_size(image, 1 << 20, 1 << 24, follow, **extra)))
    thread.start()
    thread.join(3)
    if thread.is_alive():
        os.close(os.open(image, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(3)
        return "hung"
    return answer[0]


def ing_link_out_swapped_in(tmp_path, source):
    image = source / "0.png"
    return image, lambda: (image.unlink(), image.symlink_to(_outside(tmp_path)))


def ing_fifo_swapped_in(tmp_path, source):
    image = source / "0.png"
    return image, lambda: (image.unlink(), os.mkfifo(image))


def ing_link_to_dev_zero_swapped_in(tmp_path, source):
    image = source / "0.png"
    return image, lambda: (image.unlink(), image.symlink_to("/dev/zero"))


@pytest.mark.parametrize(
    "case",
    [
        ing_link_out_swapped_in,
        ing_fifo_swapped_in,
        ing_link_to_dev_zero_swapped_in,
    ],
    ids=lambda case: case.__name__,
)
def test_ingest_reads_the_image_it_checked(tmp_path, monkeypatch, case):
    source = tmp_path / "source"
    source.mkdir()
    (source / "0.png").write_bytes(png())
    image, swap = case(tmp_path, source)
    _swapped_at_open(monkeypatch, image, swap)
    sized = _size_of(image, None)
    assert isinstance(sized, str) and sized.startswith("unsafe_path:"), sized  # never (7, 5): the outside file
    assert "\n" not in sized


def test_gustavosta_image_path_whose_folder_turns_into_a_link_out_is_not_read(tmp_path, monkeypatch):
    """gustavosta's image_path `sub/0.png`: its folder replaced by a link out after the reader's link check (by
    name) and before the open; the row's size was the outside file's."""
    from scripts.lib.readers.parquet_sources import _gustavosta_csv

    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "0.png").write_bytes(png())
    (source / "train.csv").write_text("Prompt,image_path\na red square,sub/0.png\n", encoding="utf-8")
    _outside(tmp_path)
    (tmp_path / "outside" / "0.png").write_bytes(png(7, 5, red=1))

    def swap() -> None:
        os.rename(source / "sub", tmp_path / "sub-moved")
        (source / "sub").symlink_to(tmp_path / "outside")

    _swapped_at_open(monkeypatch, source / "sub" / "0.png", swap)
    cfg = SimpleNamespace(follow_symlinks=False, max_member_bytes=1 << 20, max_image_pixels=1 << 24)
    [row] = list(_gustavosta_csv(source / "train.csv", source, "train", "train", cfg))
    assert getattr(row, "reason", None) == "unsafe_path" and "\n" not in row.detail, row  # not a 7x5 Record


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(lambda image, tmp_path: os.mkfifo(image), id="guard_fifo_at_the_name"),
        pytest.param(lambda image, tmp_path: image.symlink_to(_outside(tmp_path)), id="guard_link_out_at_the_name"),
    ],
)
def test_guard_ingest_refuses_a_fifo_or_link_at_an_images_name_in_one_line(tmp_path, planted):
    source = tmp_path / "source"
    source.mkdir()
    planted(source / "0.png", tmp_path)
    sized = _size_of(source / "0.png", None)
    assert isinstance(sized, str) and sized.split(":")[0] in ("unsafe_path", "missing_image") and "\n" not in sized


def test_guard_ingest_reads_a_plain_image_and_follows_links_when_allowed(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "0.png").write_bytes(png())
    (source / "1.png").symlink_to(_outside(tmp_path))
    assert _size_of(source / "0.png", None) == (4, 3)
    assert _size_of(source / "1.png", None, follow=True) == (7, 5)  # follow_symlinks: true is the user's choice
