"""Round 35e: an output that is not ours is refused before the work, not after it.

1. `compose`, `split` and `prefilter` pointed at an output holding a user's file (a README.md, a train.parquet,
   a prompts.txt, a file hard-linked in, a link to elsewhere) read all their input and did all their work
   (minutes at scale), and only then refused at the final rename. The output is now checked first with the
   check the rename makes (io.check_replaceable, its `writes`: a file of a name the command writes is left to
   its bytes at the end; prefilter's check_files_ours moved up), and checked again at the end. Each row's input
   is a FIFO: the line names the output, not the input, so no input was opened.
2. A user's file hard-linked into a release's split folder passed the early check as an image linked in
   (marks.ours_file_by_file) and was refused only at the final rename (round 27b, not covered). A release
   links only images in, so a shared file without an image's name is refused before the work.
Already refused first: `release` (paths.check_output) for every other foreign file, `clean` (check_files_ours
before its rows).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import assert_refused_untouched, make_splits, snapshot, write_params

pytestmark = pytest.mark.usefixtures("fifo_reads_fail")

COMPONENTS = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
DID_NOT_WRITE = "which this command did not write"
LINK = "is a symbolic link"
NOT_OURS = "cannot prove it wrote it"


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)


def _mine(tmp_path: Path, name: str = "mine.txt") -> Path:
    """A user's own file, outside the workspace."""
    (tmp_path / name).write_bytes(b"my own words\n")
    return tmp_path / name


def _put(out: Path, name: str, data: bytes) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data)


def _foreign(kind: str, out: Path, tmp_path: Path) -> None:
    """The user's thing at or in the output folder `out`."""
    if kind == "README.md":
        _put(out, "README.md", b"# my dataset\n")
    elif kind == "train.parquet":
        _put(out, "train.parquet", b"PAR1 my table PAR1")
    elif kind == "prompts.txt":
        _put(out, "prompts.txt", b"a cat\na dog\n")
    elif kind == "a hard-linked file":
        out.mkdir(parents=True, exist_ok=True)
        os.link(_mine(tmp_path), out / "notes.txt")
    elif kind == "the folder a link to elsewhere":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "keep.txt").write_bytes(b"keep\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    else:  # a file of a name the command writes, a link to the user's file
        out.mkdir(parents=True, exist_ok=True)
        (out / kind.removeprefix("a link named ")).symlink_to(_mine(tmp_path))


# ---------------------------------------------------------------- 1. compose, split, prefilter refuse first

FOLDER_CASES = {  # kind of foreign thing: (name in the line, what the line says)
    "README.md": ("README.md", DID_NOT_WRITE),
    "train.parquet": ("train.parquet", DID_NOT_WRITE),
    "prompts.txt": ("prompts.txt", DID_NOT_WRITE),
    "a hard-linked file": ("notes.txt", DID_NOT_WRITE),
    "the folder a link to elsewhere": ("compose/r", LINK),
    "a link named rows.parquet": ("rows.parquet", DID_NOT_WRITE),
}


@pytest.mark.parametrize("kind", fast_first(FOLDER_CASES))
def test_compose_refuses_a_foreign_output_before_reading_its_splits(tmp_path, monkeypatch, capfd, kind):
    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(ws, releases={"r": {"components": COMPONENTS, "export": "prompts"}})
    make_splits(ws, n=8)
    _fifo(ws / "data" / "splits" / "diffusiondb" / "train.parquet")
    _foreign(kind, ws / "data" / "compose" / "r", tmp_path)
    before = snapshot(tmp_path)
    result = cli(["compose", "r", "data/splits", "data/compose/r"], ws, monkeypatch, capfd)
    assert_refused_untouched(result, tmp_path, before, *FOLDER_CASES[kind])


SPLIT_CASES = {
    "README.md": ("README.md", DID_NOT_WRITE),
    "prompts.txt": ("prompts.txt", DID_NOT_WRITE),
    "a hard-linked file": ("notes.txt", DID_NOT_WRITE),
    "the folder a link to elsewhere": ("splits/notes", LINK),
    "a link named train.parquet": ("train.parquet", DID_NOT_WRITE),
}


@pytest.mark.parametrize("kind", fast_first(SPLIT_CASES))
def test_split_refuses_a_foreign_output_before_reading_its_input(tmp_path, monkeypatch, capfd, kind):
    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(ws)
    _fifo(ws / "data" / "captions" / "notes.parquet")
    _foreign(kind, ws / "data" / "splits" / "notes", tmp_path)
    before = snapshot(tmp_path)
    result = cli(["split", "notes", "data/captions/notes.parquet", "data/splits/notes"], ws, monkeypatch, capfd)
    assert_refused_untouched(result, tmp_path, before, *SPLIT_CASES[kind])


PREFILTER_CASES = {  # the user's file at: (name in the line, what it says)
    "o.parquet": ("o.parquet", NOT_OURS),
    "o.removed.parquet": ("o.removed.parquet", NOT_OURS),
    "o.report.json": ("o.report.json", NOT_OURS),
    "o.parquet, a link": ("o.parquet", LINK),
}


@pytest.mark.parametrize("kind", fast_first(PREFILTER_CASES))
def test_prefilter_refuses_a_foreign_output_before_reading_its_input(tmp_path, monkeypatch, capfd, kind):
    ws = tmp_path / "ws"
    (ws / "out").mkdir(parents=True)
    write_params(ws, sources={"notes": {"kind": "text", "path": "raw", "text_only": True, "clean": False}})
    _fifo(ws / "c.parquet")
    name = kind.removesuffix(", a link")
    if kind.endswith("a link"):
        (ws / "out" / name).symlink_to(_mine(tmp_path))
    else:
        (ws / "out" / name).write_bytes(b"my own table\n")
    before = snapshot(tmp_path)
    result = cli(["prefilter", "notes", "c.parquet", "out/o.parquet"], ws, monkeypatch, capfd)
    assert_refused_untouched(result, tmp_path, before, *PREFILTER_CASES[kind])


# ---------------------------------------------------------------- 2. release: a user's file hard-linked in

LINKED_IN = {  # where in the release the user's file is hard-linked
    "notes in train": "train/notes.txt",
    "a README in validation": "validation/README.md",
    "a table among the images": "train/images/diffusiondb/captions.csv",
}


@pytest.mark.parametrize("case", fast_first(LINKED_IN))
def test_release_refuses_a_hard_linked_file_before_its_work(tmp_path, monkeypatch, capfd, case):
    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(ws, releases={"r": {"components": COMPONENTS, "export": "imagefolder"}})
    make_splits(ws, n=8)
    argv = ["release", "r", "data/splits", "data/releases/r"]
    assert cli(argv, ws, monkeypatch, capfd).returncode == 0
    rel = LINKED_IN[case]
    os.link(_mine(tmp_path), ws / "data" / "releases" / "r" / rel)
    _fifo(ws / "data" / "splits" / "diffusiondb" / "train.parquet")  # read by the release's work
    before = snapshot(tmp_path)
    result = cli(argv, ws, monkeypatch, capfd)
    assert_refused_untouched(result, tmp_path, before, rel.split("/", 1)[1], DID_NOT_WRITE)
