"""Round 22b: the breaks this hostile round found in the later stages (generate, generate-prune, captions,
compose, release, summary), one table per class (every row failed before its fix), on real files and folders
and runs of the command:

1. A row's image path holding a NUL byte (a split table's, a `--composed` rows.parquet's, an archive's name
   before `!/`) was a ValueError traceback (`embedded null byte`, from os.path.realpath) at release and compose:
   now one line naming the table and row (paths.ImageRoots.check).
2. The generation store was used through a symbolic link and compared with OUTPUT by its name only:
   `--store LINK` wrote the store's marker, index and images wherever the link pointed (generate) or pruned
   there (generate-prune), and `--store data/alias/S/st` (data/alias -> images) made a store inside
   data/images/S, which every later run then refused as a file generate did not write. A link is refused and the
   inside/around check compares resolved paths (image_store.check_store).
3. `captions` with an images folder that holds no manifest (a mistyped folder, a file, a missing path), for rows
   without an `image` column, was a KeyError traceback: one line naming the folder and the table
   (captions.image_joiner).
4. `summary` read a release's stats.json through a link out of the releases folder (the file, or the release's
   folder, linked elsewhere) and copied its row count into data/summary.json, `dvc exp show`'s metrics: refused
   in one line (summary.stats_path, which `tag` reads the file by too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.commands import cli
from helpers.workspace import error_line, make_splits, snapshot, write_params
from scripts.lib.image_store import STORE_MARK_TEXT
from scripts.lib.tables import write_parquet

# ---------------------------------------------------------------- 1. a NUL byte in a row's image path

RELEASES = {"r": {"components": [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]}}


def _release_ws(root: Path) -> Path:
    write_params(root, releases=RELEASES)
    make_splits(root, n=8)
    return root


def _nul_in(table: Path, image: str) -> None:
    rows = pd.read_parquet(table)
    rows.loc[0, "image"] = image
    write_parquet(rows, table)


def split_image_with_a_nul(root: Path, run) -> list:  # release: after the name, before a second extension
    _nul_in(root / "data/splits/diffusiondb/train.parquet", str(root / "data/images/diffusiondb/img.png\0.png"))
    return ["release", "r", "data/splits", "data/releases/r"]


def archive_name_with_a_nul(root: Path, run) -> list:  # release: in the archive's name, before `!/`
    _nul_in(root / "data/splits/diffusiondb/validation.parquet", str(root / "data/images/diffusiondb/a.tar\0!/x.png"))
    return ["release", "r", "data/splits", "data/releases/r"]


def compose_image_with_a_nul(root: Path, run) -> list:  # compose reads the split tables the same way
    _nul_in(root / "data/splits/diffusiondb/train.parquet", "data/images/diffusiondb/\0img.png")
    return ["compose", "r", "data/splits", "data/compose/r"]


def composed_rows_with_a_nul(root: Path, run) -> list:  # release --composed: compose@r's rows, edited
    assert run(["compose", "r", "data/splits", "data/compose/r"]).returncode == 0
    _nul_in(root / "data/compose/r/rows.parquet", str(root / "data/images/diffusiondb/img\0.png"))
    return ["release", "r", "data/splits", "data/releases/r", "--composed", "data/compose/r"]


@pytest.mark.parametrize(
    "case", [split_image_with_a_nul, archive_name_with_a_nul, compose_image_with_a_nul, composed_rows_with_a_nul]
)
def test_an_image_path_with_a_nul_byte_is_one_line(tmp_path, monkeypatch, capfd, case):
    root = _release_ws(tmp_path)
    argv = case(root, lambda argv: cli(argv, root, monkeypatch, capfd))
    before = snapshot(root / "data")
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "row 1: image" in line and "NUL byte" in line and "\0" not in line
    assert snapshot(root / "data") == before  # no output, nothing half-written


# ---------------------------------------------------------------- 2. the generation store through a link


def _store(folder: Path) -> None:
    """A generation store as generate leaves it: its mark, index and one image."""
    (folder / ".tmp").mkdir(parents=True)
    (folder / ".t2i-image-store").write_bytes(STORE_MARK_TEXT)
    (folder / ".gitignore").write_text("*\n")
    name = f"ab/ab{'0' * 62}.jpg"
    (folder / "index.txt").write_text(name + "\n")
    (folder / "ab").mkdir()
    (folder / name).write_bytes(b"render")


def _generate(store: str, output: str = "data/images/diffusiondb") -> list:
    return ["generate", "diffusiondb", "data/prefilter/diffusiondb.parquet", output, "--store", store]


def store_linked_to_an_empty_folder_elsewhere(root: Path, elsewhere: Path) -> list:  # marker, index, .tmp there
    (root / "data/image_store").symlink_to(elsewhere)
    return _generate("data/image_store")


def store_linked_to_the_store(root: Path, elsewhere: Path) -> list:  # the real store written through a link
    _store(elsewhere)
    (root / "data/store").symlink_to(elsewhere)
    return _generate("data/store")


def store_inside_the_output_through_a_linked_folder(root: Path, elsewhere: Path) -> list:  # st/ made in the output
    output = root / "data/images/diffusiondb"
    output.mkdir(parents=True)
    (output / "mine.jpg").write_bytes(b"a user's picture")
    (root / "data/alias").symlink_to("images")
    return _generate("data/alias/diffusiondb/st")


def prune_through_a_linked_store(root: Path, elsewhere: Path) -> list:  # generate-prune --all emptied it
    _store(elsewhere)
    (root / "data/store").symlink_to(elsewhere)
    return ["generate-prune", "--store", "data/store", "--all"]


@pytest.mark.parametrize(
    "case",
    [
        store_linked_to_an_empty_folder_elsewhere,
        store_linked_to_the_store,
        store_inside_the_output_through_a_linked_folder,
        prune_through_a_linked_store,
    ],
)
def test_the_generation_store_is_never_used_through_a_link(tmp_path, monkeypatch, capfd, case):
    root, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    (root / "data/prefilter").mkdir(parents=True)
    elsewhere.mkdir()
    write_params(root)
    write_parquet(
        pd.DataFrame({"id": ["a1"], "text": ["a cat"], "prompt": ["a cat"]}),
        root / "data/prefilter/diffusiondb.parquet",
    )
    argv = case(root, elsewhere)
    before, outside = snapshot(root), snapshot(elsewhere)
    result = cli(argv, root, monkeypatch, capfd)  # refused before the model is looked for
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "symbolic link" in line or "inside/around" in line
    assert snapshot(root) == before and snapshot(elsewhere) == outside


# ---------------------------------------------------------------- 3. captions' images folder without a manifest


def no_manifest_folder(root: Path) -> str:  # a mistyped folder: generate never wrote there
    (root / "data/images/diffusion").mkdir(parents=True)
    return "data/images/diffusion"


def the_manifest_file_itself(root: Path) -> str:  # the file, not its folder
    (root / "data/images/diffusiondb").mkdir(parents=True)
    (root / "data/images/diffusiondb/manifest.parquet").write_bytes(b"PAR1")
    return "data/images/diffusiondb/manifest.parquet"


def missing_folder(root: Path) -> str:  # a path that is not there
    return "data/images/nowhere"


def escaped_folder(root: Path) -> str:  # a name with an escape code: shown escaped in the line
    (root / "data/images/\x1b[31mred").mkdir(parents=True)
    return "data/images/\x1b[31mred"


@pytest.mark.parametrize("case", [no_manifest_folder, the_manifest_file_itself, missing_folder, escaped_folder])
def test_captions_without_a_manifest_or_an_image_column_is_one_line(tmp_path, monkeypatch, capfd, case):
    (tmp_path / "data/prefilter").mkdir(parents=True)
    write_params(tmp_path)
    rows = pd.DataFrame(
        {
            "id": ["a1", "a2"],
            "source": "diffusiondb",
            "split": pd.Series([None, None], dtype="string"),
            "text": ["a cat", "a dog"],
            "prompt": ["a cat", "a dog"],
            "meta": "{}",
            "width": pd.Series([None, None], dtype="Int64"),
            "height": pd.Series([None, None], dtype="Int64"),
        }
    )
    write_parquet(rows, tmp_path / "data/prefilter/diffusiondb.parquet")
    images = case(tmp_path)
    argv = [
        "captions",
        "diffusiondb",
        "data/prefilter/diffusiondb.parquet",
        images,
        "data/captions/diffusiondb.parquet",
    ]
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "no manifest.parquet" in line and "'image' column" in line and "\x1b" not in line
    assert not (tmp_path / "data/captions/diffusiondb.parquet").exists()


# ---------------------------------------------------------------- 4. summary's stats.json through a link out


def _built_releases(root: Path) -> Path:
    """data/releases/{r,q}/stats.json as release writes them, and a stats.json elsewhere saying 12345 rows."""
    write_params(root, releases={name: json.loads(json.dumps(RELEASES["r"])) for name in ("r", "q")})
    for name in ("r", "q"):
        (root / "data/releases" / name).mkdir(parents=True)
        (root / "data/releases" / name / "stats.json").write_text(json.dumps({"rows": {"total": 8}}))
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stats.json").write_text(json.dumps({"rows": {"total": 12345}}))
    return elsewhere


def stats_linked_out_absolutely(root: Path, elsewhere: Path) -> None:
    (root / "data/releases/r/stats.json").unlink()
    (root / "data/releases/r/stats.json").symlink_to(elsewhere / "stats.json")


def stats_linked_out_relatively(root: Path, elsewhere: Path) -> None:
    (root / "data/releases/r/stats.json").unlink()
    (root / "data/releases/r/stats.json").symlink_to("../../../../elsewhere/stats.json")


def release_folder_linked_out(root: Path, elsewhere: Path) -> None:  # the folder on the way, not the file
    for path in sorted((root / "data/releases/r").iterdir()):
        path.unlink()
    (root / "data/releases/r").rmdir()
    (root / "data/releases/r").symlink_to(elsewhere)


@pytest.mark.parametrize("case", [stats_linked_out_absolutely, stats_linked_out_relatively, release_folder_linked_out])
def test_summary_never_reads_a_stats_file_through_a_link_out_of_the_releases(tmp_path, monkeypatch, capfd, case):
    root = tmp_path / "ws"
    root.mkdir()
    elsewhere = _built_releases(root)
    case(root, elsewhere)
    result = cli(["summary", "data/releases", "data/summary.json"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "leads out of data/releases" in error_line(result.stderr)
    assert not (root / "data/summary.json").exists()


def test_summary_reads_a_stats_file_linked_inside_the_releases(tmp_path, monkeypatch, capfd):
    root = tmp_path / "ws"
    root.mkdir()
    _built_releases(root)
    (root / "data/releases/r/stats.json").unlink()
    (root / "data/releases/r/stats.json").symlink_to("../q/stats.json")
    result = cli(["summary", "data/releases", "data/summary.json"], root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert json.loads((root / "data/summary.json").read_text())["rows"] == {"r": 8, "q": 8}
