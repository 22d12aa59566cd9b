"""Round 11g's breaks, one table per class (every row failed before its fix):

1. A release wrote into the user's image: `export: simpletuner` hard-links an image stored as `img0.txt`
   into the release as `<id>.txt`, then wrote the caption to `<id>.txt`, through the link, into the user's
   file. No writer of a release folder writes to a name already there (it may be a link to a user's file),
   and a split row whose image has no image extension is one line naming the split file and row.
2. `export: {format: webdataset, image_format: keep}` of an image stored as `img0.json` or `img0.txt`
   wrote two members of one name (the image, the metadata or caption): the sample lost its image at exit 0.
   The row is refused (class 1's check), and a tar sample with an extension twice is refused by the writer.
3. `generate --store` on another filesystem failed on reuse (`Invalid cross-device link`): the copy that
   replaces a hard link there was made in the store's `.tmp` and renamed across filesystems.
4. Error lines that named no row: the standalone `simpletuner --data-dir` with image_names that are a file
   and a folder (`a.png/x.png`, then `a.png`) was `cannot write (Is a directory)`; a release row with a
   200-character extension was `File name too long`.
Real files: PNG images, split tables as split@S writes them, tar shards, a second filesystem (/dev/shm)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from helpers import cli, write_tar
from helpers.workspace import PNG, error_line, leftovers, split_rows, write_params
from scripts.lib.errors import DataError
from scripts.lib.marks import MARKER
from scripts.lib.tables import write_parquet

SOURCE = "diffusiondb"
SPLIT_FILE = f"data/splits/{SOURCE}/train.parquet"


def release_workspace(root: Path, export, image: str, ids: list[str] | None = None) -> Path:
    """Release r1 of one source whose four rows name `image` (PNG bytes, their sha256 recorded), written
    under data/images/<source>/ (`pack.tar!/m.txt`: a member of a tar there); the split tables as split@S
    writes them. Returns the file that holds the image's bytes."""
    write_params(root, releases={"r1": {"components": [{"source": SOURCE}], "export": export}})
    images = root / "data" / "images" / SOURCE
    images.mkdir(parents=True)
    archive, _, member = image.partition("!/")
    if member:
        write_tar(images / archive, [(member, PNG)])
    else:
        (images / image).write_bytes(PNG)
    rows = split_rows(4, SOURCE, Path("data/images") / SOURCE / image)
    rows["image"] = f"data/images/{SOURCE}/{image}"
    rows["image_sha256"] = hashlib.sha256(PNG).hexdigest()
    if ids is not None:
        rows["id"] = ids
    folder = root / "data" / "splits" / SOURCE
    folder.mkdir(parents=True)
    write_parquet(rows.iloc[:3].assign(split="train"), folder / "train.parquet")
    write_parquet(rows.iloc[3:].assign(split="validation"), folder / "validation.parquet")
    (folder / MARKER).write_text("", encoding="utf-8")
    return images / archive


def refused_release(root: Path, monkeypatch, capfd, export, image: str, ids=None) -> str:
    """The release of `release_workspace`: one line naming the split file and row, exit 2, the user's file
    as it was, no release and nothing half-written left."""
    stored = release_workspace(root, export, image, ids)
    before = stored.read_bytes()
    result = cli(["release", "r1", "data/splits", "data/releases/r1"], root, monkeypatch, capfd)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    line = error_line(result.stderr)
    assert line.startswith(f"error: {SPLIT_FILE}: row 1: image "), line
    assert stored.read_bytes() == before  # the user's image, never written
    assert not (root / "data" / "releases" / "r1").exists() and leftovers(root) == []
    return line


# ---------------------------------------------------------------- 1. a release never writes into the user's image
NOT_IMAGE_NAMES = {  # case -> (export, the image's name under data/images/<source>/)
    "simpletuner, an image stored as .txt (its caption's name)": ("simpletuner", "img0.txt"),
    "simpletuner, .TXT": ("simpletuner", "img0.TXT"),
    "imagefolder, .jsonl (rows.parquet lost its image)": ("imagefolder", "img0.jsonl"),
    "parquet, .txt": ("parquet", "img0.txt"),
}


