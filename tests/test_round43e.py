"""Round 43e: every path that comes from data is confined to its root where it is opened (issue #24 class 4),
for the readers still open after rounds 39f and 41c, one table per reader, on real files, tars, links and FIFOs:

1. caption: a `..`, an absolute path, a link out and a FIFO were refused already (guard rows). A HARD link is read:
   generate's images are hard links into the generation store, so round 43e's `hard_link` refusal skipped every
   generated image (docs/captioning.md captions them); the merge dropped it and a guard row holds that.
2. archive.read_image read any reference by name with no root at all: a `..`, an absolute path, a link out, a
   hard link to a file elsewhere were decoded, a FIFO counted as an archive refusal. It takes the folder the
   reference came from and reads it through safe_paths.open_within (one open, checked by its descriptor).
3. ingest (gustavosta's image_path) and publish (metadata.jsonl's file_name) already hold: guard rows only.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.archives import write_tar
from helpers.refusals import caption_reads
from scripts.lib.errors import DataError

SECRET = b"SECRET-" * 8


def png(width: int = 4, height: int = 3) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _outside(tmp_path: Path, name: str = "secret.png", data: bytes | None = None) -> Path:
    """A file outside every root of the test: what must never be read."""
    (tmp_path / "outside").mkdir(exist_ok=True)
    path = tmp_path / "outside" / name
    path.write_bytes(png(7, 5) if data is None else data)
    return path


# ---------------------------------------------------------------- 1. caption
def _manifest(images: Path, names: list[str]) -> None:
    ids = [f"r{n}" for n in range(len(names))]
    pq.write_table(pa.table({"id": ids, "file": names}), images / "manifest.parquet")


def cap_guard_dotdot_in_manifest(tmp_path, images):
    _outside(tmp_path)
    _manifest(images, ["a.png", "../outside/secret.png"])
    return "error", "leaves the images folder"


def cap_guard_absolute_in_manifest(tmp_path, images):
    _manifest(images, ["a.png", str(_outside(tmp_path))])
    return "error", "leaves the images folder"


def cap_guard_link_out_in_manifest(tmp_path, images):
    (images / "b.png").symlink_to(_outside(tmp_path))
    _manifest(images, ["a.png", "b.png"])
    return "error", "leaves its folder"


def cap_guard_fifo_in_manifest(tmp_path, images):
    os.mkfifo(images / "b.png")
    _manifest(images, ["a.png", "b.png"])
    return "error", "not a regular file"


def cap_guard_link_out_in_folder(tmp_path, images):
    (images / "b.png").symlink_to(_outside(tmp_path))
    return "skip", "symlink"


def cap_guard_fifo_in_folder(tmp_path, images):
    os.mkfifo(images / "b.png")
    return "skip", "not_a_regular_file"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(cap_guard_dotdot_in_manifest, marks=pytest.mark.slow),
        pytest.param(cap_guard_absolute_in_manifest, marks=pytest.mark.slow),
        pytest.param(cap_guard_link_out_in_manifest, marks=pytest.mark.slow),
        pytest.param(cap_guard_fifo_in_manifest, marks=pytest.mark.slow),
        pytest.param(cap_guard_link_out_in_folder, marks=pytest.mark.slow),
        pytest.param(cap_guard_fifo_in_folder, marks=pytest.mark.slow),
    ],
    ids=lambda case: case.__name__,
)
def test_caption_reads_only_its_folders_own_files(tmp_path, case):
    """All slow: a manifest or a hard link asks DVC (dvc_cache_of, is_cache_copy), which imports dvc (2.5 s)."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png())
    outcome, expected = case(tmp_path, images)
    if outcome == "error":
        with pytest.raises(DataError) as caught:
            caption_reads(images)
        assert expected in str(caught.value) and "\n" not in str(caught.value)
        return
    sent, skipped = caption_reads(images)
    assert skipped[expected] == 1, skipped
    assert all("b" not in name and "s.tar" not in name for name in sent), sent  # nothing from outside was read
    assert any(name.endswith("a.png") or name == "r0" for name in sent)  # the folder's own image still is


@pytest.mark.slow  # a manifest asks DVC (dvc_cache_of), which imports dvc
def test_guard_caption_reads_generated_images_hard_linked_from_the_store(tmp_path, monkeypatch):
    """Round 43e refused every hard-linked image (`hard_link`): generate's data/images/S are hard links into the
    generation store (and DVC's cache), so captioning generated images (docs/captioning.md) skipped them all.
    The merge kept the confinement and dropped that refusal; this row holds it. Since round 44c a hard link is
    read only as generate's (its manifest row's key names the store entry it is: tests/test_round44c.py)."""
    monkeypatch.chdir(tmp_path)
    key = "c" * 64
    store, images = tmp_path / "data" / "image_store" / key[:2], tmp_path / "images"
    store.mkdir(parents=True)
    images.mkdir()
    (store / f"{key}.png").write_bytes(png())
    os.link(store / f"{key}.png", images / "a.png")
    pq.write_table(pa.table({"id": ["r0"], "file": ["a.png"], "key": [key]}), images / "manifest.parquet")
    sent, skipped = caption_reads(images)
    assert sent == ["r0"] and not skipped, (sent, skipped)


# ---------------------------------------------------------------- 2. archive.read_image
def img_dotdot(tmp_path, root):
    _outside(tmp_path)
    return f"{root}/../outside/secret.png"


def img_absolute(tmp_path, root):
    return str(_outside(tmp_path))


def img_link_out(tmp_path, root):
    (root / "b.png").symlink_to(_outside(tmp_path))
    return f"{root}/b.png"


def img_hard_link(tmp_path, root):
    os.link(_outside(tmp_path), root / "b.png")
    return f"{root}/b.png"


