"""kind: dalle3 - DALL-E-3 synthetic tar shards: <name>.png + <name>.json, streamed, never extracted.

Also the SimpleTuner compile (`compile_simpletuner`): the same records as SimpleTuner's DALL-E-3 preset,
its files written by scripts/lib/simpletuner.py (the one SimpleTuner writer, shared with the release
export).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.lib.archive import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_MEMBER_BYTES,
    UnsafeArchive,
    check_member_name,
    iter_samples,
    make_ref,
    open_tar,
)
from scripts.lib.errors import DataError, shown_short
from scripts.lib.io import atomic_path, check_replaceable, commit_together
from scripts.lib.marks import MARKER
from scripts.lib.nesting import dumps_json, loads_json
from scripts.lib.params.base import windows_device
from scripts.lib.params.sources import MAX_PROMPT_BYTES
from scripts.lib.pixels import image_head
from scripts.lib.readers.base import Problem, Record, SourceConfig, head_pixels, source_files
from scripts.lib.safe_paths import not_an_image_name, resolved
from scripts.lib.simpletuner import ROW_GROUP_ROWS, backend_config, table_writer, txt_name
from scripts.lib.tables import size_problem
from scripts.lib.text_lines import prompt_problem, prompt_too_long

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
NAME_MAX = 255  # bytes of one file name on Linux and macOS
# bytes of a whole image_name: with the folder it is written under it must fit Linux's PATH_MAX (4096); a
# name 25 folders deep of 200 bytes each stopped the run at the write ("dd: cannot write (File name too long)")
IMAGE_NAME_MAX = 1024


@dataclass
class Dalle3Sample:
    shard: Path
    key: str
    image_name: str  # the tar member's name
    record: dict[str, Any]
    pixels: tuple[int, int]
    image: Any = None  # the image member (TarMember): its bytes, read while the shard is open


def iter_dalle3(
    shard: Path, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Iterator[Dalle3Sample | Problem]:
    """Samples of one shard: the parsed json, the image member name and its real pixel size."""
    with open_tar(shard) as buf:
        for item in iter_samples(buf, max_bytes):
            if isinstance(item, UnsafeArchive):
                yield Problem(shard, "", item.reason, str(item))
                continue
            key, members = item
            where = f"sample {shown_short(repr(key))}"
            image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            if image_ext is None or "json" not in members:
                yield Problem(shard, where, "incomplete_sample", f"needs an image and a .json, has {sorted(members)}")
                continue
            raw = members["json"].read()
            try:
                record = loads_json(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Problem(shard, where, "not_utf8", "json member is not UTF-8")
                continue
            except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
                yield Problem(shard, where, "bad_json", f"malformed json ({str(exc).splitlines()[0]})")
                continue
            if not isinstance(record, dict):
                yield Problem(shard, where, "bad_json", "json member is not an object")
                continue
            image = members[image_ext]
            try:
                # the head that decides its shown size (a PNG's IHDR and eXIf: EXIF orientation turns it)
                pixels = head_pixels(functools.partial(image_head, image.read_at), image.name, max_pixels)
            except UnsafeArchive as exc:
                yield Problem(shard, where, exc.reason, str(exc))
                continue
            yield Dalle3Sample(shard, key, image.name, record, pixels, image)


def caption_of(sample: Dalle3Sample, caption_field: str) -> str | Problem:
    """The chosen caption, or a Problem: records without `width` are skipped (published behaviour)."""
    where = f"sample {shown_short(repr(sample.key))}"
    if sample.record.get("width") is None:
        return Problem(sample.shard, where, "missing_width", "record has no width", always_skip=True)
    caption = sample.record.get(caption_field)
    if not isinstance(caption, str):
        return Problem(sample.shard, where, "missing_caption", f"no string field {caption_field!r}")
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError:  # a lone "\udcxx" escape in the json
        return Problem(sample.shard, where, "not_utf8", f"{caption_field} is not valid UTF-8")
    return caption


def read_dalle3(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    info["caption_field"] = cfg.caption_field
    for shard in source_files(Path(cfg.path), "*.tar", "tar shard", cfg.follow_symlinks):
        for sample in iter_dalle3(shard, cfg.max_member_bytes, cfg.max_image_pixels):
            if isinstance(sample, Problem):
                yield sample
                continue
            caption = caption_of(sample, cfg.caption_field)
            if isinstance(caption, Problem):
                yield caption
                continue
            rec = sample.record
            size = size_of(sample)
            if isinstance(size, Problem):
                yield size
                continue
            width, height = size
            meta = {k: v for k, v in rec.items() if k not in ("width", "height", cfg.caption_field)}
            meta["pixels"] = list(sample.pixels)
            yield Record(
                key=f"{shard.name}/{sample.key}",
                prompt=caption,
                image=make_ref(shard, sample.image_name),
                width=width,
                height=height,
                meta=meta,
                file=shard,
                where=f"sample {shown_short(repr(sample.key))}",
            )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        return int(value)  # "512"; not "²" (a digit to isdigit, not to int) nor 5000 digits (int's limit)
    return None


def size_of(sample: Dalle3Sample) -> tuple[int, int] | Problem:
    """The record's width and height (the preset's int(content['width'])), or why not."""
    width, height = _as_int(sample.record.get("width")), _as_int(sample.record.get("height"))
    if width is None or height is None:
        why = "not integers"
    elif size_problem(width) or size_problem(height):  # the simpletuner tool writes them as given: -5 went
        why = "out of range"  # into its int32 columns, 10**25 was a traceback
    else:
        return width, height
    raw = f"{shown_short(repr(sample.record.get('width')))}x{shown_short(repr(sample.record.get('height')))}"
    return Problem(sample.shard, f"sample {shown_short(repr(sample.key))}", "bad_size", f"width/height {why}: {raw}")


def image_name_of(sample: Dalle3Sample) -> str | Problem:
    """The json's `image_name`: SimpleTuner's filename (with its extension), a relative name that stays
    inside the folder it is written to."""
    where = f"sample {shown_short(repr(sample.key))}"
    name = sample.record.get("image_name")
    if not isinstance(name, str) or not name:
        return Problem(sample.shard, where, "missing_image_name", "no string field 'image_name'")
    try:
        check_member_name(name)
        name.encode("utf-8")
    except (UnsafeArchive, UnicodeEncodeError):
        return Problem(
            sample.shard,
            where,
            "bad_image_name",
            f"image_name {shown_short(repr(name))} is not a plain relative file name",
        )
    stem, dot, ext = name.rpartition("/")[2].rpartition(".")
    # `a/./b.png` is the file `a/b.png` under a second name; a part over NAME_MAX bytes cannot be written; a
    # newline, an escape code or a space at a part's end was written into data/ and the parquet (a file named
    # `a\nb.png` breaks every line-based tool; Windows drops a part's trailing space)
    odd = any(
        part in ("", ".") or len(part.encode()) > NAME_MAX or part != part.strip() or not part.isprintable()
        for part in name.split("/")
    )
    if "\\" in name or "\x00" in name or not (stem and dot and ext) or odd:
        return Problem(
            sample.shard,
            where,
            "bad_image_name",
            f"image_name {shown_short(repr(name))} is not a plain relative file name with an extension",
        )
    if any(windows_device(part) for part in name.split("/")):  # CON.png: the image and CON.txt went to the console
        return Problem(
            sample.shard,
            where,
            "bad_image_name",
            f"image_name {shown_short(repr(name))} is a device name on Windows, not a file name",
        )
    if len(name.encode()) > IMAGE_NAME_MAX:  # the record is skipped (or named, on_error fail), not the run lost
        return Problem(
            sample.shard,
            where,
            "bad_image_name",
            f"image_name {shown_short(repr(name))} is {len(name.encode())} bytes, over {IMAGE_NAME_MAX}: "
            "too long a path to write",
        )
    if disk_name(name.split("/")[0]) == MARKER:  # a folder `.t2i-output/` where the output's own mark goes: the
        return Problem(  # mark failed at the end (`dd: cannot write (Is a directory)`), the config already renamed in
            sample.shard,
            where,
            "bad_image_name",
            f"image_name {shown_short(repr(name))} takes {MARKER}, the name of the output folder's own mark",
        )
    why = not_an_image_name(name, IMAGE_EXTENSIONS)  # x.txt: its caption <stem>.txt was written over the image
    return name if why is None else Problem(sample.shard, where, "bad_image_name", f"image_name {why}")


# --- SimpleTuner's DALL-E-3 preset (the files: scripts/lib/simpletuner.py) ---------------------------


def compile_simpletuner(
    shards: list[Path] | Path,
    out_parquet: Path,
    caption_field: str = "short_caption",
    write_txt_dir: Path | None = None,
    on_error: str = "skip",
    batch_rows: int = ROW_GROUP_ROWS,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    data_dir: Path | None = None,
    config: Path | None = None,
) -> dict[str, Any]:
    """DALL-E-3 shards -> the preset's parquet, streamed (tars are never extracted wholesale).

    `data_dir`: the preset's `data/` folder: each image written under its json `image_name` with its
    `<stem>.txt` caption beside it (what `tar xf` + the preset's extract-captions.py make); then
    `config` (a multidatabackend.json, absolute paths) points SimpleTuner at it. `write_txt_dir`: only
    the `<stem>.txt` captions, in a folder of their own. Records without `width` are skipped (the
    preset does so); on_error="fail" raises on the first other bad record. All outputs appear
    together, or none. Returns {"rows_read", "rows_written", "skipped": {reason: n}}.
    """
    if config is not None and data_dir is None:
        raise DataError("a SimpleTuner data-backend config needs --data-dir (where the images and captions go)")
    if isinstance(shards, Path):
        shards = source_files(shards, "*.tar", "tar shard")
    stats: dict[str, Any] = {"rows_read": 0, "rows_written": 0, "skipped": {}}
    # image_name is the identifier: a second record of one name would overwrite the first. Keyed by disk_name,
    # as written: `Cat.png` after `cat.png` is that one file on macOS and Windows, its caption the other's
    # (its folders as `<name>/`: a name written as a file and as a folder failed the write)
    for folder in (data_dir, write_txt_dir):  # now, not as its temp is renamed in: the config would be in place
        if folder is not None:
            check_replaceable(folder)
    with contextlib.ExitStack() as stack:  # parquet, folders and config appear together, or none
        names = stack.enter_context(written_names())
        tmp = stack.enter_context(atomic_path(out_parquet))
        folders = {}
        for key, folder in (("data", data_dir), ("txt", write_txt_dir)):
            if folder is not None:  # entered after the parquet, so replaced before it
                folders[key] = stack.enter_context(atomic_path(folder, is_dir=True))
        with table_writer(tmp, batch_rows) as table:
            for shard in shards:
                for sample in iter_dalle3(Path(shard), max_member_bytes, max_image_pixels):
                    stats["rows_read"] += 1
                    checked = _check_sample(sample, caption_field, names)
                    if isinstance(checked, Problem):
                        if on_error == "fail" and not checked.always_skip:
                            raise DataError(checked.message())
                        stats["skipped"][checked.reason] = stats["skipped"].get(checked.reason, 0) + 1
                        continue
                    caption, filename, width, height = checked
                    for name in (filename, txt_name(filename), *(f"{folder}/" for folder in _folders(filename))):
                        names.setdefault(disk_name(name), name)
                    table.add(width, height, caption, filename)
                    if "data" in folders:
                        assert not isinstance(sample, Problem)  # _check_sample returned it as the Problem
                        _write_beside(folders["data"], filename, sample.image.read(), caption)
                    if "txt" in folders:
                        _write_beside(folders["txt"], filename, None, caption)
        stats["rows_written"] = table.rows
        if config is not None:  # entered last: its temp file is renamed first, the parquet last
            assert data_dir is not None  # checked on entry: config needs data_dir
            data = resolved(data_dir)
            entries = backend_config("dalle3", str(data), str(resolved(out_parquet)), str(data.parent / "cache"))
            stack.enter_context(atomic_path(config)).write_text(
                dumps_json(entries, config, indent=2) + "\n", encoding="utf-8"
            )
        commit_together(stack)
    stats["skipped"] = dict(sorted(stats["skipped"].items()))
    return stats


class WrittenNames:
    """disk_name -> the name as written, for every file and folder a compile wrote: on disk, not in memory (a
    dict of them was 0.8 KB a record, 227 MB at 100,000). SQLite's private temporary database (connect("")) is
    unlinked as it is opened, so no file of it is left by any exit, a signal or a kill included."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        self._run(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE; PRAGMA cache_size=-2048;"
            "CREATE TABLE names (key TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;"
        )

    def _run(self, script: str, *values: str) -> sqlite3.Cursor:
        """One statement (or, without values, a script); SQLite's failure (a full temp folder: it spills there
        past its 2 MiB cache) is one line, not a traceback."""
        try:
            return self._db.execute(script, values) if values else self._db.executescript(script)
        except sqlite3.Error as exc:
            raise DataError(f"the index of written names (SQLite's temporary file) failed: {exc}") from None

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self._run("SELECT name FROM names WHERE key = ?", key).fetchone()
        return default if row is None else row[0]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key: str) -> str:
        if (name := self.get(key)) is None:
            raise KeyError(key)
        return name

    def setdefault(self, key: str, name: str) -> None:
        self._run("INSERT OR IGNORE INTO names VALUES (?, ?)", key, name)

    def close(self) -> None:
        self._db.close()


