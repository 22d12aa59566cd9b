"""scripts/lib/image_store.py on real folders: what a run writes is listed before it exists, so a killed
run's files stay ours; what no record lists is refused, with nothing touched."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from scripts.lib.errors import DataError
from scripts.lib.image_store import JOURNAL, STORE_INDEX, STORE_MARK, ImageStore, OutputFolder
from scripts.lib.render_plan import MANIFEST, MANIFEST_COLUMNS
from scripts.lib.temps import mark_temp

KEY = "ab" + "0" * 62
STORED = f"ab/{KEY}.jpg"


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def manifest(names: list[str]) -> pd.DataFrame:
    row = {
        "id": "x",
        "key": KEY,
        "seed": 1,
        "draw": None,
        "model": "m",
        "model_revision": "r",
        "scheduler": "s",
        "steps": 1,
        "guidance": 1.0,
        "width": 8,
        "height": 8,
        "format": "jpg",
        "settings": "{}",
    }
    return pd.DataFrame([{**row, "file": name} for name in names], columns=MANIFEST_COLUMNS)


def test_a_killed_runs_files_are_ours_through_the_journal(tmp_path):
    out = OutputFolder(tmp_path / "out")
    out.start(set())
    out.write("s_00000000.jpg", b"one")
    out.write(STORED, b"two")
    (tmp_path / "out" / "ab" / f".{KEY}.jpg.tmp-99-1").write_bytes(b"half")  # the kill landed mid-write
    mark_temp(tmp_path / "out" / "ab" / f".{KEY}.jpg.tmp-99-1")  # as write_file_atomic tags its temp
    # no finish(): the run was killed; the next one keeps one file and removes the rest
    assert OutputFolder(tmp_path / "out").start({STORED}) == 2
    assert files(tmp_path / "out") == {STORED, JOURNAL}
    out.finish(manifest([STORED]))
    assert files(tmp_path / "out") == {STORED, MANIFEST}  # a finished output: the manifest lists all


def test_the_manifest_of_a_finished_run_lists_what_the_next_run_may_delete(tmp_path):
    out = OutputFolder(tmp_path / "out")
    out.start(set())
    out.write("s_00000000.jpg", b"one")
    out.finish(manifest(["s_00000000.jpg"]))
    assert OutputFolder(tmp_path / "out").keys() == {"s_00000000.jpg": KEY}
    assert OutputFolder(tmp_path / "out").start(set()) == 1 and files(tmp_path / "out") == {JOURNAL}


@pytest.mark.parametrize(
    "name, message",
    [
        ("notes.txt", "holds 'notes.txt', which generate did not write"),
        ("ab/.notes.txt.tmp-1-2", "holds 'ab/.notes.txt.tmp-1-2'"),  # a temp file of a name no record lists
        ("cd/", "holds the folder 'cd'"),
    ],
)
def test_anything_no_record_lists_is_refused_with_nothing_touched(tmp_path, name, message):
    out = OutputFolder(tmp_path / "out")
    out.start(set())
    out.write(STORED, b"two")
    path = tmp_path / "out" / name
    path.mkdir(parents=True) if name.endswith("/") else (path.parent.mkdir(exist_ok=True), path.write_bytes(b"mine"))
    before = files(tmp_path / "out")
    with pytest.raises(DataError, match=message):
        OutputFolder(tmp_path / "out").start(set())
    assert files(tmp_path / "out") == before and path.exists()


def test_the_store_lists_a_name_before_its_file_and_prunes_by_that_list(tmp_path):
    store = ImageStore(tmp_path / "store")
    store.put(STORED, b"img")
    other = f"cd/cd{'1' * 62}.png"
    store.take(tmp_path / "store" / STORED, other)
    assert (tmp_path / "store" / STORE_INDEX).read_text().splitlines() == [STORED, other]
    assert store.prune({other}) == {"removed": 1, "kept": 1}
    assert (tmp_path / "store" / STORE_INDEX).read_text().splitlines() == [other]
    assert ImageStore(tmp_path / "store").prune(None) == {"removed": 1, "kept": 0}
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [".gitignore", STORE_MARK, ".tmp", STORE_INDEX]


def test_a_file_the_index_does_not_list_is_neither_served_nor_pruned(tmp_path):
    """A file under a key's name that the index does not list (a store from before the index, or a user's
    file put there) looks the same: it is never served as a render (it was), nor deleted."""
    ImageStore(tmp_path / "store")
    (tmp_path / "store" / "ab").mkdir(parents=True)
    (tmp_path / "store" / STORED).write_bytes(b"img")
    store = ImageStore(tmp_path / "store")
    assert not store.has(STORED) and not store.take(tmp_path / "store" / STORED, STORED)
    with pytest.raises(DataError, match="its index does not list"):
        store.prune(None)
    assert (tmp_path / "store" / STORED).read_bytes() == b"img"


def test_temp_files_of_dead_runs_are_swept_only_for_names_the_store_writes(tmp_path):
    store = ImageStore(tmp_path / "store")
    store.put(STORED, b"img")
    dead = 2**22 + 12345  # above pid_max's default: no such process
    ours, theirs, untagged = f".{KEY}.jpg.tmp-{dead}-1", f".holiday.jpg.tmp-{dead}-1", f".{KEY}.jpg.tmp-{dead}-2"
    for name in (ours, theirs, untagged):
        (tmp_path / "store" / ".tmp" / name).write_bytes(b"half")
        mark_temp(tmp_path / "store" / ".tmp" / name) if name != untagged else None
    ImageStore(tmp_path / "store")
    assert sorted(p.name for p in (tmp_path / "store" / ".tmp").iterdir()) == sorted([theirs, untagged])
