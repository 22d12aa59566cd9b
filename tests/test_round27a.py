"""Round 27a: every path read from data is checked where it is opened (safe_paths.open_within: the file opened
ONCE, checked again by what its descriptor names and by fstat, and read from that descriptor), one table per
reader kind (every row failed before its fix), on real files, links and runs of the command:

1. Split tables, positions files and compose@V's rows.parquet were checked by name (safe_paths.table_in) and
   opened again by name by pyarrow: a link out swapped in after the check was followed and its rows composed
   or released at exit 0; a folder named like the table was read as a dataset of the files in it. tables.py's
   readers now read the file table_in's path opens once (tables.parquet_source).
2. `tag` read the release's stats.json after a link check only: a hard link to a file elsewhere (or a swap
   after the check) wrote another file's row counts into the tag's message. It reads through read_within.
3. publish's release card (side_inputs.release_file, then config_text by name) and diff's workspace files
   (open_at: check_regular, then fs.open by name) followed a link swapped in after the check.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.workspace import error_line, make_splits, write_params
from scripts.lib import safe_paths
from scripts.lib.errors import DataError

RELEASES = {"r": {"components": [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]}}
TRAIN_ONLY = {"r": {"components": [{"source": "diffusiondb", "split": "train", "into": "train"}]}}  # one positions read


def _swapped_after_check(monkeypatch, target: Path, replace) -> None:
    """The first check of `target` by name (safe_paths.check_stays_in, table_in's and read_within's rule) is
    followed at once by `replace`: a link swapped in between the check and the open, made certain."""
    real, target, pending = safe_paths.check_stays_in, os.path.abspath(target), [True]

    def checking(path, root, **kwargs):
        checked = real(path, root, **kwargs)
        if pending and os.path.abspath(path) == target:
            pending.clear()
            replace()
        return checked

    monkeypatch.setattr(safe_paths, "check_stays_in", checking)


def _link_out(path: Path, outside: Path):
    """A replace(): `path` moved aside and made a link to `outside`."""

    def replace() -> None:
        shutil.move(path, path.with_name(path.name + ".moved"))
        path.symlink_to(outside)

    return replace


def _outside_table(tmp_path: Path, source: Path) -> Path:
    """A copy of `source` out of the workspace, its ids renamed: rows that must never be read as the source's."""
    table = pq.read_table(source)
    ids = pa.array([f"theirs-{i}" for i in range(table.num_rows)])
    out = tmp_path / "elsewhere" / source.name
    out.parent.mkdir(exist_ok=True)
    pq.write_table(table.set_column(table.schema.get_field_index("id"), "id", ids), out)
    return out


def _positions(root: Path) -> Path:
    """data/prefilter/diffusiondb.parquet as prefilter@S writes it: each row's id and place; the recipe reads
    one split, so the file is found (table_in) and read once."""
    write_params(root, releases=TRAIN_ONLY)
    ids = pq.read_table(root / "data/splits/diffusiondb/train.parquet", columns=["id"]).column("id").to_pylist()
    ids += pq.read_table(root / "data/splits/diffusiondb/validation.parquet", columns=["id"]).column("id").to_pylist()
    path = root / "data/prefilter/diffusiondb.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": ids, "position": list(range(len(ids)))}), path)
    return path


# ---------------------------------------------------------------- 1. tables found by table_in


def split_swapped_for_a_link_out(root: Path, tmp_path: Path, monkeypatch) -> str:
    path = root / "data/splits/diffusiondb/train.parquet"
    _swapped_after_check(monkeypatch, path, _link_out(path, _outside_table(tmp_path, path)))
    return "leads out of"


def split_swapped_for_a_relative_link_up(root: Path, tmp_path: Path, monkeypatch) -> str:
    path = root / "data/splits/diffusiondb/validation.parquet"
    _outside_table(tmp_path, path)
    _swapped_after_check(monkeypatch, path, _link_out(path, Path("../../../../elsewhere/validation.parquet")))
    return "leads out of"


def split_a_folder_named_like_the_table(root: Path, tmp_path: Path, monkeypatch) -> str:
    path = root / "data/splits/diffusiondb/train.parquet"
    outside = _outside_table(tmp_path, path)
    path.unlink()
    path.mkdir()
    shutil.copy(outside, path / "part-0.parquet")
    return "is a folder, not a regular file"


