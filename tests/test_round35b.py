"""Round 35b: an image or archive member read from one checked open, never by its name again.

1. publish read a shard or part member with release_image_bytes(Path(), the whole ref): the open's check
   confined it to the working folder, not the release, so a `..` ref or a link out of the release put there
   after read_split's checks (by name) was read and uploaded. It is now confined to the release.
2. release_image_bytes read a zip member or a plain image file by name (archive.read_member): a link out of
   the release, a file outside hard-linked in, a `..` ref or a zip renamed over it was read. Each is now opened
   once in the release (a regular file, one name) and read from that open.
3. archive.read_member (export's source shards, bucketed's decode) looked at the file by name, then opened it
   by name again: a FIFO or folder put there between was read (the read blocked for good, or a traceback). It is
   now opened once, never waited on, checked on the open and read from it.
4. caption's member of a tar or zip shard was read by name (then refused when the shard was renamed over
   meanwhile; a FIFO put there blocked the run): it is read from the shard opened and checked.
5. generate's ImageStore.take linked the output's file by name (os.link follows a link): a link to a file
   elsewhere, a FIFO or a folder put there came into the store. It is opened once, never through a link.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.refusals import assert_one_line, outcome
from scripts.lib import archive, export
from scripts.lib.archive import UnsafeArchive
from scripts.lib.errors import DataError

PNG, SECRET = b"\x89PNG-checked", b"SECRET-elsewhere"


def _tar(path: Path, data: bytes, name: str = "a.png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, data: bytes, name: str = "a.png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, data)
    return path


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- 1. publish: confined to the release


def _publish_read(root: Path, ref: str) -> bytes:
    from scripts.tools.publish import image_read

    release = "data/releases/v2"
    return image_read({"_ref": f"{release}/{ref}", "_root": release, "_one_name": False})


def shard_by_a_dotdot_ref(root: Path) -> str:
    _tar(root / "data/elsewhere/shard.tar", SECRET)
    return "../../elsewhere/shard.tar!/a.png"


def zip_by_a_dotdot_ref(root: Path) -> str:
    _zip(root / "data/elsewhere/images.zip", SECRET)
    return "../../elsewhere/images.zip!/a.png"


def shard_linked_out_of_the_release(root: Path) -> str:
    shard = root / "data/releases/v2/train/shard-000000.tar"
    shard.unlink()
    shard.symlink_to(_tar(root / "data/elsewhere/shard.tar", SECRET))
    return "train/shard-000000.tar!/a.png"


def shard_folder_linked_out_of_the_release(root: Path) -> str:
    train = root / "data/releases/v2/train"
    shutil.rmtree(train)
    _tar(root / "data/elsewhere/train/shard-000000.tar", SECRET)
    train.symlink_to(root / "data/elsewhere/train")
    return "train/shard-000000.tar!/a.png"


@pytest.mark.parametrize(
    "case",
    [
        shard_by_a_dotdot_ref,
        zip_by_a_dotdot_ref,
        shard_linked_out_of_the_release,
        shard_folder_linked_out_of_the_release,
    ],
    ids=lambda case: case.__name__,
)
def test_publish_reads_a_member_only_from_inside_the_release(tmp_path, monkeypatch, case):
    """As if swapped in after read_split's checks by name: the working folder holds it, the release does not."""
    monkeypatch.chdir(tmp_path)
    _tar(tmp_path / "data/releases/v2/train/shard-000000.tar", PNG)
    assert _publish_read(tmp_path, "train/shard-000000.tar!/a.png") == PNG
    ref = case(tmp_path)
    assert_one_line(outcome(lambda: _publish_read(tmp_path, ref)), "leads out of", "data/releases/v2")


# ---------------------------------------------------------------- 2. release_image_bytes: a zip or a plain file


def image_linked_out(root: Path, release: Path) -> tuple[str, str, str]:
    (release / "train/a.png").unlink()
    (release / "train/a.png").symlink_to(_file(root / "secret.png", SECRET))
    return "train/a.png", "leads out of", "a.png"


def image_folder_linked_out(root: Path, release: Path) -> tuple[str, str, str]:
    shutil.rmtree(release / "train")
    _file(root / "elsewhere/a.png", SECRET)
    (release / "train").symlink_to(root / "elsewhere")
    return "train/a.png", "leads out of", "a.png"


