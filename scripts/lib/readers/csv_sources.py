"""CSV sources: kind openprompts (krea `prompt,raw_data`) and kind kaggle_sd2 (`prompt` + {row}.png)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from scripts.lib.archive import REF_SEPARATOR, UnsafeArchive
from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.nesting import loads_json
from scripts.lib.pixels import image_head, stream_reader
from scripts.lib.readers.base import (
    LINK_HINT,
    NAME_SHOWN,
    Problem,
    Record,
    SourceConfig,
    check_confined,
    check_distinct,
    head_pixels,
    native_name,
    require_columns,
    source_files,
)
from scripts.lib.safe_paths import open_regular, open_within
from scripts.lib.text_lines import without_bom

# raw_discord_data fields kept in meta (the generation settings of the original image)
OPENPROMPTS_META = ["seed", "width", "height", "cfg_scale", "num_step", "image_uri", "timestamp"]


# U+FEFF opening a record: the byte order mark of a CSV joined after the first (`cat a.csv b.csv`), read past as
# utf-8-sig reads the first file's; kept, it opened that row's prompt (or its header's first name) invisibly
BOM = "\ufeff"
MAX_CSV_LINE = 4 * 1024 * 1024  # characters: a record of many fields of the csv module's 128 Ki each fits


class RecordTooLong(Exception):
    """A record with a line past MAX_CSV_LINE characters, read past (a bounded chunk at a time) to its end."""

    def __init__(self, line: int):
        super().__init__(line)
        self.line = line  # where its long line starts


class _LastLine:
    """The lines the csv reader parses, each read at most MAX_CSV_LINE characters at a time, remembering the last
    one it took, how many it took (`count`: the reader's line_num, and the lines read past a malformed record) and
    the quotes of the record it is in (`quotes`, set to 0 as a record starts). A line past the cap (a 10 GB file
    without a newline, a 5 MB field) is never held: read past to its record's end, it is RecordTooLong."""

    def __init__(self, f, file: Path):
        self.f, self.file, self.last, self.count, self.quotes = f, file, "", 0, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.f.readline(MAX_CSV_LINE + 1)
        if not line:
            raise StopIteration
        self.count += 1
        if self.quotes % 2 == 0:  # a record starts here: a byte order mark opening it is a joined file's (cat a b)
            line = line.removeprefix(BOM)
        self.quotes += line.count('"')
        if len(line) > MAX_CSV_LINE and not line.endswith(("\n", "\r")):
            start = self.count
            self._read_past_record()
            raise RecordTooLong(start)
        self.last = line
        return line

    def _read_past_record(self) -> None:
        """Read on from inside an overlong line to the end of the line where the record's quotes close (a quoted
        field's newlines are its text), or to the file's end; MAX_CSV_LINE characters at most held at once."""
        ended = False
        while chunk := self.f.readline(MAX_CSV_LINE + 1):
            self.count += ended  # the chunk after a line end starts the next line
            self.quotes += chunk.count('"')
            ended = chunk.endswith(("\n", "\r"))
            if ended and self.quotes % 2 == 0:
                return

    def past_record(self) -> bool:
        """After a malformed record: read on to the line where its quotes close (an odd count leaves a quoted
        field open, whose next lines are its text, never records: the csv module goes on at the next line, and
        a field's lines were read as rows); False when the file ends first."""
        while self.quotes % 2:
            try:
                next(self)
            except StopIteration:
                return False
            except RecordTooLong:  # read past to where the quotes close, or the file's end
                return self.quotes % 2 == 0
        return True


def iter_csv(
    file: Path, required: list[str], skip_blank: bool = False
) -> Iterator[tuple[int, dict[str, str] | Problem]]:
    """(data row number, {column: value}) per CSV record, or a Problem for a malformed one.

    `skip_blank`: a line of nothing but spaces and tabs (outside quotes) is no row and takes no number, as
    pandas.read_csv numbers rows (kaggle_sd2, whose row number names its image); it is counted as
    "blank_line". Without it an empty line is a "bad_row" and a blank one a row, as they always were.
    """
    with file.open("rb") as head:  # UTF-16 or UTF-32 is one line naming the file
        without_bom(head.read(4), file)
    # utf-8-sig: a UTF-8 byte order mark is read past (Excel's "CSV UTF-8"), not taken into the first column's name
    with file.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        lines = _LastLine(f, file)
        reader = csv.reader(lines, strict=True)
        blank = []

        def is_blank(fields: list[str], line_before: int) -> bool:
            # the record is one physical line of spaces and tabs: not '"  "', nor a quoted field over lines
            spaces = lines.count == line_before + 1 and not lines.last.strip(" \t\r\n")
            return skip_blank and (not fields or (len(fields) == 1 and spaces))

        try:
            while True:
                line_before, lines.quotes = lines.count, 0
                header = next(reader)
                if not is_blank(header, line_before):
                    break
                blank.append(lines.count)  # before the header too, as pandas skips them
        except (StopIteration, csv.Error):
            header = []
        except RecordTooLong as exc:
            raise DataError(
                f"{shown(file)}: line {exc.line}: longer than {MAX_CSV_LINE} characters (not a CSV file?)"
            ) from None
        require_columns(file, header, required, echo=False)
        for line in blank:
            yield 0, Problem(file, f"line {line}", "blank_line", "blank line", always_skip=True)
        number = 0
        while True:
            line_before, lines.quotes = lines.count, 0
            try:
                fields = next(reader)
            except StopIteration:
                return
            except RecordTooLong:  # skipped under on_error: skip, the rows after it read
                number += 1
                where = f"row {number} (line {line_before + 1})"  # where the record starts
                yield number, Problem(file, where, "record_too_long", _too_long(lines))
                continue
            except csv.Error as exc:
                number, at = number + 1, lines.count
                ends = (
                    "" if lines.quotes % 2 == 0 else f"; its quoted field {_closes(lines.past_record(), lines.count)}"
                )
                yield (
                    number,
                    Problem(file, f"row {number} (line {at})", "bad_csv", f"malformed CSV ({exc}){ends}"),
                )
                continue
            if is_blank(fields, line_before):
                yield number, Problem(file, f"line {lines.count}", "blank_line", "blank line", always_skip=True)
                continue
            number += 1
            if len(fields) != len(header):
                yield (
                    number,
                    Problem(
                        file,
                        f"row {number} (line {lines.count})",
                        "bad_row",
                        f"expected {len(header)} fields, got {len(fields)}",
                    ),
                )
                continue
            yield number, dict(zip(header, fields))


def _too_long(lines: _LastLine) -> str:
    ends = f"read past to line {lines.count}" if lines.quotes % 2 == 0 else "its quoted field never closes"
    return f"a line longer than {MAX_CSV_LINE:,} characters ({ends})"


def _closes(closed: bool, line: int) -> str:
    """Where a malformed record's open quoted field ends: its lines are that record's, read past as one."""
    return (
        f"closes on line {line}: read past as this record"
        if closed
        else "never closes: the rest of the file is this record"
    )


def read_openprompts(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    for file in source_files(Path(cfg.path), "*.csv", "CSV", cfg.follow_symlinks):
        for number, row in iter_csv(file, ["prompt", "raw_data"]):
            if isinstance(row, Problem):
                yield row
                continue
            try:
                raw = loads_json(row["raw_data"], non_finite="null")  # its NaN is null (round 13a)
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                discord = raw.get("raw_discord_data") or {}
                if not isinstance(discord, dict):
                    raise ValueError("raw_discord_data is not an object")
            except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
                yield Problem(
                    file, f"row {number}", "bad_json", f"malformed raw_data JSON ({str(exc).splitlines()[0]})"
                )
                continue
            meta = {name: discord.get(name) for name in OPENPROMPTS_META}
            yield Record(key=f"{file.name}:{number}", prompt=row["prompt"], meta=meta, file=file, where=f"row {number}")


def read_kaggle_sd2(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    """gpt_generated_prompts.csv / hardcoded_prompts.csv (column `prompt`), image {row_index}.png beside."""
    root = Path(cfg.path)
    for file in kaggle_csv_files(cfg):
        name = native_name(file, root)
        for number, row in iter_csv(file, ["prompt"], skip_blank=True):  # row N names image N-1.png
            if isinstance(row, Problem):
                yield row
                continue
            image = file.parent / f"{number - 1}.png"
            sized = image_file_size(image, cfg.max_member_bytes, cfg.max_image_pixels, cfg.follow_symlinks)
            if isinstance(sized, str):
                reason, _, detail = sized.partition(":")
                yield Problem(file, f"row {number}", reason, detail)
                continue
            yield Record(
                key=f"{name}:{number}",
                prompt=row["prompt"],
                image=image.as_posix(),
                width=sized[0],
                height=sized[1],
                meta={"row_index": number - 1},
                file=file,
                where=f"row {number}",
            )


def kaggle_csv_files(cfg: SourceConfig) -> list[Path]:
    """The source's CSV files (`csv_files`, else every *.csv under `path`), one a folder: row N of each
    CSV in a folder would take the same N.png, so a second one there is refused, not guessed at."""
    root = Path(cfg.path)
    if not cfg.csv_files:
        files = source_files(root, "*.csv", "CSV", cfg.follow_symlinks)
    else:
        files = [check_confined(root / name, root, cfg.follow_symlinks) for name in cfg.csv_files]
        names = [native_name(file, root) for file in files]
        check_distinct(list(zip(names, names)), root, "sources.<name>.csv_files: file")
        for file in files:
            if not file.is_file():
                raise DataError(f"{shown(file)}: not found (sources.<name>.csv_files)")
    first_in: dict[str, Path] = {}
    for file in files:
        other = first_in.setdefault(os.path.normpath(file.parent), file)
        if other is not file:
            raise DataError(
                f"{shown(file.parent)}: holds {shown(other.name)} and {shown(file.name)}, whose rows would take the"
                " same {row_index}.png images: keep one CSV a folder (sources.<name>.csv_files)"
            )
    return files


def image_file_size(
    image: Path, max_bytes: int, max_pixels: int, follow_symlinks: bool = False, root: Path | None = None
) -> tuple[int, int] | str:
    """(width, height) of a plain image file within the caps, or "reason:detail". `root`: the source's folder the
    image must lie in, after every link, unless `follow_symlinks` (the image's folder when None)."""
    try:
        return _image_file_size(image, max_bytes, max_pixels, follow_symlinks, root or image.parent)
    except OSError as exc:  # a name from the data past NAME_MAX or PATH_MAX: the row's, never the whole run's
        return f"missing_image:image {shown_short(str(image), NAME_SHOWN)}: {exc.strerror}"


def _image_file_size(
    image: Path, max_bytes: int, max_pixels: int, follow_symlinks: bool, root: Path
) -> tuple[int, int] | str:
    if REF_SEPARATOR in image.as_posix():  # every later stage would read it as an archive member
        return f"unsafe_path:image {image}: a folder name ending in '!' reads as an archive ('!/' marks a member)"
    if image.is_symlink() and not follow_symlinks:
        return f"unsafe_path:image {image} is a symbolic link; {LINK_HINT}"
    if not image.is_file():
        return f"missing_image:image {image} not found (or not a regular file)"
    try:
        file = _open_image(image, follow_symlinks, root)
    except FileNotFoundError:
        return f"missing_image:image {image} not found (removed while it was read)"
    except DataError as exc:  # replaced since the look above (a link out, a FIFO): the open's own check
        return f"unsafe_path:image {shown_short(str(exc), 2 * NAME_SHOWN)}"
    with file:
        if os.fstat(file.fileno()).st_size > max_bytes:  # of the file opened, never of the name again
            return f"member_too_large:image {image} is larger than {max_bytes} bytes"
        try:
            return head_pixels(lambda n: image_head(stream_reader(file), n), str(image), max_pixels)
        except UnsafeArchive as exc:
            return f"{exc.reason}:{exc}"


def _open_image(image: Path, follow_symlinks: bool, root: Path) -> BinaryIO:
    """The image opened ONCE, checked on its descriptor: a regular file (never waited on), in `root` by what the
    descriptor names, no link unless `follow_symlinks`. Its name was looked at, then opened by name again: a
    link out or a FIFO put there in between was read (its header) or hung the run."""
    if follow_symlinks:  # the source's params let links lead anywhere
        return open_regular(image)
    return open_within(image, root, follow=False)
