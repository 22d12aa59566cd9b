"""Path checks of a release: what it reads must stay inside its sources, what it replaces must be its own.

`check_split_rows` refuses a split row whose id is not a portable file name (ids become file and tar
member names: PLAIN_ID, check_ids_apart) or whose image lies outside its source's folders (`/etc/passwd`, `../../x`, a link out of the
store). `check_output` and `move_into_place` let a release replace only a folder it wrote: a mistyped
output path loses no data.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.lib.archive import parse_ref
from scripts.lib.errors import DataError
from scripts.lib.io import (
    SPLITS,
    check_output_kind,
    check_outputs_ours,
    check_replaceable,
    replace_together,
)
from scripts.lib.marks import files_under, holds_marker, mark_file, ours_file_by_file, shared_unmarked
from scripts.lib.params.base import WINDOWS_DEVICES, windows_device
from scripts.lib.safe_paths import Roots, not_an_image_name
from scripts.lib.tables import check_cells, check_table
from scripts.lib.temps import TMP_OLD, is_our_temp, remove_stale, sibling_name

# Ids become file and tar member names (images/<source>/<id>.png) on every system a release is checked out
# on: ASCII (one Unicode form of each), and never a Windows device's name (CON.png there is the console, what
# is written to it lost), whatever the case or extension. Apart when case is ignored: check_ids_apart.
DEVICE_STEM = "|".join(sorted(WINDOWS_DEVICES))
PLAIN_ID = re.compile(rf"(?!(?i:{DEVICE_STEM})(?:\.|$))[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}")
OUTPUTS = ("train", "validation", "README.md", "removed.parquet", "rows.parquet", "stats.json", "preview.jpg")


def check_split_rows(
    rows: pd.DataFrame, path: Path, source: str, roots: list[Path], images_required: bool = True, first: int = 1
) -> None:
    """Refuse, in one line naming the file and row, what a release would trust blindly: a missing
    column, a null value, an id that is not a plain name (it becomes a file name), a row of another
    source, an image outside the source's folders (`/etc/passwd`, `../../x`, a link out of the store) or
    named with no image's extension (`x.txt`: its caption's name in a SimpleTuner release).
    Without `images_required` (a text-only source) a row may have no image. `first`: the file's row number
    of rows' first row, when they are a chunk of it."""
    check_row_columns(rows, path, first=first)
    check_no_nulls(
        rows, path, ("id", "source", "text", "image") if images_required else ("id", "source", "text"), first
    )
    confine = ImageRoots(roots)
    for number, (row_id, row_source, image) in enumerate(zip(rows["id"], rows["source"], rows["image"]), start=first):
        if not PLAIN_ID.fullmatch(row_id):
            raise not_plain(path, number, row_id)
        if row_source != source:
            raise DataError(f"{path}: row {number}: source {row_source!r} in the split folder of {source!r}")
        confine.check(image, path, number, source)


def check_composed_rows(
    rows: pd.DataFrame, path: Path, roots: dict[str, list[Path]], text_only: frozenset[str], first: int = 1
) -> None:
    """check_split_rows for rows of several sources, as release@V reads them from compose@V's rows.parquet
    (`--composed`, any folder a user names): each row of a source of the release, its image inside that
    source's folders (none only for a text-only source), its split train or validation."""
    check_row_columns(rows, path, ("split",), first)
    check_no_nulls(rows, path, ("id", "source", "split", "text"), first)
    confine = {source: ImageRoots(folders) for source, folders in roots.items()}
    columns = zip(rows["id"], rows["source"], rows["split"], rows["image"])
    for number, (row_id, source, split, image) in enumerate(columns, start=first):
        if not PLAIN_ID.fullmatch(row_id):
            raise not_plain(path, number, row_id)
        if source not in confine:
            raise DataError(f"{path}: row {number}: source {source!r} is not a component of this release")
        if split not in SPLITS:
            raise DataError(f"{path}: row {number}: split {split!r} is neither 'train' nor 'validation'")
        if (image is None or image != image) and source not in text_only:
            raise DataError(f"{path}: row {number}: null image")
        confine[source].check(image, path, number, source)