def image_by_a_dotdot_ref(root: Path, release: Path) -> tuple[str, str, str]:
    _file(root / "secret.png", SECRET)
    return "../secret.png", "leads out of", "secret.png"


def zip_linked_out(root: Path, release: Path) -> tuple[str, str, str]:
    (release / "train/images.zip").unlink()
    (release / "train/images.zip").symlink_to(_zip(root / "secret.zip", SECRET))
    return "train/images.zip!/a.png", "leads out of", "images.zip"


def zip_hard_linked_from_outside(root: Path, release: Path) -> tuple[str, str, str]:
    (release / "train/images.zip").unlink()
    os.link(_zip(root / "secret.zip", SECRET), release / "train/images.zip")
    return "train/images.zip!/a.png", "has another hard link", "images.zip"


def zip_hard_linked_twice_in_the_release(root: Path, release: Path) -> tuple[str, str, str]:
    os.link(release / "train/images.zip", release / "train/copy.bin")
    return "train/images.zip!/a.png", "has another hard link", "images.zip"


def _release(root: Path) -> Path:
    release = root / "release"
    _file(release / "train/a.png", PNG)
    _zip(release / "train/images.zip", PNG)
    return release


@pytest.mark.parametrize(
    "case",
    [
        image_linked_out,
        image_folder_linked_out,
        image_by_a_dotdot_ref,
        zip_linked_out,
        zip_hard_linked_from_outside,
        zip_hard_linked_twice_in_the_release,
    ],
    ids=lambda case: case.__name__,
)
def test_a_release_image_or_zip_member_is_read_from_one_checked_open(tmp_path, case):
    release = _release(tmp_path)
    ref, expected, named = case(tmp_path, release)
    assert_one_line(outcome(lambda: export.release_image_bytes(release, ref)), expected, named)


def _swapped_at_the_member_check(monkeypatch, swap) -> None:
    """`swap()` run when the member's name is checked: after the archive was looked at (and, now, opened)."""
    real = archive.check_member_name

    def checking(name: str) -> None:
        swap()
        real(name)

    monkeypatch.setattr(archive, "check_member_name", checking)


def _renamed_over(path: Path, make) -> None:
    os.replace(make(path.with_name("new-" + path.name), SECRET), path)


def _fifo_over(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("ref", "swap"),
    [
        ("train/images.zip!/a.png", lambda p: _renamed_over(p, _zip)),
        ("train/images.zip!/a.png", _fifo_over),
    ],
    ids=["zip-renamed-over", "zip-swapped-for-a-fifo"],
)
def test_a_release_zip_member_is_the_checked_zips(tmp_path, monkeypatch, ref, swap):
    release = _release(tmp_path)
    _swapped_at_the_member_check(monkeypatch, lambda: swap(release / "train/images.zip"))
    assert outcome(lambda: export.release_image_bytes(release, ref)) == PNG


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("train/images.zip!/../a.png", "refused (unsafe_member)"),
        ("train/images.zip!/b.png", "image not found"),
        ("train/gone.png", "not found"),
    ],
    ids=["zip-member-dotdot", "no-such-member", "no-such-file"],
)
def test_a_release_image_still_refused_in_one_line(tmp_path, ref, expected):
    release = _release(tmp_path)
    assert_one_line(outcome(lambda: export.release_image_bytes(release, ref)), expected, ref.split("!/")[0][6:])


def test_a_release_image_and_zip_member_are_still_read(tmp_path):
    release = _release(tmp_path)
    assert export.release_image_bytes(release, "train/a.png") == PNG
    assert export.release_image_bytes(release, "train/images.zip!/a.png") == PNG


# ---------------------------------------------------------------- 3. read_member: one open, never waited on


def _swapped_after_the_look(monkeypatch, path: Path, swap) -> None:
    """`swap(path)` run right after the first os.stat of `path` (the look by name that came before the open)."""
    real, done = os.stat, []

    def looking(target, *args, **kwargs):
        found = real(target, *args, **kwargs)
        if not done and os.fspath(target) == str(path):
            done.append(swap(path))
        return found

    monkeypatch.setattr(os, "stat", looking)


