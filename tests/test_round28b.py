"""Round 28b: every path is checked where it is opened, the leftovers of round 27a, one table per reader kind
(every row failed before its fix), on real files, links, FIFOs and runs of the command:

1. A stage's input named on the command line (split's input and `--order`, release's `--composed` rows) was
   checked by name (tables.existing_input) and opened again by name by each read: a FIFO swapped in blocked the
   command for good, a folder was read as a dataset of other rows, and a file renamed over (or rewritten in) the
   name between two reads of one run mixed two tables. Links are followed (DVC's symlink checkout, a user's
   own link); every read is of the one file the first read opened (side_files.held_open).
2. publish read each image of a release by name after release_file's check: a link out or a hard link swapped
   in was uploaded. It reads from one open checked there (publish.image_read: open_within).
3. caption's read_image checked the image's (or shard's) realpath, then opened it by name: a link out swapped
   in was sent to the captioning server. It reads from one open checked by its descriptor.
4. A workspace dvc.lock linked to nothing was "no lock" to the side tools (side_inputs.check_regular) and an
   error to the stages (side_files.present_file): one rule now, a link to nothing an error where it is read.
5. Three DVC-cache rules (safe_paths.Roots, simpletuner's release config, caption's manifest) became one
   (safe_paths.dvc_cache_of): a cache DVC is configured to use elsewhere was "a link out" to two of them,
   and a cache that holds the repository (`cache.dir: /`) let a split table linked anywhere pass in the third.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.archives import write_tar
from helpers.commands import cli
from helpers.workspace import PNG, error_line, make_splits, write_params
from scripts.lib import positions, tables
from scripts.lib.archive import UnsafeArchive
from scripts.lib.errors import DataError

SPLIT = {"method": "shuffle", "validation_fraction": 0.25, "seed": 7}
RELEASES = {"r": {"components": [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]}}


def _table(ids: list[str]) -> pa.Table:
    return pa.table({"id": ids, "text": [f"prompt {i}" for i in ids]})


def _after_reads(monkeypatch, target: Path, reads: int, replace) -> None:
    """`replace` runs once, right after the `reads`-th look of tables.existing_input at `target` (each read of a
    stage input starts with one): the moment between two reads of one run, or a check and its open."""
    real, target, seen = tables.existing_input, os.path.abspath(target), [0]

    def looking(path):
        checked = real(path)
        if os.path.abspath(path) == target:
            seen[0] += 1
            if seen[0] == reads:
                replace()
        return checked

    monkeypatch.setattr(tables, "existing_input", looking)
    monkeypatch.setattr(positions, "existing_input", looking)  # split's --order positions look there


def _renamed_over(path: Path, table: pa.Table):
    def replace() -> None:
        pq.write_table(table, path.with_name("other.parquet"))
        os.replace(path.with_name("other.parquet"), path)

    return replace


# ---------------------------------------------------------------- 1. a stage's inputs named on the command line


def input_renamed_over_between_its_reads(root: Path):
    # the rows streamed repeat an id; the ids checked unique came from the table renamed over them
    pq.write_table(_table(["a", "a", "b", "c"]), root / "in.parquet")
    replace = _renamed_over(root / "in.parquet", _table(["x", "y", "z", "w"]))
    return ["split", "s", "in.parquet", "out"], root / "in.parquet", replace, "duplicate id 'a'"


def input_rewritten_in_place_between_its_reads(root: Path):
    pq.write_table(_table(["a", "b", "c", "d"]), root / "in.parquet")

    def rewrite() -> None:
        with open(root / "in.parquet", "r+b") as file:  # the same file, other rows
            pq.write_table(_table(["p", "q", "r", "s", "t", "u"]), file)

    return ["split", "s", "in.parquet", "out"], root / "in.parquet", rewrite, "replaced or changed while this command"


def order_renamed_over_between_its_reads(root: Path):
    ids = [f"r{i}" for i in range(20)]
    pq.write_table(_table(ids), root / "in.parquet")
    pq.write_table(pa.table({"id": ids, "position": list(range(20))}), root / "order.parquet")
    other = pa.table({"id": ids, "position": [(i * 7) % 20 for i in range(20)]})  # the ids checked, reordered
    argv = ["split", "s", "in.parquet", "out", "--order", "order.parquet"]
    return argv, root / "order.parquet", _renamed_over(root / "order.parquet", other), None


def input_reached_through_a_link_renamed_over(root: Path):
    (root / "cache").mkdir()
    pq.write_table(_table(["a", "a", "b"]), root / "cache/in.parquet")
    (root / "in.parquet").symlink_to("cache/in.parquet")  # a link is followed: DVC's symlink checkout
    replace = _renamed_over(root / "cache/in.parquet", _table(["x", "y"]))
    return ["split", "s", "in.parquet", "out"], root / "in.parquet", replace, "duplicate id 'a'"


@pytest.mark.slow  # runs the command (or opens DVC's repository): seconds on two cores
@pytest.mark.parametrize(
    "case",
    [
        input_renamed_over_between_its_reads,
        input_rewritten_in_place_between_its_reads,
        order_renamed_over_between_its_reads,
        input_reached_through_a_link_renamed_over,
    ],
    ids=lambda case: case.__name__,
)
def test_split_reads_one_version_of_each_input(tmp_path, monkeypatch, capfd, case):
    """Every read of one run is of the file the first read opened (a file renamed over the name is not seen:
    the error or output is the first file's), and a file written in place since is one line."""
    write_params(tmp_path, split=SPLIT)
    argv, target, replace, expected = case(tmp_path)
    if expected is None:  # the output of the file as it was, unswapped
        assert cli([*argv[:3], "unswapped", *argv[4:]], tmp_path, monkeypatch, capfd).returncode == 0
    _after_reads(monkeypatch, target, 2, replace)  # after the first read's open, before the second's
    result = cli(argv, tmp_path, monkeypatch, capfd)
    if expected is None:
        assert result.returncode == 0, result.stderr
        for name in ("train.parquet", "validation.parquet"):
            assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "unswapped" / name).read_bytes()
        return
    assert result.returncode == 2, result.stderr
    assert expected in error_line(result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # runs the command (or opens DVC's repository): seconds on two cores
def test_a_split_input_that_is_a_link_is_read(tmp_path, monkeypatch, capfd):
    """The rule for a command-line input: a link is followed (DVC's own symlink checkout), the file read is
    the file checked."""
    write_params(tmp_path, split=SPLIT)
    (tmp_path / "cache").mkdir()
    pq.write_table(_table([f"r{i}" for i in range(8)]), tmp_path / "cache/in.parquet")
    (tmp_path / "in.parquet").symlink_to(tmp_path / "cache/in.parquet")
    result = cli(["split", "s", "in.parquet", "out"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr


def _fifo_in(path: Path):
    def replace() -> None:
        path.unlink()
        os.mkfifo(path)

    return replace


def _folder_in(path: Path):
    def replace() -> None:
        path.unlink()
        path.mkdir()
        pq.write_table(_table(["theirs"]), path / "part.parquet")  # read as a dataset of other rows

    return replace


def _other_file_in(path: Path):
    return _renamed_over(path, _table(["theirs"]))


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (_fifo_in, "is a FIFO, not a regular file"),
        (_folder_in, "is a folder, not a regular file"),
        (_other_file_in, None),  # the other file, read whole: what a single read of a swap may see
    ],
    ids=["a FIFO", "a folder", "a file renamed over"],
)
def test_a_stage_input_swapped_after_its_look_is_never_waited_on(tmp_path, monkeypatch, replace, expected):
    """tables.read_parquet (every whole-table stage input: generate, synthesize, caption's manifest, release's
    split records) opens the name once and checks what it opened: a FIFO blocked the read in C for good."""
    path = tmp_path / "in.parquet"
    pq.write_table(_table(["ours"]), path)
    _after_reads(monkeypatch, path, 1, replace(path))
    outcome: list = []

    def read() -> None:
        try:
            outcome.append(tables.read_parquet(path)["id"].tolist())
        except DataError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked on the FIFO: free it (a writer that closes at once), then fail
        os.close(os.open(path, os.O_WRONLY))
        reader.join(10)
        pytest.fail("the read of a FIFO swapped in blocked")
    if expected is None:
        assert outcome == [["theirs"]]  # one read, of one file, whole: never a mix
        return
    assert isinstance(outcome[0], DataError) and expected in str(outcome[0]), outcome


def _prompts_workspace(root: Path, monkeypatch, capfd) -> None:
    recipe = {**RELEASES["r"], "export": "prompts"}  # streamed from rows.parquet (release.STREAMED_LAYOUTS)
    write_params(root, releases={"r": recipe})
    make_splits(root, n=8)
    assert cli(["compose", "r", "data/splits", "data/compose/r"], root, monkeypatch, capfd).returncode == 0


def _renamed_over_before_the_stream(rows: Path, ids):
    """release's ParquetChunks, finding rows.parquet renamed over (its ids made by `ids`) just before it opens
    it: after read_composed read and checked the ids, before the rows are streamed."""
    import scripts.release

    real, pending = scripts.release.ParquetChunks, [True]

    def chunks(path, *args, **kwargs):
        if pending:
            pending.clear()
            table = pq.read_table(rows)
            column = pa.array(ids(table.column("id").to_pylist()))
            _renamed_over(rows, table.set_column(table.schema.get_field_index("id"), "id", column))()
        return real(path, *args, **kwargs)

    return chunks


@pytest.mark.slow  # runs the command (or opens DVC's repository): seconds on two cores
@pytest.mark.parametrize(
    "ids",
    [
        lambda ids: [f"theirs-{i}" for i in range(len(ids))],  # other rows
        lambda ids: ids[::-1],  # the rows checked, in another order (the card counted one order)
        lambda ids: ids[:1] * len(ids),  # one row repeated: the ids checked unique were another file's
    ],
    ids=["other ids", "reordered", "a repeated id"],
)
def test_release_streams_the_composed_rows_it_checked(tmp_path, monkeypatch, capfd, ids):
    _prompts_workspace(tmp_path, monkeypatch, capfd)
    import scripts.release

    rows = tmp_path / "data/compose/r/rows.parquet"
    monkeypatch.setattr(scripts.release, "ParquetChunks", _renamed_over_before_the_stream(rows, ids))
    argv = ["release", "r", "data/splits", "data/releases/r", "--composed", "data/compose/r"]
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "changed while it was read" in error_line(result.stderr)
    assert not (tmp_path / "data/releases/r").exists()


# ---------------------------------------------------------------- 2. publish's images: read from the open checked

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\n"


def _legacy_release(tmp_path: Path) -> Path:
    """data/releases/r/train: images beside metadata.jsonl (a release from before rows.parquet: no sha256)."""
    folder = tmp_path / "data/releases/r/train"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(PNG)
    record = {"file_name": "a.png", "id": "a", "source": "s", "text": "a fox"}
    (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/key.png").write_bytes(SECRET)
    return folder


def image_linked_out(folder: Path, out: Path) -> str:
    (folder / "a.png").unlink()
    (folder / "a.png").symlink_to(out)
    return "leads out of"


def image_linked_up_relative(folder: Path, out: Path) -> str:
    (folder / "a.png").unlink()
    (folder / "a.png").symlink_to(Path("../../../../elsewhere/key.png"))
    return "leads out of"


def image_linked_to_a_link_inside_pointing_out(folder: Path, out: Path) -> str:
    (folder / "hop.png").symlink_to(out)
    (folder / "a.png").unlink()
    (folder / "a.png").symlink_to("hop.png")
    return "leads out of"


def image_hard_linked_to_a_file_elsewhere(folder: Path, out: Path) -> str:
    (folder / "a.png").unlink()
    os.link(out, folder / "a.png")
    return "has another hard link"


@pytest.mark.parametrize(
    "case",
    [
        image_linked_out,
        image_linked_up_relative,
        image_linked_to_a_link_inside_pointing_out,
        pytest.param(image_hard_linked_to_a_file_elsewhere, marks=pytest.mark.slow),  # asks DVC for its cache
    ],
    ids=lambda case: case.__name__,
)
def test_publish_uploads_only_the_images_it_checked(tmp_path, case):
    from scripts.tools.publish import read_split, rows_with_images

    folder = _legacy_release(tmp_path)
    records = read_split(folder.parent, "train")  # every check by name passes here
    expected = case(folder, tmp_path / "elsewhere/key.png")  # then the image is swapped
    with pytest.raises(DataError) as caught:
        list(rows_with_images(records))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- 3. caption's images: read from the open checked


def _images(tmp_path: Path) -> tuple[Path, Path]:
    images, out = tmp_path / "images", tmp_path / "elsewhere"
    images.mkdir()
    out.mkdir()
    (images / "a.png").write_bytes(PNG)
    (out / "a.png").write_bytes(SECRET)
    write_tar(images / "shard.tar", [("0001.png", PNG)])
    write_tar(out / "shard.tar", [("0001.png", SECRET)])
    return images, out


def _swapped_after_confine(monkeypatch, replace) -> None:
    from scripts.lib import caption_images

    real = caption_images.confine

    def confining(ref, root):
        real(ref, root)
        replace()

    monkeypatch.setattr(caption_images, "confine", confining)


def image_swapped_for_a_link_out(images: Path, out: Path):
    return "a.png", lambda: _swap_link(images / "a.png", out / "a.png")


def image_swapped_for_a_link_up_through_a_link_inside(images: Path, out: Path):
    (images / "hop").symlink_to("../elsewhere")
    return "a.png", lambda: _swap_link(images / "a.png", Path("hop/a.png"))


def shard_swapped_for_a_link_out(images: Path, out: Path):
    return "shard.tar!/0001.png", lambda: _swap_link(images / "shard.tar", out / "shard.tar")


def _swap_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize(
    "case",
    [image_swapped_for_a_link_out, image_swapped_for_a_link_up_through_a_link_inside, shard_swapped_for_a_link_out],
    ids=lambda case: case.__name__,
)
def test_caption_sends_only_the_image_it_checked(tmp_path, monkeypatch, case):
    from scripts.lib.caption_images import read_image

    images, out = _images(tmp_path)
    name, replace = case(images, out)
    _swapped_after_confine(monkeypatch, replace)
    params = SimpleNamespace(images=str(images), max_image_bytes=1 << 20)
    with pytest.raises(UnsafeArchive) as caught:
        read_image(f"{images}/{name}", params)
    assert caught.value.reason == "outside_images_folder"


def test_caption_reads_a_member_of_the_shard_it_checked_though_renamed_over(tmp_path, monkeypatch):
    """Round 35b: the member is read from the shard's one checked open (archive.read_opened), never by name:
    a shard renamed over it while it is read is not what is read (was: refused once the read by name was done)."""
    from scripts.lib import caption_images

    images, out = _images(tmp_path)
    real = caption_images.read_opened

    def reading(file, *args):
        shutil.copy(out / "shard.tar", images / "other.tar")
        os.replace(images / "other.tar", images / "shard.tar")  # inside the folder: every name check passes
        return real(file, *args)

    monkeypatch.setattr(caption_images, "read_opened", reading)
    params = SimpleNamespace(images=str(images), max_image_bytes=1 << 20)
    assert caption_images.read_image(f"{images}/shard.tar!/0001.png", params) == PNG


# ---------------------------------------------------------------- 4. a link to nothing: one rule


@pytest.mark.parametrize(
    "target",
    ["gone.lock", "/nonexistent/t2i/dvc.lock", "hop.lock"],  # relative, absolute, a link to a link to nothing
    ids=["relative", "absolute", "a chain"],
)
def test_a_workspace_dvc_lock_linked_to_nothing_is_one_line_not_no_lock(tmp_path, target):
    from scripts.tools.lock_text import lock_at

    if target == "hop.lock":
        (tmp_path / "hop.lock").symlink_to("gone.lock")
    (tmp_path / "dvc.lock").symlink_to(target)
    with pytest.raises(DataError) as caught:
        lock_at(str(tmp_path), "workspace")
    assert "dvc.lock: a symbolic link to nothing" in str(caught.value)


def test_a_contact_sheet_linked_to_nothing_is_absent(tmp_path):
    """pr-comment's sheet is shown only when there: a DVC symlink checkout after `dvc gc` has none."""
    from scripts.tools.side_inputs import check_inside

    (tmp_path / "preview.jpg").symlink_to(".dvc/cache/files/md5/ab/cdef")
    check_inside(tmp_path / "preview.jpg", (tmp_path,), "copy it as a contact sheet")


# ---------------------------------------------------------------- 5. DVC's cache: one rule, the cache DVC uses


def _dvc_repo(root: Path, cache_dir: str) -> None:
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc/config").write_text(f"[core]\n    no_scm = True\n[cache]\n    dir = {cache_dir}\n", encoding="utf-8")


def _linked_into(cache: Path, path: Path) -> None:
    """`path` moved into the DVC cache `cache` and left a link there, as a cache.type symlink checkout leaves it."""
    stored = cache / "files/md5/ab" / ("c" * 30)
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, stored)
    path.symlink_to(stored)


@pytest.mark.slow  # runs the command (or opens DVC's repository): seconds on two cores
def test_simpletuner_config_linked_into_the_cache_dvc_uses_is_read(tmp_path):
    from scripts.lib.simpletuner import CONFIG_NAME, absolute_config, backend_config, write_config

    repo, cache = tmp_path / "repo", tmp_path / "shared-cache"
    _dvc_repo(repo, str(cache))
    split = repo / "data/releases/r/train"
    split.mkdir(parents=True)
    write_config(backend_config("t2i-train", "train", "train/simpletuner.parquet", "cache"), split / CONFIG_NAME)
    _linked_into(cache, split / CONFIG_NAME)
    entries = absolute_config(split, tmp_path / "sim-cache")
    assert entries[0]["instance_data_dir"] == str(split.resolve())


@pytest.mark.slow  # runs the command (or opens DVC's repository): seconds on two cores
def test_caption_manifest_linked_into_the_cache_dvc_uses_is_read(tmp_path):
    from scripts.lib.caption_images import list_images

    repo, cache = tmp_path / "repo", tmp_path / "shared-cache"
    _dvc_repo(repo, str(cache))
    images = repo / "data/images/s"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(PNG)
    pd.DataFrame({"id": ["a"], "file": ["a.png"]}).to_parquet(images / "manifest.parquet")
    _linked_into(cache, images / "manifest.parquet")
    listed, _ = list_images(images)
    assert [image.id for image in listed] == ["a"]


@pytest.mark.slow  # runs the command (or opens DVC's repository): seconds on two cores
def test_a_split_table_linked_anywhere_is_no_cache_copy_when_the_cache_holds_the_repository(
    tmp_path, monkeypatch, capfd
):
    root = tmp_path / "ws"
    root.mkdir()
    _dvc_repo(root, "/")  # `cache.dir: /`: every file on the disk would be "in DVC's cache"
    write_params(root, releases=RELEASES)
    make_splits(root, n=8)
    train = root / "data/splits/diffusiondb/train.parquet"
    outside = tmp_path / "elsewhere/train.parquet"
    outside.parent.mkdir()
    shutil.move(train, outside)
    train.symlink_to(outside)
    result = cli(["compose", "r", "data/splits", "data/compose/r"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "leads out of" in error_line(result.stderr)
