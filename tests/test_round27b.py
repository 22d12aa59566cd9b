"""Round 27b: a folder is ours only if we wrote it, file by file.

1. A file a user added to, or edited in, a folder output of ours (a release's split folder, sample-data's
   data/raw) was refused, but the line named the folder's marker: "holds '.t2i-output', which this command
   did not write", for a `notes.txt` added to a release's `train/`; an edit in place was told as a file the
   command "did not write". mark_folder now marks each file it writes as well (marks.mark_file, lone files
   only: an image linked in from the store keeps its own), so the line names the user's file, and says an
   edited one was written by the command and edited since. The folder stays byte for byte as it was.
2. A release's split folder from which a user only deleted files (its metadata.jsonl, its images) was refused
   at every later run, naming the marker: nothing of the user's was in it. What is left is proved ours file by
   file (marks.ours_file_by_file), then by the new output's bytes when replaced.
3. `plots` wrote its CSVs through an output folder that is a link (to the user's folder: exit 0, four files
   in it); a link to nothing was told as "is a file". It is refused as every other folder output's link is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line, make_splits, snapshot, write_params

RELEASE = ["release", "r", "data/splits", "data/releases/r"]


def _released(tmp_path: Path, monkeypatch, capfd) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_params(ws, releases={"r": {"components": components, "export": "imagefolder"}})
    make_splits(ws, n=8)
    assert cli(RELEASE, ws, monkeypatch, capfd).returncode == 0
    return ws


def _append(path: Path, text: str) -> None:
    """An edit in place, as `echo >>` makes it: the same inode, another size and time."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


def _photo(tmp_path: Path) -> Path:
    """The user's own photo, outside the workspace."""
    (tmp_path / "photo.png").write_bytes(b"\x89PNG my photo")
    return tmp_path / "photo.png"


def _image(folder: Path) -> Path:
    return next((folder / "images" / "diffusiondb").iterdir())


# ---------------------------------------------------------------- 1. the user's file is named, the folder stays

USER_CHANGES = {  # case: (change the release at data/releases/r, the name the line gives, what it says)
    "notes added to train": (
        lambda r: (r / "train" / "notes.txt").write_text("my notes\n"),
        "notes.txt",
        "which this command did not write",
    ),
    "a .DS_Store among the images": (
        lambda r: (r / "validation" / "images" / "diffusiondb" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1"),
        "images/diffusiondb/.DS_Store",
        "which this command did not write",
    ),
    "metadata edited in place": (
        lambda r: _append(r / "train" / "metadata.jsonl", '{"file_name": "mine.png"}\n'),
        "metadata.jsonl",
        "edited since this command wrote it",
    ),
    "a photo hard-linked in": (
        lambda r: os.link(_photo(r.parent.parent.parent.parent), r / "train" / "images" / "mine.png"),
        "images/mine.png",
        "which this command did not write",
    ),
}


@pytest.mark.parametrize("case", fast_first(USER_CHANGES))
def test_a_release_split_folder_changed_by_the_user_names_the_users_file(tmp_path, monkeypatch, capfd, case):
    change, name, says = USER_CHANGES[case]
    ws = _released(tmp_path, monkeypatch, capfd)
    change(ws / "data" / "releases" / "r")
    before = snapshot(ws / "data" / "releases")
    done = cli(RELEASE, ws, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and f"holds '{name}', {says}" in line, line
    assert snapshot(ws / "data" / "releases") == before


SAMPLE_EDITS = {  # case: a file of sample-data's folder, edited in place
    "prompts appended to": lambda raw: _append(raw / "chatgpt" / "prompts.txt", "my prompt\n"),
    "manifest truncated": lambda raw: os.truncate(raw / "laion_buckets" / "manifest.json", 10),
    "a shard overwritten": lambda raw: (raw / "dalle3" / "data-000000.tar").write_bytes(b"mine"),
}


@pytest.mark.parametrize("case", fast_first(SAMPLE_EDITS))
def test_sample_data_names_a_file_edited_since_it_wrote_it(tmp_path, monkeypatch, capfd, case):
    assert cli(["sample-data", "raw"], tmp_path, monkeypatch, capfd).returncode == 0
    SAMPLE_EDITS[case](tmp_path / "raw")
    before = snapshot(tmp_path / "raw")
    done = cli(["sample-data", "raw", "--seed", "7"], tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "edited since this command wrote it" in line, line
    assert snapshot(tmp_path / "raw") == before


# ---------------------------------------------------------------- 2. a deletion loses nothing of the user's


def _delete_images(folder: Path) -> None:
    for image in list((folder / "images" / "diffusiondb").iterdir()):
        image.unlink()


DELETIONS = {  # case: files of ours the user deleted from the release's split folders
    "train's metadata": lambda r: (r / "train" / "metadata.jsonl").unlink(),
    "validation's images": lambda r: _delete_images(r / "validation"),
    "one image and validation's metadata": lambda r: (
        _image(r / "train").unlink(),
        (r / "validation" / "metadata.jsonl").unlink(),
    ),
}


@pytest.mark.parametrize("case", fast_first(DELETIONS))
def test_a_release_split_folder_the_user_only_deleted_from_is_written_again(tmp_path, monkeypatch, capfd, case):
    ws = _released(tmp_path, monkeypatch, capfd)
    release = ws / "data" / "releases" / "r"
    whole = snapshot(release)
    DELETIONS[case](release)
    done = cli(RELEASE, ws, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert snapshot(release) == whole


# ---------------------------------------------------------------- 3. plots' output folder as a link


def _plots_workspace(root: Path) -> None:
    from test_round25c import _plots_workspace as made

    made(root)


def _link_to_users_folder(ws: Path, tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.md").write_text("my thesis\n")
    (ws / "data" / "plots").symlink_to(mine)
    return mine


def _link_to_empty_folder(ws: Path, tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (ws / "data" / "plots").symlink_to(mine)
    return mine


def _link_to_nothing(ws: Path, tmp_path: Path) -> Path:
    (ws / "data" / "plots").symlink_to(tmp_path / "gone")
    return tmp_path / "gone"  # and stays gone


PLOTS_LINKS = {
    "to the user's folder": _link_to_users_folder,
    "to an empty folder": _link_to_empty_folder,
    "to nothing": _link_to_nothing,
}


@pytest.mark.parametrize("case", PLOTS_LINKS)
def test_plots_never_writes_through_an_output_folder_that_is_a_link(tmp_path, monkeypatch, capfd, case):
    ws = tmp_path / "ws"
    ws.mkdir()
    _plots_workspace(ws)
    mine = PLOTS_LINKS[case](ws, tmp_path)
    before = snapshot(mine)
    done = cli(["plots", "data/releases", "data/clean", "data/dedup", "data/plots"], ws, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: data/plots: is a symbolic link"), line
    assert snapshot(mine) == before
