"""Round 41d: the store's index and the output's journal after a cut last line; a folder at an indexed name.

1. A last line with no newline (a full disk or a kill inside a name) that is not UTF-8 made `index.txt` or
   `.generate-journal` "unreadable (UnicodeDecodeError)": generate-prune and generate stayed refused. `add` writes
   a name and its newline in one write, so a cut line's file was never written: it is left out, and cut off by
   the next append (under the file's lock). A line before it that is not UTF-8 is still refused.
2. A cut line that decodes may be a prefix of a real name: it made a user's file of that name ours, and
   generate-prune deleted it. It is left out too: the user's file is refused as unlisted, nothing deleted.
3. generate-prune dropped from the index a name whose image is a folder and reported nothing: it stays listed
   and is counted as kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.workspace import error_line
from scripts.lib.errors import DataError
from scripts.lib.image_store import JOURNAL, STORE_INDEX, STORE_MARK, STORE_MARK_TEXT, OutputFolder
from scripts.lib.name_lists import Journal, NameList

IMAGE = "ab/" + "ab" * 32 + ".jpg"


def make_store(root: Path, index: bytes, files: dict[str, bytes] | None = None, folders: tuple = ()) -> Path:
    """A store generate made: its marker, .tmp, .gitignore, `index` as index.txt, `files` and `folders` in it."""
    (root / ".tmp").mkdir(parents=True)
    (root / ".gitignore").write_bytes(b"*\n")
    (root / STORE_MARK).write_bytes(STORE_MARK_TEXT)
    (root / STORE_INDEX).write_bytes(index)
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for rel in folders:
        (root / rel).mkdir(parents=True)
    return root


def prune_all(tmp_path: Path, monkeypatch, capfd):
    return cli(["generate-prune", "--store", "store", "--all"], tmp_path, monkeypatch, capfd)


# ---------------------------------------------------------------- 1. a last line cut inside a character

CUT_CHARACTERS = {  # case: the cut last line (no newline)
    "cut inside é": "cd/café.jpg".encode()[:-5],
    "cut inside a 3-byte character, the only line": "€".encode()[:2],
    "cut inside an emoji": "ef/🦊.jpg".encode()[:5],
}


@pytest.mark.parametrize("case", CUT_CHARACTERS)
def test_prune_leaves_out_an_index_line_cut_inside_a_character(tmp_path, monkeypatch, capfd, case):
    whole = b"" if "only line" in case else f"{IMAGE}\n".encode()
    store = make_store(tmp_path / "store", whole + CUT_CHARACTERS[case], {IMAGE: b"img"} if whole else {})
    result = prune_all(tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert f"{len(whole) and 1} images removed" in result.stdout
    assert not (store / IMAGE).exists() and (store / STORE_INDEX).read_bytes() == b""


@pytest.mark.parametrize("case", CUT_CHARACTERS)
def test_a_journal_line_cut_inside_a_character_is_left_out(tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    (out / JOURNAL).write_bytes(b"x.png\t" + b"0" * 64 + b"\n" + CUT_CHARACTERS[case])
    assert Journal(out / JOURNAL).digests() == {"x.png": {"0" * 64}}
    OutputFolder(out).refuse_foreign()  # not "unreadable"


@pytest.mark.parametrize("case", CUT_CHARACTERS)
def test_the_next_append_cuts_off_a_torn_last_line(tmp_path, case):
    path = tmp_path / STORE_INDEX
    path.write_bytes(b"a\n" + CUT_CHARACTERS[case])
    NameList(path).add("b")
    assert path.read_bytes() == b"a\nb\n"


MIDDLE = {  # a line that is not UTF-8, with whole lines after it: not ours to guess
    "cut é, then a line": b"caf\xc3\nb\n",
    "a lone continuation byte, then a torn line": b"\x80\nb",
    "latin-1 in the middle": b"a\nna\xefve\nb\n",
}


@pytest.mark.parametrize("case", MIDDLE)
def test_a_bad_line_before_the_last_is_still_refused(tmp_path, monkeypatch, capfd, case):
    store = make_store(tmp_path / "store", MIDDLE[case], {IMAGE: b"img"})
    result = prune_all(tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and "unreadable (UnicodeDecodeError)" in error_line(result.stderr)
    assert (store / IMAGE).read_bytes() == b"img"


# ---------------------------------------------------------------- 2. a cut last line that decodes: a prefix

PREFIXES = {  # case: (the cut last line, the user's file of that name)
    "a prefix of a real image name": (IMAGE[:-1], IMAGE[:-1]),
    "the folder part and a letter": ("ab/m", "ab/m"),
    "a whole name, its newline cut": ("cd/mine.jpg", "cd/mine.jpg"),
}


@pytest.mark.parametrize("case", PREFIXES)
def test_prune_never_deletes_a_users_file_named_by_a_cut_line(tmp_path, monkeypatch, capfd, case):
    cut, mine = PREFIXES[case]
    store = make_store(tmp_path / "store", f"{IMAGE}\n{cut}".encode(), {IMAGE: b"img", mine: b"my own"})
    result = prune_all(tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and f"holds {mine!r}, which its index does not list" in error_line(result.stderr)
    assert (store / mine).read_bytes() == b"my own" and (store / IMAGE).read_bytes() == b"img"


@pytest.mark.parametrize("case", PREFIXES)
def test_a_cut_journal_line_never_makes_a_users_file_ours(tmp_path, case):
    cut, mine = PREFIXES[case]
    out = tmp_path / "out"
    (out / mine).parent.mkdir(parents=True)
    (out / mine).write_bytes(b"my own")
    (out / JOURNAL).write_bytes(f"x.png\t{'0' * 64}\n{cut}".encode())  # cut before its tab and digest
    with pytest.raises(DataError, match="which generate did not write"):
        OutputFolder(out).refuse_foreign()
    assert (out / mine).read_bytes() == b"my own"


# ---------------------------------------------------------------- 3. a folder at an indexed image name

FOLDERS = {  # case: (other indexed images, the folder's own folders)
    "an empty folder": ([], ()),
    "a folder holding a folder": ([], ("deeper",)),
    "an empty folder beside an image pruned": (["cd/" + "cd" * 32 + ".png"], ()),
}


@pytest.mark.parametrize("case", FOLDERS)
def test_prune_keeps_listing_a_folder_at_an_indexed_name(tmp_path, monkeypatch, capfd, case):
    others, inner = FOLDERS[case]
    index = "".join(f"{n}\n" for n in [IMAGE, *others]).encode()
    folders = (IMAGE, *(f"{IMAGE}/{d}" for d in inner))
    store = make_store(tmp_path / "store", index, {n: b"img" for n in others}, folders)
    result = prune_all(tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert f"{len(others)} images removed, 1 kept" in result.stdout
    assert (store / IMAGE).is_dir() and (store / STORE_INDEX).read_bytes() == f"{IMAGE}\n".encode()