def positions_swapped_for_a_link_out(root: Path, tmp_path: Path, monkeypatch) -> str:
    path = _positions(root)
    outside = tmp_path / "elsewhere/diffusiondb.parquet"
    outside.parent.mkdir()
    table = pq.read_table(path)
    pq.write_table(table.set_column(1, "position", pa.array(list(reversed(range(table.num_rows))))), outside)
    _swapped_after_check(monkeypatch, path, _link_out(path, outside))
    return "leads out of"


def positions_a_folder_named_like_the_file(root: Path, tmp_path: Path, monkeypatch) -> str:
    path = _positions(root)
    shutil.move(path, tmp_path / "part-0.parquet")
    path.mkdir()
    shutil.move(tmp_path / "part-0.parquet", path / "part-0.parquet")
    return "is a folder, not a regular file"


def positions_swapped_for_a_link_to_a_link_out(root: Path, tmp_path: Path, monkeypatch) -> str:
    path = _positions(root)
    outside = tmp_path / "elsewhere/diffusiondb.parquet"
    outside.parent.mkdir()
    shutil.copy(path, outside)
    (root / "data/prefilter/hop.parquet").symlink_to(outside)  # a link inside the folder, pointing out
    _swapped_after_check(monkeypatch, path, _link_out(path, Path("hop.parquet")))
    return "leads out of"


COMPOSE_CASES = [
    split_swapped_for_a_link_out,
    split_swapped_for_a_relative_link_up,
    split_a_folder_named_like_the_table,
    positions_swapped_for_a_link_out,
    positions_a_folder_named_like_the_file,
    positions_swapped_for_a_link_to_a_link_out,
]