@pytest.mark.parametrize("case", NOT_IMAGE_NAMES)
def test_a_row_whose_image_has_no_image_extension_is_one_line_naming_it(tmp_path, monkeypatch, capfd, case):
    export, image = NOT_IMAGE_NAMES[case]
    line = refused_release(tmp_path, monkeypatch, capfd, export, image)
    assert "has no image extension" in line


def _user_image_as_txt(folder: Path, mine: Path, rows: pd.DataFrame) -> pd.DataFrame:
    mine.write_bytes(PNG)  # the user's image, stored as .txt: placed as <id>.txt, its caption's name
    return rows.assign(image=str(mine))


def _caption_name_linked(folder: Path, mine: Path, rows: pd.DataFrame) -> pd.DataFrame:
    (folder / "images" / "s").mkdir(parents=True)
    os.link(mine, folder / "images" / "s" / f"{rows['id'][0]}.txt")
    return rows


def _metadata_linked(folder: Path, mine: Path, rows: pd.DataFrame) -> pd.DataFrame:
    os.link(mine, folder / "metadata.jsonl")
    return rows


def _image_name_linked(folder: Path, mine: Path, rows: pd.DataFrame) -> pd.DataFrame:
    # what a disk that ignores case makes of ids `A` and `a`: the second image's name is the first's link
    (folder / "images" / "s").mkdir(parents=True)
    os.link(mine, folder / "images" / "s" / f"{rows['id'][0]}.png")
    return rows


def _carried_image_name_linked(folder: Path, mine: Path, rows: pd.DataFrame) -> pd.DataFrame:
    write_tar(folder.parent / "pack.tar", [("m.png", PNG)])
    return _image_name_linked(folder, mine, rows.assign(image=f"{folder.parent / 'pack.tar'}!/m.png"))


TAKEN_NAMES = {  # case -> (layout, what is in the split folder before the export writes it)
    "simpletuner: the user's image stored as .txt": ("simpletuner", _user_image_as_txt),
    "simpletuner: a caption's name a link to the user's file": ("simpletuner", _caption_name_linked),
    "imagefolder: metadata.jsonl a link to the user's file": ("imagefolder", _metadata_linked),
    "imagefolder: an image's name a link to the user's file": ("imagefolder", _image_name_linked),
    "imagefolder: a carried image's name a link to the user's file": ("imagefolder", _carried_image_name_linked),
}


@pytest.mark.parametrize("case", TAKEN_NAMES)
def test_no_export_writes_into_a_name_already_in_its_folder(tmp_path, monkeypatch, case):
    """The release checks the rows first (above); the writers themselves never write to an existing name
    either: a staging folder holds hard links to the user's images."""
    from scripts.lib.export import write_split

    monkeypatch.chdir(tmp_path)
    layout, make = TAKEN_NAMES[case]
    image = tmp_path / "img.png"
    image.write_bytes(PNG)
    rows = split_rows(2, "s", image)
    folder, mine = tmp_path / "out" / "train", tmp_path / "mine.txt"
    folder.mkdir(parents=True)
    mine.write_bytes(b"the user's own notes\n")
    rows = make(folder, mine, rows)
    before = mine.read_bytes()
    with pytest.raises(DataError) as caught:
        write_split(rows, folder, layout, {})
    assert "\n" not in str(caught.value)
    assert mine.read_bytes() == before and image.read_bytes() == PNG


# ---------------------------------------------------------------- 2. one member per extension in a tar sample
KEPT_NAMES = {  # case -> the image's name under data/images/<source>/, exported with image_format: keep
    "stored as .json (the metadata's name)": "img0.json",
    "stored as .txt (the caption's name)": "img0.txt",
    "stored as .JSON": "img0.JSON",
    "a tar member stored as .txt": "pack.tar!/img0.txt",
}