def check_row_columns(rows: pd.DataFrame, path: Path, extra: tuple[str, ...] = (), first: int = 1) -> None:
    """The columns every release row has: texts that are text, ids unique, sizes that are pixel counts
    (tables.size_problem: 1e30 was a traceback, -5 and 0 went into the release)."""
    check_table(rows, path, strings=("id", "source", "text", "orig_text", "image", *extra), unique="id")
    check_cells(rows, path, sizes=("width", "height"), first_row=first - 1)


def check_no_nulls(rows: pd.DataFrame, path: Path, columns: tuple[str, ...], first: int = 1) -> None:
    """The first null of `columns`, in one line naming the file and row (`first`: rows' first row number)."""
    for column in columns:
        nulls = rows[column].isna().to_numpy().nonzero()[0]
        if len(nulls):
            raise DataError(f"{path}: row {nulls[0] + first}: null {column}")


class ImageRoots(Roots):
    """Whether an image reference lies in a source's folders, after every link (a link into DVC's cache too)."""

    def check(self, image, path: Path, number: int, source: str) -> None:
        if image is None or image != image:  # no image (a text-only source): nothing to confine
            return
        if "\0" in image:  # os.path.realpath raises ValueError for it: a traceback, not a line
            raise DataError(f"{path}: row {number}: image {image!r} holds a NUL byte, which no path may hold")
        if not self.holds(parse_ref(image)[0]):
            where = ", ".join(str(root) for root in self.roots) or "none in params.yaml"
            raise DataError(
                f"{path}: row {number}: image {image!r} is outside the folders of source {source!r} ({where})"
            )
        # no extension is placed as <id>.jpg (export.image_ext): only a named one can be its caption's
        if os.path.splitext(image)[1] and (why := not_an_image_name(image)):
            raise DataError(f"{path}: row {number}: image {why}; its caption or metadata would take its name")


def check_plain_ids(ids: pd.Series, path: Path) -> None:
    """check_split_rows' id rule alone, on a whole column (compose@V orders rows by their ids first)."""
    bad = np.flatnonzero(~ids.str.fullmatch(PLAIN_ID.pattern).to_numpy(dtype=bool, na_value=False))
    if len(bad):
        raise not_plain(path, int(bad[0]) + 1, ids.iloc[bad[0]])


def not_plain(path: Path, number: int, row_id) -> DataError:
    if isinstance(row_id, str) and windows_device(row_id):
        return DataError(
            f"{path}: row {number}: id {row_id!r} is a device name on Windows ({row_id.split('.')[0].upper()}): "
            f"its file {row_id}.png there is that device, not a file (ids become file names); give the row another id"
        )
    return DataError(f"{path}: row {number}: id {row_id!r} is not a plain name (ASCII letters, digits, '_', '-', '.')")


