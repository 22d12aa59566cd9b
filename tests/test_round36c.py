"""Round 36c: `clean` and `generate` refuse a foreign output before they read their input.

1. `clean` opened its input's footer (ParquetChunks), compiled its rule set and started its engine before it
   checked its three outputs (check_files_ours): the check now comes first, after the source's name only.
2. `generate` read its whole prompt table (read_parquet) and resolved its model before OutputFolder.start refused a
   user's file in its image folder, and before it refused an image folder that is a link (check_output_kind): both
   run first now (OutputFolder.refuse_foreign: the refusals that hash nothing), and again under the lock.
Each row's input is a FIFO: the line names the output, not the input, so no input was opened.
Already refused first (round 35e's shape, checked here by hand): `caption` and `synthesize` (check_outputs_ours
before the images, examples or any request), `ingest` and `captions` (check_files_ours before the reader),
`simpletuner` (check_files_ours, check_config_ours, check_replaceable on --data-dir before the shards are read).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import assert_refused_untouched, snapshot, write_params

pytestmark = pytest.mark.usefixtures("fifo_reads_fail")

LINK = "is a symbolic link"
NOT_OURS = "cannot prove it wrote it"
NOT_GENERATED = "which generate did not write"
SOURCE = {"notes": {"kind": "text", "path": "raw", "text_only": True, "clean": False}}


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _mine(tmp_path: Path) -> Path:
    """A user's own file, outside the workspace."""
    (tmp_path / "mine.txt").write_bytes(b"my own words\n")
    return tmp_path / "mine.txt"


# ---------------------------------------------------------------- 1. clean: its outputs before its input's footer

CLEAN_CASES = {  # the user's file at: (name in the line, what it says)
    "o.parquet": ("o.parquet", NOT_OURS),
    "o.dropped.parquet": ("o.dropped.parquet", NOT_OURS),
    "o.report.json": ("o.report.json", NOT_OURS),
    "o.parquet, a link": ("o.parquet", LINK),
    "o.report.json, hard-linked": ("o.report.json", NOT_OURS),
}


@pytest.mark.parametrize("kind", fast_first(CLEAN_CASES))
def test_clean_refuses_a_foreign_output_before_opening_its_input(tmp_path, monkeypatch, capfd, kind):
    ws = tmp_path / "ws"
    (ws / "out").mkdir(parents=True)
    write_params(ws, sources=SOURCE)
    _fifo(ws / "p.parquet")
    name = kind.partition(",")[0]
    if kind.endswith("a link"):
        (ws / "out" / name).symlink_to(_mine(tmp_path))
    elif kind.endswith("hard-linked"):
        os.link(_mine(tmp_path), ws / "out" / name)
    else:
        (ws / "out" / name).write_bytes(b"my own table\n")
    before = snapshot(tmp_path)
    result = cli(["clean", "notes", "p.parquet", "out/o.parquet"], ws, monkeypatch, capfd)
    assert_refused_untouched(result, tmp_path, before, *CLEAN_CASES[kind])


# ---------------------------------------------------------------- 2. generate: its image folder before its prompts

GENERATE_CASES = {  # the user's thing in (or as) data/images/notes: (name in the line, what it says)
    "README.md": ("README.md", NOT_GENERATED),
    "train.parquet": ("train.parquet", NOT_GENERATED),
    "prompts.txt": ("prompts.txt", NOT_GENERATED),
    "a hard-linked file": ("notes.txt", NOT_GENERATED),
    "a link named 00000.jpg": ("00000.jpg", NOT_GENERATED),
    "a folder of the user's": ("mine", NOT_GENERATED),
    "the folder a link to elsewhere": ("images/notes", LINK),
}


def _in_images(kind: str, out: Path, tmp_path: Path) -> None:
    if kind == "the folder a link to elsewhere":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "keep.txt").write_bytes(b"keep\n")
        out.parent.mkdir(parents=True)
        out.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        return
    out.mkdir(parents=True)
    if kind == "a hard-linked file":
        os.link(_mine(tmp_path), out / "notes.txt")
    elif kind.startswith("a link named "):
        (out / kind.removeprefix("a link named ")).symlink_to(_mine(tmp_path))
    elif kind == "a folder of the user's":
        (out / "mine").mkdir()
    else:
        (out / kind).write_bytes(b"my own words\n")


@pytest.mark.parametrize("kind", fast_first(GENERATE_CASES))
def test_generate_refuses_a_foreign_image_folder_before_reading_its_prompts(tmp_path, monkeypatch, capfd, kind):
    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(ws, sources=SOURCE)
    _fifo(ws / "p.parquet")
    _in_images(kind, ws / "data" / "images" / "notes", tmp_path)
    before = snapshot(tmp_path)
    result = cli(["generate", "notes", "p.parquet", "data/images/notes"], ws, monkeypatch, capfd)
    assert_refused_untouched(result, tmp_path, before, *GENERATE_CASES[kind])