@pytest.mark.parametrize("case", KEPT_NAMES)
def test_a_kept_image_never_shares_its_members_name(tmp_path, monkeypatch, capfd, case):
    export = {"format": "webdataset", "image_format": "keep"}
    assert "has no image extension" in refused_release(tmp_path, monkeypatch, capfd, export, KEPT_NAMES[case])


SAMPLES = {  # case -> a second sample's members
    "an image under the metadata's extension": [("json", PNG), ("txt", b"x\n"), ("json", b"{}")],
    "a caption twice, by case": [("png", PNG), ("txt", b"x\n"), ("TXT", b"y\n")],
    "two images of one extension": [("png", PNG), ("png", PNG), ("json", b"{}")],
}


@pytest.mark.parametrize("case", SAMPLES)
def test_the_shard_writer_refuses_a_sample_with_an_extension_twice(tmp_path, monkeypatch, case):
    from scripts.lib.shards import ShardWriter

    monkeypatch.chdir(tmp_path)
    writer = ShardWriter(tmp_path, 10)
    writer.add("good", [("png", PNG), ("txt", b"a\n"), ("json", b"{}")])
    with pytest.raises(DataError, match="two members named bad\\."):
        writer.add("bad", SAMPLES[case])
    writer.close()
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        assert tar.getnames() == ["good.png", "good.txt", "good.json"]  # nothing of the refused sample