def _folder_over(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _bucketed_decode(ref: str) -> object:
    from scripts.lib.bucketed import ImageFault, decode

    try:
        return decode(ref)
    except ImageFault as exc:
        return DataError(f"{ref}: {exc}")


READERS = {
    "export": export.recorded_image_bytes,
    "bucketed": _bucketed_decode,
    "read_member": lambda ref: archive.read_member(ref),
}


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
@pytest.mark.parametrize(
    ("make", "member", "swap"),
    [
        (_file, None, _fifo_over),
        (_tar, "a.png", _fifo_over),
        (_zip, "a.png", _fifo_over),
        (_file, None, _folder_over),
    ],
    ids=["image-swapped-for-a-fifo", "tar-swapped-for-a-fifo", "zip-swapped-for-a-fifo", "image-swapped-for-a-folder"],
)
def test_a_member_is_read_from_the_one_open_it_was_checked_on(tmp_path, monkeypatch, reader, make, member, swap):
    path = make(tmp_path / ("a.png" if make is _file else f"a.{make.__name__[1:]}"), PNG)
    ref = str(path) if member is None else f"{path}!/{member}"
    _swapped_after_the_look(monkeypatch, path, swap)
    result = outcome(lambda: READERS[reader](ref))
    if isinstance(result, UnsafeArchive):
        result = DataError(f"{ref}: refused ({result.reason})")
    assert_one_line(result, "not_a_regular_file", path.name)


# ---------------------------------------------------------------- 4. caption: the checked shard's member


@pytest.mark.parametrize(
    ("make", "swap"),
    [
        (_tar, lambda p: _renamed_over(p, _tar)),
        (_zip, lambda p: _renamed_over(p, _zip)),
        (_tar, _fifo_over),
        (_zip, _fifo_over),
    ],
    ids=["tar-renamed-over", "zip-renamed-over", "tar-swapped-for-a-fifo", "zip-swapped-for-a-fifo"],
)
def test_caption_reads_the_member_of_the_shard_it_checked(tmp_path, monkeypatch, make, swap):
    from scripts.lib.caption_images import read_image

    shard = make(tmp_path / "images" / f"shard.{make.__name__[1:]}", PNG)
    _swapped_at_the_member_check(monkeypatch, lambda: swap(shard))
    params = SimpleNamespace(images=str(tmp_path / "images"), max_image_bytes=1 << 20)
    assert outcome(lambda: read_image(f"{shard}!/a.png", params)) == PNG


# ---------------------------------------------------------------- 5. ImageStore.take: never through a link


def output_linked_out(out: Path, root: Path) -> str:
    (out / "0.png").symlink_to(_file(root / "secret.png", SECRET))
    return "leads out of"


def output_linked_to_a_file_beside_it(out: Path, root: Path) -> str:
    (out / "0.png").symlink_to(_file(out / "notes.txt", SECRET))
    return "a symbolic link"


def output_a_fifo(out: Path, root: Path) -> str:
    os.mkfifo(out / "0.png")
    return "is a FIFO"


def output_a_folder(out: Path, root: Path) -> str:
    (out / "0.png").mkdir()
    return "is a folder"


@pytest.mark.parametrize(
    "case",
    [output_linked_out, output_linked_to_a_file_beside_it, output_a_fifo, output_a_folder],
    ids=lambda c: c.__name__,
)
def test_the_store_takes_in_only_a_regular_file_of_the_output(tmp_path, case):
    from scripts.lib.image_store import ImageStore

    store, out = ImageStore(tmp_path / "store"), tmp_path / "out"
    out.mkdir()
    expected = case(out, tmp_path)
    stored = f"ab/ab{'1' * 62}.png"
    assert_one_line(outcome(lambda: store.take(out / "0.png", stored)), expected, "0.png")
    assert not os.path.lexists(tmp_path / "store" / stored)


def test_the_store_still_takes_in_an_output_file(tmp_path):
    from scripts.lib.image_store import ImageStore

    store, stored = ImageStore(tmp_path / "store"), f"ab/ab{'1' * 62}.png"
    assert store.take(_file(tmp_path / "out/0.png", PNG), stored)
    assert (tmp_path / "store" / stored).read_bytes() == PNG
    assert os.path.samefile(tmp_path / "store" / stored, tmp_path / "out/0.png")