def img_hard_linked_shard(tmp_path, root):
    os.link(write_tar(tmp_path / "outside.tar", [("0001.png", png(7, 5))]), root / "s.tar")
    return f"{root}/s.tar!/0001.png"


def img_fifo(tmp_path, root):
    os.mkfifo(root / "b.png")
    return f"{root}/b.png"


@pytest.mark.parametrize(
    "case",
    [
        img_dotdot,
        img_absolute,
        img_link_out,
        img_fifo,
        *(pytest.param(c, marks=pytest.mark.slow) for c in (img_hard_link, img_hard_linked_shard)),
    ],
    ids=lambda case: case.__name__,
)
def test_read_image_reads_only_under_its_root(tmp_path, case):
    from scripts.lib.archive import read_image

    root = tmp_path / "src"
    root.mkdir()
    ref = case(tmp_path, root)
    with pytest.raises(DataError) as caught:
        read_image(ref, root)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_read_image_reads_a_file_and_a_member_under_its_root(tmp_path):
    from scripts.lib.archive import read_image

    root = tmp_path / "src"
    root.mkdir()
    (root / "a.png").write_bytes(png(4, 3))
    shard = write_tar(root / "s.tar", [("0001.png", png(6, 2))])
    assert read_image(f"{root}/a.png", root).size == (4, 3)
    assert read_image(f"{shard}!/0001.png", root).size == (6, 2)
    (root / "sub").mkdir()
    (root / "sub" / "in.png").symlink_to(root / "a.png")  # a link that stays inside: read
    assert read_image(f"{root}/sub/in.png", root).size == (4, 3)


# ---------------------------------------------------------------- 3. guards: ingest and publish
def _gustavosta(tmp_path: Path, image_path: str) -> tuple[list[dict], dict]:
    from scripts.ingest import ingest
    from scripts.lib.readers import SourceConfig

    src = tmp_path / "g"
    (src / "train_images").mkdir(parents=True, exist_ok=True)
    (src / "train_images" / "ok.png").write_bytes(png())
    (src / "train.csv").write_text(f"Prompt,image_path\nfine,train_images/ok.png\nbad,{image_path}\n")
    (src / "eval.csv").write_text("Prompt,image_path\n")
    out = tmp_path / "prompts" / "g.parquet"
    report = ingest("g", SourceConfig(kind="gustavosta", path=str(src), on_error="skip"), out)
    return pq.read_table(out).to_pylist(), report


def ing_guard_dotdot(tmp_path):
    _outside(tmp_path)
    return "../outside/secret.png"


def ing_guard_absolute(tmp_path):
    return str(_outside(tmp_path))


def ing_guard_link_out(tmp_path):
    (tmp_path / "g" / "train_images").mkdir(parents=True)
    (tmp_path / "g" / "train_images" / "b.png").symlink_to(_outside(tmp_path))
    return "train_images/b.png"


def ing_guard_fifo(tmp_path):
    (tmp_path / "g" / "train_images").mkdir(parents=True)
    os.mkfifo(tmp_path / "g" / "train_images" / "b.png")
    return "train_images/b.png"


@pytest.mark.parametrize(
    "case", [ing_guard_dotdot, ing_guard_absolute, ing_guard_link_out, ing_guard_fifo], ids=lambda c: c.__name__
)
@pytest.mark.slow  # an ingest run's first imports: 1 to 7 s on a shared machine
def test_ingest_guard_a_row_image_out_of_the_source_is_a_counted_skip(tmp_path, case):
    rows, report = _gustavosta(tmp_path, case(tmp_path))
    assert [row["prompt"] for row in rows] == ["fine"]
    assert sum(report["skipped"].values()) == 1, report["skipped"]


def _release(tmp_path: Path, file_name: str) -> Path:
    release = tmp_path / "release"
    (release / "train").mkdir(parents=True, exist_ok=True)
    (release / "train" / "a.png").write_bytes(png())
    lines = [{"file_name": "a.png", "id": "a", "source": "s", "text": "ok"}]
    lines.append({"file_name": file_name, "id": "b", "source": "s", "text": "bad"})
    (release / "train" / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return release


def pub_guard_dotdot(tmp_path):
    _outside(tmp_path)
    return "../../outside/secret.png"


def pub_guard_absolute(tmp_path):
    return str(_outside(tmp_path))


def pub_guard_link_out(tmp_path):
    (tmp_path / "release" / "train").mkdir(parents=True)
    (tmp_path / "release" / "train" / "b.png").symlink_to(_outside(tmp_path))
    return "b.png"


def pub_guard_hard_link(tmp_path):
    (tmp_path / "release" / "train").mkdir(parents=True)
    os.link(_outside(tmp_path), tmp_path / "release" / "train" / "b.png")
    return "b.png"


def pub_guard_fifo(tmp_path):
    (tmp_path / "release" / "train").mkdir(parents=True)
    os.mkfifo(tmp_path / "release" / "train" / "b.png")
    return "b.png"


@pytest.mark.parametrize(
    "case",
    [
        pub_guard_dotdot,
        pub_guard_absolute,
        pub_guard_link_out,
        pub_guard_hard_link,
        pub_guard_fifo,
    ],
    ids=lambda c: c.__name__,
)
@pytest.mark.slow  # publish's first imports (pandas, its export helpers): 5 s on a shared machine
def test_publish_guard_reads_only_the_releases_own_images(tmp_path, case):
    from scripts.tools.publish import image_read, read_split

    release = _release(tmp_path, case(tmp_path))
    with pytest.raises(DataError) as caught:
        for record in read_split(release, "train"):
            assert image_read(record) != png(7, 5)  # the outside file's bytes are never read
    assert "\n" not in str(caught.value)