# ---------------------------------------------------------------- 3. the store on another filesystem
def other_filesystem(tmp_path: Path) -> Path:
    """A folder on a filesystem other than tmp_path's (/dev/shm, a tmpfs), removed by the caller."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm: no second filesystem to link across")
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on tmp_path's filesystem: no second filesystem to link across")
    import tempfile

    return Path(tempfile.mkdtemp(dir=shm, prefix="t2i-round11g-"))


LINKS = {  # case -> (src, dst, temp folder), each "disk" (tmp_path) or "other" (/dev/shm); dst there already?
    "store there, output here (generate's reuse)": ("other", "disk", "other", False),
    "output here, store there, its temp here": ("disk", "other", "disk", False),
    "replacing a file here": ("other", "disk", "other", True),
}


@pytest.mark.parametrize("case", LINKS)
def test_a_link_across_filesystems_is_a_copy_renamed_in_on_the_destinations(tmp_path, monkeypatch, case):
    import shutil

    from scripts.lib.store_files import link_file

    monkeypatch.chdir(tmp_path)
    other = other_filesystem(tmp_path)
    try:
        where = {"disk": tmp_path / "disk", "other": other}
        src_fs, dst_fs, tmp_fs, exists = LINKS[case]
        for folder in where.values():
            (folder / "tmp").mkdir(parents=True, exist_ok=True)
        src, dst = where[src_fs] / "ab" / "src.png", where[dst_fs] / "out" / "img.png"
        src.parent.mkdir()
        src.write_bytes(PNG)
        if exists:
            dst.parent.mkdir()
            dst.write_bytes(b"old")
        link_file(src, dst, where[tmp_fs] / "tmp")
        assert dst.read_bytes() == PNG and src.read_bytes() == PNG
        assert [p for f in where.values() for p in f.rglob("*.tmp-*")] == []  # no temp left anywhere
    finally:
        shutil.rmtree(other)


def images_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.suffix in (".png", ".jpg")}


def test_generate_reuses_images_from_a_store_on_another_filesystem(tiny_model_dir, tmp_path, monkeypatch):
    """docs/generation.md: a wanted key found in the store is hard-linked, copied across filesystems."""
    import shutil

    from scripts.generate import generate
    from scripts.lib.params import Generate

    monkeypatch.chdir(tmp_path)
    other = other_filesystem(tmp_path)
    try:
        texts = ["a lighthouse at night", "a red fox in the snow"]
        table = pd.DataFrame({"id": ["row0", "row1"], "text": texts, "prompt": texts})
        settings = Generate(model=str(tiny_model_dir), steps=2, batch_size=1)
        store = other / "store"
        first = generate(table, settings, tmp_path / "a", store=store)
        assert first["rendered"] == 2
        rendered = images_in(tmp_path / "a")
        assert len(rendered) == 2
        cases = {"a second output folder": tmp_path / "b", "an output whose images were deleted": tmp_path / "a"}
        for name in rendered:
            (tmp_path / "a" / name).unlink()
        for case, output in cases.items():
            counts = generate(table, settings, output, store=store)
            assert counts["rendered"] == 0 and counts["from_store"] == 2, case
            assert images_in(output) == rendered, case
            assert not (output / ".generate-journal").exists() and leftovers(output) == [], case
    finally:
        shutil.rmtree(other)


# ---------------------------------------------------------------- 4. the row, named
CLASHES = {  # case -> image_names of one shard's records, in order: the last is refused
    "a file under an image's name": ["a.png/x.png", "a.png"],
    "a folder under a caption's name": ["q.png", "q.txt/z.png"],
    "a folder deeper down": ["m.png", "m.txt/n/o.webp"],
    "a file under a folder two deep": ["d/e.jpg/f.png", "d/e.jpg"],
}


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


UNWRITABLE = {  # case -> image_names of one shard's records, in order: the last is refused
    "a 300-character file name": ["x" * 300 + ".png"],
    "a folder name of 256 bytes": ["\u00e9" * 128 + "/a.png"],
    "a second name of one file, through '.'": ["a/b.png", "a/./b.png"],
}


def refused_image_name(root: Path, monkeypatch, capfd, names: list[str], reason: str) -> None:
    """`simpletuner --data-dir` of one shard whose records are named `names`: under --on-error fail the last
    one's line, naming shard, sample and name, with nothing written; under skip, it is counted under
    `reason` and the others are written."""
    import json

    members = []
    for n, name in enumerate(names):
        record = {"image_name": name, "short_caption": f"caption {n}", "width": 12, "height": 8}
        members += [(f"{n:03d}.png", _png((n * 90, 20, 200))), (f"{n:03d}.json", json.dumps(record).encode())]
    write_tar(root / "dalle3" / "data-000000.tar", members)
    argv = ["simpletuner", "dalle3", "o.parquet", "--data-dir", "data"]
    result = cli([*argv, "--on-error", "fail"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "data-000000.tar" in line and f"sample '{len(names) - 1:03d}'" in line, line
    assert repr(names[-1])[:40] in line, line
    assert sorted(p.name for p in root.iterdir()) == ["dalle3"]  # nothing written
    result = cli(argv, root, monkeypatch, capfd)  # skipped and counted, the others written
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{reason} 1" in result.stdout
    assert all((root / "data" / name).is_file() for name in names[:-1])


@pytest.mark.parametrize("case", CLASHES)
def test_simpletuner_names_the_sample_whose_image_name_is_a_file_and_a_folder(tmp_path, monkeypatch, capfd, case):
    refused_image_name(tmp_path, monkeypatch, capfd, CLASHES[case], "duplicate_image_name")


@pytest.mark.parametrize("case", UNWRITABLE)
def test_simpletuner_names_the_sample_whose_image_name_cannot_be_written(tmp_path, monkeypatch, capfd, case):
    refused_image_name(tmp_path, monkeypatch, capfd, UNWRITABLE[case], "bad_image_name")


def test_a_long_extension_is_the_rows_line_not_file_name_too_long(tmp_path, monkeypatch, capfd):
    ids = ["a" * 128, "b" * 128, "c" * 128, "d" * 128]
    line = refused_release(tmp_path, monkeypatch, capfd, "imagefolder", "img0." + "x" * 200, ids)
    assert "has no image extension" in line and "…" in line  # the name shortened, the line bounded