@pytest.mark.parametrize("case", COMPOSE_CASES, ids=lambda case: case.__name__)
def test_compose_reads_only_the_table_it_checked(tmp_path, monkeypatch, capfd, case):
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, releases=RELEASES)
    make_splits(root, n=8)
    expected = case(root, tmp_path, monkeypatch)
    result = cli(["compose", "r", "data/splits", "data/compose/r"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert expected in error_line(result.stderr)
    assert not (root / "data/compose/r").exists()


def rows_swapped_for_a_link_out(root: Path, tmp_path: Path) -> tuple[Path, object, str]:
    path = root / "data/compose/r/rows.parquet"
    return path, _link_out(path, _outside_table(tmp_path, path)), "leads out of"


def rows_swapped_for_a_relative_link_up(root: Path, tmp_path: Path) -> tuple[Path, object, str]:
    path = root / "data/compose/r/rows.parquet"
    _outside_table(tmp_path, path)
    return path, _link_out(path, Path("../../../../elsewhere/rows.parquet")), "leads out of"


def rows_swapped_for_a_link_to_a_link_out(root: Path, tmp_path: Path) -> tuple[Path, object, str]:
    path = root / "data/compose/r/rows.parquet"
    (root / "data/compose/hop.parquet").symlink_to(_outside_table(tmp_path, path))  # inside, pointing out
    return path, _link_out(path, Path("../hop.parquet")), "leads out of"


@pytest.mark.parametrize(
    "case",
    [rows_swapped_for_a_link_out, rows_swapped_for_a_relative_link_up, rows_swapped_for_a_link_to_a_link_out],
    ids=lambda case: case.__name__,
)
def test_release_reads_only_the_composed_rows_it_checked(tmp_path, monkeypatch, capfd, case):
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, releases=RELEASES)
    make_splits(root, n=8)
    assert cli(["compose", "r", "data/splits", "data/compose/r"], root, monkeypatch, capfd).returncode == 0
    path, replace, expected = case(root, tmp_path)
    _swapped_after_check(monkeypatch, path, replace)
    argv = ["release", "r", "data/splits", "data/releases/r", "--composed", "data/compose/r"]
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert expected in error_line(result.stderr)
    assert not (root / "data/releases/r").exists()


# ---------------------------------------------------------------- 2. and 3. files read whole: tag, publish, diff


def _replaced_at_open(monkeypatch, target: Path, replace) -> None:
    """The first open of `target` (os.open, io.open or open, as each reader opens) finds it replaced first:
    the moment between a check on its name and the open, made certain (as tests/test_round25d.py)."""
    target, pending = os.path.abspath(target), [True]

    def hooked(real_open):
        def opening(path, *args, **kwargs):
            if pending and not isinstance(path, int) and os.path.abspath(os.fsdecode(path)) == target:
                pending.clear()
                replace()
            return real_open(path, *args, **kwargs)

        return opening

    monkeypatch.setattr(os, "open", hooked(os.open))
    monkeypatch.setattr(io, "open", hooked(io.open))
    monkeypatch.setattr(builtins, "open", hooked(builtins.open))


def _hard_link_to(path: Path, other: Path):
    def replace() -> None:
        shutil.move(path, path.with_name(path.name + ".moved"))
        os.link(other, path)

    return replace


def _releases(tmp_path: Path) -> tuple[Path, Path]:
    """data/releases/{r,old}/stats.json and README.md of a workspace, and the same files elsewhere."""
    releases, out = tmp_path / "data/releases", tmp_path / "elsewhere"
    for folder in (releases / "r", releases / "old", out):
        folder.mkdir(parents=True)
        (folder / "stats.json").write_text(json.dumps(STATS if folder.name == "r" else THEIRS), encoding="utf-8")
        (folder / "README.md").write_text("# ours\n" if folder.name == "r" else "# theirs\n", encoding="utf-8")
    return releases, out


STATS = {"rows": {"total": 4, "train": 3, "validation": 1}}
THEIRS = {"rows": {"total": 99, "train": 98, "validation": 1}}


def stats_a_hard_link_to_a_file_elsewhere(releases: Path, out: Path, monkeypatch) -> str:
    (releases / "r/stats.json").unlink()
    os.link(out / "stats.json", releases / "r/stats.json")
    return "has another hard link"


def stats_a_hard_link_to_another_release(releases: Path, out: Path, monkeypatch) -> str:
    (releases / "r/stats.json").unlink()
    os.link(releases / "old/stats.json", releases / "r/stats.json")
    return "has another hard link"


def stats_swapped_for_a_link_out_at_open(releases: Path, out: Path, monkeypatch) -> str:
    path = releases / "r/stats.json"
    _replaced_at_open(monkeypatch, path, _link_out(path, out / "stats.json"))
    return "leads out of"


@pytest.mark.parametrize(
    "case",
    [stats_a_hard_link_to_a_file_elsewhere, stats_a_hard_link_to_another_release, stats_swapped_for_a_link_out_at_open],
    ids=lambda case: case.__name__,
)
def test_tag_reads_only_its_release_s_own_stats(tmp_path, monkeypatch, case):
    from scripts.tools.tag import release_message

    releases, out = _releases(tmp_path)
    expected = case(releases, out, monkeypatch)
    with pytest.raises(DataError) as caught:
        release_message("r", releases / "r/stats.json", "release@r")  # never another file's row counts
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def card_swapped_for_a_link_out_at_open(releases: Path, out: Path, monkeypatch) -> str:
    path = releases / "r/README.md"
    _replaced_at_open(monkeypatch, path, _link_out(path, out / "README.md"))
    return "leads out of"


def card_swapped_for_a_link_to_a_link_out_at_open(releases: Path, out: Path, monkeypatch) -> str:
    path = releases / "r/README.md"
    (releases / "hop.md").symlink_to(out / "README.md")  # a link inside data/releases, pointing out
    _replaced_at_open(monkeypatch, path, _link_out(path, Path("../hop.md")))
    return "leads out of"


def card_swapped_for_a_hard_link_at_open(releases: Path, out: Path, monkeypatch) -> str:
    path = releases / "r/README.md"
    _replaced_at_open(monkeypatch, path, _hard_link_to(path, out / "README.md"))
    return "has another hard link"


@pytest.mark.parametrize(
    "case",
    [
        card_swapped_for_a_link_out_at_open,
        card_swapped_for_a_link_to_a_link_out_at_open,
        card_swapped_for_a_hard_link_at_open,
    ],
    ids=lambda case: case.__name__,
)
def test_publish_pastes_only_the_release_s_own_card(tmp_path, monkeypatch, case):
    from scripts.tools.side_inputs import release_card_body

    releases, out = _releases(tmp_path)
    expected = case(releases, out, monkeypatch)
    with pytest.raises(DataError) as caught:
        release_card_body(releases / "r")  # never another file's text as the card
    assert expected in str(caught.value) and "\n" not in str(caught.value)


class _Workspace:
    """The workspace as diff's DVC filesystem reads it (its files by name), with diff's `t2i_root` mark."""

    def __init__(self, root: Path):
        self.t2i_root = root

    def open(self, path: str, mode: str = "rb", **kwargs):
        return open(self.t2i_root / path, mode, **kwargs)


def params_swapped_for_a_link_out_at_open(root: Path, out: Path, monkeypatch) -> tuple[str, str]:
    _replaced_at_open(monkeypatch, root / "params.yaml", _link_out(root / "params.yaml", out / "params.yaml"))
    return "params.yaml", "leads out of the repository"


def lock_swapped_for_a_link_up_at_open(root: Path, out: Path, monkeypatch) -> tuple[str, str]:
    _replaced_at_open(monkeypatch, root / "dvc.lock", _link_out(root / "dvc.lock", Path("../elsewhere/dvc.lock")))
    return "dvc.lock", "leads out of the repository"


def rows_swapped_for_a_folder_at_open(root: Path, out: Path, monkeypatch) -> tuple[str, str]:
    path = root / "data/releases/r/rows.parquet"

    def replace() -> None:
        shutil.move(path, out / "rows.parquet")
        path.mkdir()

    _replaced_at_open(monkeypatch, path, replace)
    return "data/releases/r/rows.parquet", "is a folder, not a regular file"


@pytest.mark.parametrize(
    "case",
    [params_swapped_for_a_link_out_at_open, lock_swapped_for_a_link_up_at_open, rows_swapped_for_a_folder_at_open],
    ids=lambda case: case.__name__,
)
def test_diff_reads_the_workspace_file_it_checked(tmp_path, monkeypatch, case):
    from scripts.tools.diff import open_at

    root, out = tmp_path / "ws", tmp_path / "elsewhere"
    (root / "data/releases/r").mkdir(parents=True)
    out.mkdir()
    for name in ("params.yaml", "dvc.lock", "data/releases/r/rows.parquet"):
        (root / name).write_text("ours: 1\n", encoding="utf-8")
        (out / Path(name).name).write_text("theirs: 2\n", encoding="utf-8")
    path, expected = case(root, out, monkeypatch)
    with pytest.raises(DataError) as caught, open_at(_Workspace(root), path, f"workspace:{path}") as f:
        f.read()
    assert expected in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- 4. export.place_image: the link is of the file checked

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\n"  # what must never be shipped under an image's name


def _replaced_at_link(monkeypatch, replace) -> None:
    """The first hard link made finds its source's name replaced first: after every check, before the link."""
    real, pending = os.link, [True]

    def link(src, dst, **kwargs):
        if pending:
            pending.clear()
            replace()
        return real(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)


def _image(tmp_path: Path) -> Path:
    from helpers.workspace import PNG

    path = tmp_path / "store/img.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(PNG)
    return path


def rendered_image_replaced_by_a_key_file(tmp_path: Path, monkeypatch) -> tuple[Path, bool]:
    image = _image(tmp_path)

    def replace() -> None:
        shutil.move(image, image.with_name("moved.png"))
        image.write_bytes(KEY)

    _replaced_at_link(monkeypatch, replace)
    return image, True


def image_replaced_by_a_fifo(tmp_path: Path, monkeypatch) -> tuple[Path, bool]:
    image = _image(tmp_path)

    def replace() -> None:
        shutil.move(image, image.with_name("moved.png"))
        os.mkfifo(image)

    _replaced_at_link(monkeypatch, replace)
    return image, False


def cached_image_behind_a_link_replaced(tmp_path: Path, monkeypatch) -> tuple[Path, bool]:
    cached = _image(tmp_path)  # DVC's cache.type symlink: the image's name links to the cache's file
    (tmp_path / "release-src").mkdir()
    link = tmp_path / "release-src/img.png"
    link.symlink_to(cached)

    def replace() -> None:
        shutil.move(cached, cached.with_name("moved.png"))
        cached.write_bytes(KEY)

    _replaced_at_link(monkeypatch, replace)
    return link, False


@pytest.mark.parametrize(
    "case",
    [rendered_image_replaced_by_a_key_file, image_replaced_by_a_fifo, cached_image_behind_a_link_replaced],
    ids=lambda case: case.__name__,
)
def test_export_links_only_the_image_it_checked(tmp_path, monkeypatch, case):
    import hashlib

    from helpers.workspace import PNG
    from scripts.lib.export import place_image

    image, recorded = case(tmp_path, monkeypatch)
    target = tmp_path / "release/images/img.png"
    with pytest.raises(DataError) as caught:
        place_image(str(image), target, hashlib.sha256(PNG).hexdigest() if recorded else None)
    assert "replaced while it was placed" in str(caught.value) and "\n" not in str(caught.value)
    assert not os.path.lexists(target)  # nothing shipped under the image's name


# ---------------------------------------------------------------- 5. simpletuner's config: read from the open checked


def _release_config(tmp_path: Path) -> tuple[Path, Path]:
    from scripts.lib.simpletuner import CONFIG_NAME

    split, out = tmp_path / "release/train", tmp_path / "elsewhere"
    split.mkdir(parents=True)
    out.mkdir()
    (split / CONFIG_NAME).write_text("[]", encoding="utf-8")
    (out / CONFIG_NAME).write_text('[{"id": "theirs"}]', encoding="utf-8")
    return split / CONFIG_NAME, out / CONFIG_NAME


def config_swapped_for_a_link_out(path: Path, outside: Path) -> Path:
    return outside


def config_swapped_for_a_relative_link_up(path: Path, outside: Path) -> Path:
    return Path("../../elsewhere") / outside.name


def config_swapped_for_a_link_to_a_link_out(path: Path, outside: Path) -> Path:
    (path.parent.parent / "hop.json").symlink_to(outside)  # a link inside the release, pointing out
    return Path("../hop.json")


@pytest.mark.parametrize(
    "case",
    [config_swapped_for_a_link_out, config_swapped_for_a_relative_link_up, config_swapped_for_a_link_to_a_link_out],
    ids=lambda case: case.__name__,
)
def test_simpletuner_config_reads_only_the_release_s_own_file(tmp_path, monkeypatch, case):
    from scripts.lib.simpletuner import absolute_config

    path, outside = _release_config(tmp_path)
    _replaced_at_open(monkeypatch, path, _link_out(path, case(path, outside)))
    with pytest.raises(DataError) as caught:
        absolute_config(path.parent, tmp_path / "cache")  # never another file's backends
    assert "a link out of the release" in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- 6. caption's manifest: read from the open checked


def _images_folder(tmp_path: Path) -> tuple[Path, Path]:
    """An images folder with its manifest.parquet, and a manifest elsewhere naming the same files by other ids."""
    from helpers.workspace import PNG

    folder, out = tmp_path / "images", tmp_path / "elsewhere"
    folder.mkdir()
    out.mkdir()
    (folder / "a.png").write_bytes(PNG)
    pq.write_table(pa.table({"id": ["ours"], "file": ["a.png"]}), folder / "manifest.parquet")
    pq.write_table(pa.table({"id": ["theirs"], "file": ["a.png"]}), out / "manifest.parquet")
    return folder, out


def manifest_swapped_for_a_link_out(folder: Path, out: Path) -> None:
    (folder / "manifest.parquet").symlink_to(out / "manifest.parquet")


def manifest_swapped_for_a_link_inside(folder: Path, out: Path) -> None:
    shutil.copy(out / "manifest.parquet", folder / "other.parquet")
    (folder / "manifest.parquet").symlink_to("other.parquet")


def manifest_swapped_for_a_folder(folder: Path, out: Path) -> None:
    (folder / "manifest.parquet").mkdir()
    shutil.copy(out / "manifest.parquet", folder / "manifest.parquet/part-0.parquet")


@pytest.mark.parametrize(
    "case",
    [manifest_swapped_for_a_link_out, manifest_swapped_for_a_link_inside, manifest_swapped_for_a_folder],
    ids=lambda case: case.__name__,
)
def test_caption_reads_only_the_manifest_it_checked(tmp_path, monkeypatch, case):
    from scripts.lib import caption_images

    folder, out = _images_folder(tmp_path)
    real = caption_images.own_manifest

    def own_manifest(manifest: Path):  # the look by name passes; the manifest is swapped before it is read
        checked = real(manifest)
        shutil.move(manifest, tmp_path / "moved.parquet")
        case(folder, out)
        return checked

    monkeypatch.setattr(caption_images, "own_manifest", own_manifest)
    with pytest.raises(DataError) as caught:
        caption_images.list_images(folder)  # never another table's rows as the folder's
    assert "manifest.parquet" in str(caught.value) and "\n" not in str(caught.value)