def check_ids_apart(ids: pd.Series, where: str | Path) -> None:
    """Refuse two ids of a release equal but for case (`ABC`, `abc`): their files (images/<source>/<id>.png,
    a SimpleTuner caption <id>.txt) are one on a case-insensitive file system (macOS, Windows), where a
    checkout keeps one of the two. Ids are ASCII (PLAIN_ID): lowercase is their case-insensitive form."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(ids, pa.large_string())
    if pc.count_distinct(pc.utf8_lower(array), mode="all").as_py() == pc.count_distinct(array, mode="all").as_py():
        return  # no hash table of Python strings: pipeline ids are lowercase hex, this is all a release pays
    seen: dict[str, str] = {}
    for row_id in ids[ids.str.lower().duplicated(keep=False)]:
        other = seen.setdefault(row_id.lower(), row_id)
        if other != row_id:
            raise DataError(
                f"{where}: ids {other!r} and {row_id!r} differ only by case: their files ({other}.png, "
                f"{row_id}.png) are one on a case-insensitive file system (macOS, Windows); give one another id"
            )


def check_output(output: Path) -> None:
    """What move_into_place checks again at the end, on what a release writes (OUTPUTS)."""
    check_output_kind(output)  # a link to a folder was written through (the release landed in the folder)
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: is a file, expected a release folder")
    marked = {split: holds_marker(output / split) for split in SPLITS}  # one stat a file: once a split
    if output.is_dir():
        allowed = {*OUTPUTS, ".gitignore", *(sibling_name(name, TMP_OLD) for name in OUTPUTS)}
        _refuse_foreign(output, sorted(p.name for p in output.iterdir() if p.name not in allowed))
        _refuse_untagged_old(output, OUTPUTS)  # before any work: a user's `.train.tmp-old/` is theirs
        check_outputs_ours(output, sorted(set(OUTPUTS) - set(SPLITS)))  # each file proved on its own
    for split in SPLITS:  # one changed since but only by a deletion: proved again with the new bytes at the end
        if (output / split).is_dir() and not marked[split] and not ours_file_by_file(output / split):
            check_replaceable(output / split)
        elif (output / split).is_dir() and not marked[split]:
            _refuse_linked_in(output / split)


def _refuse_linked_in(folder: Path) -> None:
    """Refuse a split folder holding a file that shares its inode but is no image: a release links only images in
    (export.place_image), so a user's `notes.txt` hard-linked there is theirs. ours_file_by_file let it pass as an
    image, and it was refused only at the final rename, after the release's whole work."""
    entries = files_under(folder)
    linked = {rel for rel in entries if shared_unmarked(folder / rel) and not_an_image_name(rel) is not None}
    if linked:  # check_replaceable names one of them first (not among `writes`), in its one line
        check_replaceable(folder, writes=[rel for rel in entries if rel not in linked])


def _refuse_untagged_old(output: Path, names) -> None:
    """Refuse a `.X.tmp-old` in the release folder that no run of ours tagged: named like our leftover,
    it may be anyone's (a name proves nothing); remove_stale says so in one line."""
    for name in names:
        old = output / sibling_name(name, TMP_OLD)
        if os.path.lexists(old) and not is_our_temp(old):
            remove_stale(old, output / name)


def _refuse_foreign(output: Path, foreign: list[str]) -> None:
    if foreign:
        raise DataError(
            f"{output}: holds {foreign[0]!r}, which release did not write; refusing to write a "
            "release into it (point it at its own folder, e.g. data/releases/NAME)"
        )


def move_into_place(staging: Path, output: Path) -> None:
    """Replace each release output with its staged version (renames on one filesystem: no copies).

    Nothing is replaced unless the output folder holds only release outputs and each folder being
    replaced is one a release wrote (io.check_replaceable): a mistyped output path loses no data."""
    staged = sorted(staging.iterdir())
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: is a file, expected a release folder")
    if output.is_dir():
        names = {item.name for item in staged} | {".gitignore"}  # DVC writes .gitignore beside outputs
        left = {sibling_name(item.name, TMP_OLD) for item in staged}  # a run killed while moving its folders in
        _refuse_foreign(output, sorted(p.name for p in output.iterdir() if p.name not in names | left))
        _refuse_untagged_old(output, [item.name for item in staged])
        for item in staged:  # only what a killed run of ours tagged (replace_path marks its old copies)
            remove_stale(output / sibling_name(item.name, TMP_OLD), output / item.name)
    for item in staged:
        check_replaceable(output / item.name, item)
        if item.is_file():
            mark_file(item)  # the next run proves it ours by this mark (the split folders hold the MARKER)
    output.mkdir(parents=True, exist_ok=True)
    replace_together([(item, output / item.name) for item in staged])  # a Ctrl-C or a failure mixed two runs
