"""Round 33b: files a stage or tool read by name after (or without) checking them, now each from one checked open.

1. release's listing of its images (export.locate_images, rows.parquet's sha256 and size) read image files and tar
   shards by name: an image or shard that was a link out of the release was listed as the release's own, and a
   FIFO or folder under an image's or shard's name was passed over. Each is now read from one open, checked there
   (safe_paths.open_within), one line naming it.
2. publish's image of a parquet part (export.release_image_bytes) read a part with another hard link: a file
   outside the release linked in under a part's name kept its name and passed every check. Such a part is now
   refused, as publish refuses the release's other files (a DVC cache.type hardlink checkout aside).
3. external_sort read its own spill buckets by name (pa.memory_map): a link, a hard link to another file, a FIFO
   (a hang) or a folder put at a bucket's name while the run went on was read as the sort's rows. A bucket is
   now opened once: in the spill folder, a regular file, not a link, with one name; no output written.
4. image_store's file_sha256 opened store and output files by name: a link out was hashed (a key file's sha256
   recorded), a FIFO blocked the run, a folder was a traceback. It now reads from one open, not a link, in its
   folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.refusals import assert_one_line, outcome
from scripts.lib import export
from scripts.lib.external_sort import RANK, sorted_rows_to
from scripts.lib.image_store import OutputFolder

# ---------------------------------------------------------------- 1. locate_images: one checked open each


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def image_linked_out(root: Path, split: Path) -> tuple[str, str]:
    (root / "secret.png").write_bytes(b"SECRET")
    (split / "images/s/b.png").symlink_to(root / "secret.png")
    return "leads out of", "b.png"


def image_a_fifo(root: Path, split: Path) -> tuple[str, str]:
    os.mkfifo(split / "images/s/b.png")
    return "is a FIFO", "b.png"


def image_a_folder(root: Path, split: Path) -> tuple[str, str]:
    (split / "images/s/b.png").mkdir()
    return "is a folder", "b.png"


def shard_linked_out(root: Path, split: Path) -> tuple[str, str]:
    _tar(root / "secret.tar", {"b.png": b"SECRET"})
    (split / "shard-000000.tar").symlink_to(root / "secret.tar")
    return "leads out of", "shard-000000.tar"


def shard_a_fifo(root: Path, split: Path) -> tuple[str, str]:
    os.mkfifo(split / "shard-000000.tar")
    return "is a FIFO", "shard-000000.tar"


@pytest.mark.parametrize(
    "case",
    [image_linked_out, image_a_fifo, image_a_folder, shard_linked_out, shard_a_fifo],
    ids=lambda case: case.__name__,
)
def test_a_release_image_or_shard_is_listed_from_one_checked_open(tmp_path, case):
    split = tmp_path / "release/train"
    (split / "images/s").mkdir(parents=True)
    (split / "images/s/a.png").write_bytes(b"PNG-a")
    assert set(export.locate_images(tmp_path / "release", "train")) == {"a"}
    expected, named = case(tmp_path, split)
    assert_one_line(outcome(lambda: export.locate_images(tmp_path / "release", "train")), expected, named)


def test_a_release_shard_is_still_listed(tmp_path):
    split = tmp_path / "release/train"
    split.mkdir(parents=True)
    _tar(split / "shard-000000.tar", {"a.png": b"PNG-a", "a.txt": b"a caption"})
    found = export.locate_images(tmp_path / "release", "train")
    assert list(found) == ["a"] and found["a"][0] == "train/shard-000000.tar!/a.png" and found["a"][2] == 5


# ---------------------------------------------------------------- 2. release_image_bytes: one name


def _part(root: Path, data: bytes = b"PNG-a", name: str = "release/train/part-0000.parquet") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ["a"], "image": [{"bytes": data, "path": "a.png"}]}), path)
    return path


def part_also_named_outside(root: Path, part: Path) -> None:
    os.link(part, root / "elsewhere.parquet")  # the part is a file someone else holds too


def part_a_link_of_a_file_outside(root: Path, part: Path) -> None:
    outside = _part(root, b"SECRET", "outside/part.parquet")
    part.unlink()
    os.link(outside, part)


def part_named_twice_in_the_release(root: Path, part: Path) -> None:
    os.link(part, part.parent / "part-0000-copy.bin")


@pytest.mark.parametrize(
    "case",
    [part_also_named_outside, part_a_link_of_a_file_outside, part_named_twice_in_the_release],
    ids=lambda case: case.__name__,
)
def test_a_release_part_with_another_hard_link_is_refused(tmp_path, case):
    part = _part(tmp_path)
    assert export.release_image_bytes(tmp_path / "release", "train/part-0000.parquet!/a") == b"PNG-a"
    case(tmp_path, part)
    result = outcome(lambda: export.release_image_bytes(tmp_path / "release", "train/part-0000.parquet!/a"))
    assert_one_line(result, "has another hard link", "part-0000.parquet")


# ---------------------------------------------------------------- 3. external_sort: its own buckets, checked


def _outside_bucket(root: Path) -> Path:
    path = root / "outside.arrow"
    table = pa.table({"id": ["SECRET"], RANK: pa.array([0], pa.int64())})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def bucket_linked_out(root: Path, bucket: Path) -> str:
    bucket.unlink()
    bucket.symlink_to(_outside_bucket(root))
    return "leads out of"


def bucket_a_hard_link_of_a_file_outside(root: Path, bucket: Path) -> str:
    bucket.unlink()
    os.link(_outside_bucket(root), bucket)
    return "has another hard link"


def bucket_a_fifo(root: Path, bucket: Path) -> str:
    bucket.unlink()
    os.mkfifo(bucket)
    return "is a FIFO"


def bucket_a_folder(root: Path, bucket: Path) -> str:
    bucket.unlink()
    bucket.mkdir()
    return "is a folder"


@pytest.mark.parametrize(
    "case",
    [bucket_linked_out, bucket_a_hard_link_of_a_file_outside, bucket_a_fifo, bucket_a_folder],
    ids=lambda case: case.__name__,
)
def test_a_spill_bucket_is_read_from_one_checked_open(tmp_path, case):
    output = tmp_path / "rows.parquet"
    expected: list[str] = []

    def sort() -> None:
        with sorted_rows_to(output, np.array([1, 0])) as spill:
            spill.add(pa.table({"id": ["b", "a"]}), 0)
            expected.append(case(tmp_path, spill._path(0)))

    result = outcome(sort)
    assert_one_line(result, expected[0], "00000000.arrow")
    assert not output.exists()


# ---------------------------------------------------------------- 4. image_store: a file hashed from one open


def file_linked_out(root: Path) -> tuple[str, Callable[[OutputFolder], object]]:
    (root / "secret.env").write_bytes(b"KEY=1")
    (root / "out/x.png").symlink_to(root / "secret.env")
    return "leads out of", lambda folder: folder.digests_of(["x.png"])


def file_linked_within(root: Path) -> tuple[str, Callable[[OutputFolder], object]]:
    (root / "out/y.png").write_bytes(b"PNG-y")
    (root / "out/x.png").symlink_to("y.png")
    return "a symbolic link", lambda folder: folder.digests_of(["x.png"])


def file_a_fifo(root: Path) -> tuple[str, Callable[[OutputFolder], object]]:
    os.mkfifo(root / "out/x.png")
    return "is a FIFO", lambda folder: folder.digests_of(["x.png"])


def file_a_folder(root: Path) -> tuple[str, Callable[[OutputFolder], object]]:
    (root / "out/x.png").mkdir()
    return "is a folder", lambda folder: folder.digests_of(["x.png"])


def store_file_linked_out(root: Path) -> tuple[str, Callable[[OutputFolder], object]]:
    (root / "store").mkdir()
    (root / "secret.env").write_bytes(b"KEY=1")
    (root / "store/x.png").symlink_to(root / "secret.env")
    return "leads out of", lambda folder: folder.link(root / "store/x.png", "x.png")


@pytest.mark.parametrize(
    "case",
    [file_linked_out, file_linked_within, file_a_fifo, file_a_folder, store_file_linked_out],
    ids=lambda case: case.__name__,
)
def test_a_store_file_is_hashed_from_one_checked_open(tmp_path, case):
    (tmp_path / "out").mkdir()
    expected, call = case(tmp_path)
    assert_one_line(outcome(lambda: call(OutputFolder(tmp_path / "out"))), expected, "x.png")


def test_a_store_file_is_still_hashed(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/x.png").write_bytes(b"PNG-x")
    digest = OutputFolder(tmp_path / "out").digests_of(["x.png"])["x.png"]
    assert digest == hashlib.sha256(b"PNG-x").hexdigest()