@contextlib.contextmanager
def written_names() -> Iterator[WrittenNames]:
    names = WrittenNames()
    try:
        yield names
    finally:
        names.close()


DISK_NAME_HINT = "; names that differ only by case or Unicode form are one file on macOS and Windows"


def disk_name(name: str) -> str:
    """The file a name is on a case-insensitive disk that does not tell Unicode forms apart (macOS; Windows
    folds case): `Cat.png`, `cat.png` and `cat.PNG` are one, and so are `café` composed and decomposed."""
    return unicodedata.normalize("NFC", name).lower()


def _check_sample(sample: Dalle3Sample | Problem, caption_field: str, names: WrittenNames):
    """(caption, filename, width, height) or the Problem that skips the record."""
    if isinstance(sample, Problem):
        return sample
    caption = caption_of(sample, caption_field)
    if isinstance(caption, Problem):
        return caption
    if not caption.strip():  # SimpleTuner refuses a parquet whose caption column holds an empty string
        return Problem(
            sample.shard, f"sample {shown_short(repr(sample.key))}", "empty_caption", f"{caption_field} is blank"
        )
    # ingest's rule for a prompt (a NUL, over MAX_PROMPT_BYTES): a caption of 10 MB or holding NUL was written whole
    # into the parquet and the .txt beside its image
    if found := prompt_problem(caption) or prompt_too_long(caption, MAX_PROMPT_BYTES):
        return Problem(
            sample.shard, f"sample {shown_short(repr(sample.key))}", found[0], f"{caption_field}: {found[1]}"
        )
    size = size_of(sample)
    if isinstance(size, Problem):
        return size
    filename = image_name_of(sample)
    if isinstance(filename, Problem):
        return filename
    # x.jpg and x.png share x.txt; an image named x.txt is x.jpg's caption
    taken = [names[key] for key in (disk_name(filename), disk_name(txt_name(filename))) if key in names]
    if taken:
        return Problem(
            sample.shard,
            f"sample {shown_short(repr(sample.key))}",
            "duplicate_image_name",
            f"image_name {shown_short(repr(filename))}: {shown_short(repr(sorted(taken)[0]))} was already written "
            f"(by an earlier record{'' if set(taken) <= {filename, txt_name(filename)} else DISK_NAME_HINT})",
        )
    found = file_folder_clash(filename, names)
    if found is not None:
        clash, kind = found
        return Problem(
            sample.shard,
            f"sample {shown_short(repr(sample.key))}",
            "duplicate_image_name",
            f"image_name {shown_short(repr(filename))}: {shown_short(repr(clash))} is already written as a "
            f"{kind} (by an earlier record); a name cannot be both",
        )
    return (caption, filename, *size)


def file_folder_clash(filename: str, names: WrittenNames) -> tuple[str, str] | None:
    """(the name, "file" or "folder" as it was written) that would be both a file and a folder if `filename`
    (and its caption beside it) were written after `names` (disk_name -> files, and folders as `<name>/`):
    `a.png/x.png` then `a.png`, `q.png` (so `q.txt`) then `q.txt/z.png`; None if there is none."""
    for name in (filename, txt_name(filename)):
        if (folder := names.get(disk_name(f"{name}/"))) is not None:
            return folder.removesuffix("/"), "folder"
    return next(((names[key], "file") for key in map(disk_name, _folders(filename)) if key in names), None)


def _folders(filename: str) -> list[str]:
    """The folders `filename` is written under (`a/b/c.png`: `a`, `a/b`)."""
    parts = filename.split("/")[:-1]
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


def _write_beside(folder: Path, filename: str, image: bytes | None, caption: str) -> None:
    target = folder / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if image is not None:
        target.write_bytes(image)
    (folder / txt_name(filename)).write_text(caption, encoding="utf-8")
