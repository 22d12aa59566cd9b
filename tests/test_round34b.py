"""Round 34b: a release's tar shard and a generation store's file, each read from one checked open.

1. publish's image of a tar shard member (export.release_image_bytes) read the shard by its name
   (archive.read_member): a shard linked out of the release, or a file outside it hard-linked in under a shard's
   name, was read as the release's own, and a FIFO or folder there was refused without saying what it was. A
   shard is now opened once, as a parquet part is (safe_paths.open_within: in the release, a regular file, one
   name, DVC's cache.type hardlink copy aside), and its member read from that open.
2. generate's OutputFolder.link confined a store file to its own folder (`<store>/ab/`): with `ab` a link to a
   folder outside the store, or to another folder of it, the file there was hashed and linked into OUTPUT as the
   render of its key. The file is now opened once, in its own folder of the store (no link on the way there),
   and what is linked (or copied) is the file opened and hashed.
3. Through the CLI: `publish --dry-run` of a webdataset release whose shard has another hard link (its bytes
   still the ones rows.parquet records) published it at exit 0; it is now one line naming the shard, exit 2.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from helpers.refusals import assert_one_line, outcome
from scripts.lib import export
from scripts.lib.image_store import OutputFolder

# ---------------------------------------------------------------- 1. release_image_bytes: a shard, one open


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


SHARD = "train/shard-000000.tar"


def shard_linked_out(root: Path, shard: Path) -> tuple[str, str]:
    secret = _tar(root / "secret.tar", {"a.png": b"SECRET"})
    shard.unlink()
    shard.symlink_to(secret)
    return "leads out of", "shard-000000.tar"


def shard_folder_linked_out(root: Path, shard: Path) -> tuple[str, str]:
    _tar(root / "elsewhere/shard-000000.tar", {"a.png": b"SECRET"})
    shard.unlink()
    shard.parent.rmdir()
    shard.parent.symlink_to(root / "elsewhere")
    return "leads out of", "shard-000000.tar"


def shard_also_named_outside(root: Path, shard: Path) -> tuple[str, str]:
    os.link(shard, root / "elsewhere.tar")  # the shard is a file someone else holds too
    return "has another hard link", "shard-000000.tar"


def shard_a_link_of_a_file_outside(root: Path, shard: Path) -> tuple[str, str]:
    outside = _tar(root / "outside/shard.tar", {"a.png": b"PNG-a"})  # the bytes rows.parquet records, too
    shard.unlink()
    os.link(outside, shard)
    return "has another hard link", "shard-000000.tar"


def shard_named_twice_in_the_release(root: Path, shard: Path) -> tuple[str, str]:
    os.link(shard, shard.parent / "shard-copy.bin")
    return "has another hard link", "shard-000000.tar"


def shard_a_fifo(root: Path, shard: Path) -> tuple[str, str]:
    shard.unlink()
    os.mkfifo(shard)
    return "is a FIFO", "shard-000000.tar"


def shard_a_folder(root: Path, shard: Path) -> tuple[str, str]:
    shard.unlink()
    shard.mkdir()
    return "is a folder", "shard-000000.tar"


@pytest.mark.parametrize(
    "case",
    [
        shard_linked_out,
        shard_folder_linked_out,
        shard_also_named_outside,
        shard_a_link_of_a_file_outside,
        shard_named_twice_in_the_release,
        shard_a_fifo,
        shard_a_folder,
    ],
    ids=lambda case: case.__name__,
)
def test_a_release_shard_is_read_from_one_checked_open(tmp_path, case):
    shard = _tar(tmp_path / "release" / SHARD, {"a.png": b"PNG-a"})
    assert export.release_image_bytes(tmp_path / "release", f"{SHARD}!/a.png") == b"PNG-a"
    expected, named = case(tmp_path, shard)
    result = outcome(lambda: export.release_image_bytes(tmp_path / "release", f"{SHARD}!/a.png"))
    assert_one_line(result, expected, named)


@pytest.mark.parametrize(
    ("members", "ref", "expected"),
    [
        pytest.param({"a.png": b"PNG-a"}, f"{SHARD}!/b.png", "image not found", id="no-such-member"),
        pytest.param({"a.png": b"PNG-a"}, f"{SHARD}!/../a.png", "refused (unsafe_member)", id="unsafe-name"),
        pytest.param({"a.png": b"PNG-a"}, "train/shard-000009.tar!/a.png", "not found", id="no-such-shard"),
    ],
)
def test_a_release_shard_member_still_refused_in_one_line(tmp_path, members, ref, expected):
    _tar(tmp_path / "release" / SHARD, members)
    assert_one_line(outcome(lambda: export.release_image_bytes(tmp_path / "release", ref)), expected, "shard-00000")


def test_a_release_shard_member_is_still_read(tmp_path):
    _tar(tmp_path / "release" / SHARD, {"a.png": b"PNG-a", "b.png": b"PNG-b"})
    assert export.release_image_bytes(tmp_path / "release", f"{SHARD}!/b.png") == b"PNG-b"


# ---------------------------------------------------------------- 2. OutputFolder.link: the store's own folder

STORED = "ab/ab12.png"  # <key[:2]>/<key>.<ext>, as render_plan.stored_name names it


def folder_linked_out(root: Path) -> None:
    (root / "elsewhere").mkdir()
    (root / "elsewhere/ab12.png").write_bytes(b"SECRET")
    (root / "store/ab").symlink_to(root / "elsewhere")


def folder_linked_out_relatively(root: Path) -> None:
    (root / "outside").mkdir()
    (root / "outside/ab12.png").write_bytes(b"SECRET")
    (root / "store/ab").symlink_to("../outside")


def folder_linked_to_another_store_folder(root: Path) -> None:
    (root / "store/cd").mkdir()
    (root / "store/cd/ab12.png").write_bytes(b"another key's render")
    (root / "store/ab").symlink_to("cd")


def folder_linked_to_the_store_root(root: Path) -> None:
    (root / "store/ab12.png").write_bytes(b"a file at the store's top")
    (root / "store/ab").symlink_to(".")


@pytest.mark.parametrize(
    "case",
    [
        folder_linked_out,
        folder_linked_out_relatively,
        folder_linked_to_another_store_folder,
        folder_linked_to_the_store_root,
    ],
    ids=lambda case: case.__name__,
)
def test_a_store_file_is_linked_only_from_its_own_store_folder(tmp_path, case):
    (tmp_path / "store").mkdir()
    (tmp_path / "out").mkdir()
    case(tmp_path)
    folder = OutputFolder(tmp_path / "out")
    assert_one_line(outcome(lambda: folder.link(tmp_path / "store" / STORED, "x.png")), "its folder is a link", "ab12")
    assert not (tmp_path / "out/x.png").exists() and "x.png" not in folder.journal.names()


@pytest.mark.parametrize("store_is_a_link", [False, True], ids=["store", "store-reached-by-a-link"])
def test_a_store_file_is_still_linked(tmp_path, store_is_a_link):
    (tmp_path / "real-store/ab").mkdir(parents=True)
    (tmp_path / "real-store" / STORED).write_bytes(b"PNG-x")
    store = tmp_path / "real-store"
    if store_is_a_link:  # data/image_store -> /mnt/big/store: its folders are still its own
        store = tmp_path / "store"
        store.symlink_to(tmp_path / "real-store")
    (tmp_path / "out").mkdir()
    OutputFolder(tmp_path / "out").link(store / STORED, "x.png")
    assert (tmp_path / "out/x.png").read_bytes() == b"PNG-x"
    assert os.path.samefile(tmp_path / "out/x.png", tmp_path / "real-store" / STORED)  # a hard link, not a copy


# ---------------------------------------------------------------- 3. through the CLI: publish, exit 2


def webdataset_release(root: Path) -> Path:
    """root/ with this repo's params.yaml and data/releases/v2/ in the webdataset layout (rows.parquet pointing
    into its tar shards); the first train shard's path."""
    import pandas as pd
    from PIL import Image

    from helpers import REPO
    from scripts.lib.export import export_options, write_rows_table, write_split

    release, images = root / "data/releases/v2", root / "images"
    images.mkdir(parents=True)
    (root / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    for number in range(3):
        Image.new("RGB", (16, 12), (number * 60, 80, 160)).save(images / f"{number}.png")
    table = pd.DataFrame(
        {
            "id": [f"t{number:015d}" for number in range(3)],
            "source": "diffusiondb",
            "split": ["train", "train", "validation"],
            "text": [f"a picture number {number}" for number in range(3)],
            "image": [str(images / f"{number}.png") for number in range(3)],
            "width": 16,
            "height": 12,
        }
    ).assign(orig_text=lambda frame: frame.text)
    for split in ("train", "validation"):
        write_split(table[table.split == split], release / split, *export_options("webdataset", "test"))
    write_rows_table(table, release)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(release / "preview.jpg", format="JPEG")
    (release / "README.md").write_text("---\nlicense: other\n---\n# v2\n\nrelease card text\n", encoding="utf-8")
    return sorted((release / "train").rglob("*.tar"))[0]


def linked_outside(root: Path, shard: Path) -> None:
    os.link(shard, root / "outside.tar")


def swapped_for_an_outside_copy(root: Path, shard: Path) -> None:
    (root / "outside.tar").write_bytes(shard.read_bytes())  # the same bytes: rows.parquet's sha256 still matches
    shard.unlink()
    os.link(root / "outside.tar", shard)


def linked_twice_in_the_release(root: Path, shard: Path) -> None:
    os.link(shard, shard.parent / "copy.bin")


@pytest.mark.parametrize(
    "case", [linked_outside, swapped_for_an_outside_copy, linked_twice_in_the_release], ids=lambda c: c.__name__
)
def test_publish_refuses_a_shard_with_another_hard_link(tmp_path, monkeypatch, capfd, case):
    from helpers import cli

    shard = webdataset_release(tmp_path / "repo")
    case(tmp_path / "repo", shard)
    argv = ["publish", "v2", "--repo-id", "me/t2i-v2", "--dry-run", "--out", tmp_path / "hub"]
    result = cli(argv, tmp_path / "repo", monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "has another hard link" in result.stderr and shard.name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
