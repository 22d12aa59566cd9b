"""Round 31d: a stage that reads an input more than once reads one file, and the by-name parquet opens go through
the checked open helpers (every row failed before its fix), on real files, links and FIFOs:

1. prefilter and captions@S read their input twice (its ids, checked unique or ranked, then its rows streamed),
   each by name: a table renamed over the input between the two reads was read as a second file (a duplicate id
   in the rows streamed passed: the ids checked came from the file renamed over them). Both reads now take the
   file the first opened (tables.stage_input). plots read a clusters table's columns from one open and its rows
   from another by name (clusters_table.read_clusters_table): a table renamed over between them was plotted.
2. The by-name opens: clusters_table's rows (a link out of dedup's folder or a FIFO swapped in after its columns
   were read), a release's parquet part read for publish (tables.part_images, by name: a link out, a FIFO), and
   image_store's generate manifest (a FIFO hung the command) now read from one open, checked there.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.workspace import error_line
from scripts.lib import clusters_table, export, image_store, tables
from scripts.lib.errors import DataError
from scripts.lib.safe_paths import table_in


def _rows(ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "source": ["s"] * n,
            "prompt": [f"A prompt {i}" for i in ids],
            "split": pa.array([None] * n, pa.string()),
            "image": pa.array([None] * n, pa.string()),
            "width": pa.array([None] * n, pa.float64()),
            "height": pa.array([None] * n, pa.float64()),
            "meta": ["{}"] * n,
            "text": [f"a prompt {i}" for i in ids],
        }
    )


def _renamed_over(path: Path, table: pa.Table):
    def replace() -> None:
        pq.write_table(table, path.with_name("other.parquet"))
        os.replace(path.with_name("other.parquet"), path)

    return replace


def _after_reads(monkeypatch, target: Path, reads: int, replace) -> None:
    """`replace` runs once, right after the `reads`-th look of tables.existing_input at `target` (each read of a
    stage input starts with one): the moment between two reads of one run."""
    real, target_name, seen = tables.existing_input, os.path.abspath(target), [0]

    def looking(path):
        checked = real(path)
        if os.path.abspath(path) == target_name:
            seen[0] += 1
            if seen[0] == reads:
                replace()
        return checked

    monkeypatch.setattr(tables, "existing_input", looking)
    monkeypatch.setattr(clusters_table, "existing_input", looking)


def _after_schema_read(monkeypatch, replace) -> None:
    """`replace` runs once, right after the first footer read (pyarrow's read_schema): between a table's
    columns and its rows."""
    real, done = pq.read_schema, []

    def reading(source, *args, **kwargs):
        schema = real(source, *args, **kwargs)
        if not done:
            done.append(replace())
        return schema

    monkeypatch.setattr(pq, "read_schema", reading)


# ---------------------------------------------------------------- 1. the reads of one stage: one file


def prefilter_input_renamed_over(root: Path):
    pq.write_table(_rows(["a", "a", "b"]), root / "in.parquet")  # streamed: a repeated id
    return ["prefilter", "s", "in.parquet", "out/o.parquet"], _renamed_over(root / "in.parquet", _rows(["x", "y"]))


def prefilter_input_through_a_link_renamed_over(root: Path):
    (root / "cache").mkdir()
    pq.write_table(_rows(["a", "a", "b"]), root / "cache/in.parquet")
    (root / "in.parquet").symlink_to("cache/in.parquet")  # a link is followed: DVC's symlink checkout
    return ["prefilter", "s", "in.parquet", "out/o.parquet"], _renamed_over(root / "cache/in.parquet", _rows(["x"]))


def captions_input_renamed_over(root: Path):
    pq.write_table(_rows(["a", "a", "b"]), root / "in.parquet")
    (root / "images").mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "file": ["a.png", "b.png"]}), root / "images/manifest.parquet")
    argv = ["captions", "s", "in.parquet", "images", "out/o.parquet"]
    return argv, _renamed_over(root / "in.parquet", _rows(["x", "y", "z"]))


@pytest.mark.parametrize(
    "case",
    [prefilter_input_renamed_over, prefilter_input_through_a_link_renamed_over, captions_input_renamed_over],
    ids=lambda case: case.__name__,
)
def test_a_stage_reads_one_version_of_its_input(tmp_path, monkeypatch, capfd, case):
    """The ids checked and the rows streamed are of the file the first read opened: a table renamed over the
    name between them is not read (the first file's repeated id is refused, nothing written)."""
    (tmp_path / "params.yaml").write_text("{}\n", encoding="utf-8")
    argv, replace = case(tmp_path)
    _after_reads(monkeypatch, tmp_path / "in.parquet", 2, replace)  # after the first read's open, before the second's
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "duplicate id 'a'" in error_line(result.stderr)
    assert not (tmp_path / "out/o.parquet").exists()


CLUSTERS = pa.table({"id": ["a"], "duplicate_of": ["b"], "jaccard": [0.9]})


def _clusters_root(root: Path) -> Path:
    (root / "dedup").mkdir()
    pq.write_table(CLUSTERS, root / "dedup/s.clusters.parquet")
    return root / "dedup/s.clusters.parquet"


def clusters_renamed_over(root: Path, path: Path):
    other = pa.table({"id": ["x", "y"], "duplicate_of": ["z", "z"], "jaccard": [0.5, 0.6]})
    return _renamed_over(path, other), None


def clusters_swapped_for_a_link_out(root: Path, path: Path):
    pq.write_table(pa.table({"id": ["k"], "duplicate_of": ["k"], "jaccard": [1.0]}), root / "elsewhere.parquet")

    def replace() -> None:
        path.with_name("tmp").symlink_to(root / "elsewhere.parquet")
        os.replace(path.with_name("tmp"), path)

    return replace, None


def clusters_swapped_for_a_fifo(root: Path, path: Path):
    def replace() -> None:
        os.mkfifo(path.with_name("tmp"))
        os.replace(path.with_name("tmp"), path)

    return replace, None


@pytest.mark.parametrize(
    "case",
    [clusters_renamed_over, clusters_swapped_for_a_link_out, clusters_swapped_for_a_fifo],
    ids=lambda case: case.__name__,
)
def test_plots_reads_a_clusters_table_from_one_open(tmp_path, monkeypatch, case):
    """plots' clusters table (table_in: checked in dedup's folder) has its columns and its rows read from the
    one open: another table, a link out of the folder or a FIFO put there between the two is never read."""
    path = _clusters_root(tmp_path)
    replace, _ = case(tmp_path, path)
    _after_schema_read(monkeypatch, replace)  # its columns read, its rows not yet
    result: list = []
    reader = threading.Thread(
        target=lambda: result.append(clusters_table.read_clusters_table(table_in(tmp_path / "dedup", path.name))),
        daemon=True,
    )
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "the read of a FIFO swapped in blocked"
    assert result and result[0].equals(CLUSTERS)


# ---------------------------------------------------------------- 2. by-name opens, checked where they are opened


def _part(root: Path) -> Path:
    release = root / "release/train"
    release.mkdir(parents=True)
    image = {"bytes": b"PNG-a", "path": "a.png"}
    pq.write_table(pa.table({"id": ["a"], "image": [image]}), release / "part-0000.parquet")
    return release / "part-0000.parquet"


def part_linked_out(root: Path, part: Path) -> str:
    image = {"bytes": b"SECRET", "path": "a.png"}
    pq.write_table(pa.table({"id": ["a"], "image": [image]}), root / "elsewhere.parquet")
    part.unlink()
    part.symlink_to(root / "elsewhere.parquet")
    return "leads out of"


def part_a_fifo(root: Path, part: Path) -> str:
    part.unlink()
    os.mkfifo(part)
    return "is a FIFO"


def part_through_a_folder_linked_out(root: Path, part: Path) -> str:
    (root / "outside").mkdir()
    image = {"bytes": b"SECRET", "path": "a.png"}
    pq.write_table(pa.table({"id": ["a"], "image": [image]}), root / "outside/part-0000.parquet")
    part.unlink()
    part.parent.rmdir()
    part.parent.symlink_to(root / "outside")  # the split's folder, a link out of the release
    return "leads out of"


@pytest.mark.parametrize(
    "case", [part_linked_out, part_a_fifo, part_through_a_folder_linked_out], ids=lambda case: case.__name__
)
def test_a_release_part_is_read_from_one_checked_open(tmp_path, case):
    """publish's image of a parquet part (export.release_image_bytes): a link out of the release, a FIFO or a
    folder at the part's name is one line, never read (a FIFO hung, a link out was uploaded)."""
    part = _part(tmp_path)
    assert export.release_image_bytes(tmp_path / "release", "train/part-0000.parquet!/a") == b"PNG-a"
    expected = case(tmp_path, part)
    result: list = []

    def read() -> None:
        try:
            result.append(export.release_image_bytes(tmp_path / "release", "train/part-0000.parquet!/a"))
        except DataError as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "the read of a FIFO blocked"
    assert isinstance(result[0], DataError) and expected in str(result[0])


def test_a_part_renamed_over_is_read_anew(tmp_path):
    """The part read once is known by what it is (device, inode, size, time), not its name: another file renamed
    over it with the same size and time was answered from the first part's images."""
    part = _part(tmp_path)
    assert export.release_image_bytes(tmp_path / "release", "train/part-0000.parquet!/a") == b"PNG-a"
    first = part.stat()
    other = pa.table({"id": ["a"], "image": [{"bytes": b"PNG-b", "path": "a.png"}]})
    _renamed_over(part, other)()
    os.utime(part, ns=(first.st_atime_ns, first.st_mtime_ns))  # its name, size and time: the first part's
    assert part.stat().st_size == first.st_size
    assert export.release_image_bytes(tmp_path / "release", "train/part-0000.parquet!/a") == b"PNG-b"


@pytest.mark.parametrize("case", [part_linked_out, part_through_a_folder_linked_out], ids=lambda case: case.__name__)
def test_a_release_part_listed_is_read_from_one_checked_open(tmp_path, case):
    """release's listing of its images (export.locate_images, rows.parquet's sha256): a part that is a link out
    of the release was read by name and its images listed as the release's own."""
    expected = case(tmp_path, _part(tmp_path))
    with pytest.raises(DataError, match=expected):
        export.locate_images(tmp_path / "release", "train")


@pytest.mark.parametrize("kind", ["fifo", "folder", "link to a fifo"])
def test_a_generate_manifest_is_opened_checked(tmp_path, kind):
    """image_store's manifest read (generate's keys): a FIFO (or a link to one) hung the command; a folder was
    read as a dataset. One line naming the manifest."""
    manifest = tmp_path / "manifest.parquet"
    if kind == "folder":
        manifest.mkdir()
    else:
        os.mkfifo(tmp_path / "pipe")
        os.replace(tmp_path / "pipe", manifest) if kind == "fifo" else manifest.symlink_to(tmp_path / "pipe")
    result: list = []

    def read() -> None:
        try:
            result.append(image_store.manifest_keys(manifest))
        except DataError as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "the read of a FIFO blocked"
    assert isinstance(result[0], DataError) and "manifest.parquet" in str(result[0])
    assert "not a regular file" in str(result[0]) or "is a " in str(result[0])
