"""The lines of a text file that ingest (`kind: text`), clean-text, dedup-text and synthesize's example files
read: each capped as ingest caps a `kind: text` line, read in bounded pieces, so a file without a newline
(a sparse 8 GB file, /dev/zero's stream) is one line naming the file, not every byte held in memory.

A line ends at "\\r\\n", "\\r" or "\\n" (Python's universal newlines: Windows, old Mac and Unix files give
the same lines), never at U+2028, U+2029, U+0085 or the other separators `str.splitlines` knows: those
are characters inside a prompt.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from scripts.lib.errors import DataError, shown
from scripts.lib.io import regular_file
from scripts.lib.params.sources import MAX_PROMPT_BYTES

MAX_LINE_BYTES = MAX_PROMPT_BYTES  # what ingest refuses in a text line by default
BATCH_BYTES = 1 << 20  # one decode and one write per ~1 MB of lines


def prompt_problem(prompt: str) -> tuple[str, str] | None:
    """(reason, detail) when ingest refuses `prompt`, whatever its source (record_problem): a NUL byte, or text
    that is not UTF-8 (the surrogates a reader keeps of invalid bytes); else None."""
    if "\x00" in prompt:
        return "nul_byte", "prompt contains a NUL byte"
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        return "not_utf8", "prompt is not valid UTF-8"
    return None


def prompt_too_long(prompt: str, max_bytes: int) -> tuple[str, str] | None:
    """("prompt_too_long", detail) when `prompt` holds more than `max_bytes` bytes of UTF-8 (sources.S.max_prompt_bytes),
    whatever its kind. Only a text line and a WebDataset `.txt` were capped: a DALL-E-3 json caption, a DiffusionDB
    or Gustavosta parquet prompt of 60 MB (a parquet cell holds up to 2 GB) went into the table whole, and on into
    clean's regular expressions and dedup's shingles."""
    if len(prompt) * 4 <= max_bytes:  # UTF-8 is at most 4 bytes a character: most prompts are not encoded here
        return None
    size = len(prompt.encode("utf-8", "surrogatepass"))
    if size <= max_bytes:
        return None
    return "prompt_too_long", f"prompt is {size:,} bytes, over max_prompt_bytes ({max_bytes:,})"


def line_problem(line: str, max_bytes: int = MAX_LINE_BYTES) -> tuple[str, str] | None:
    """(reason, detail) when ingest refuses `line` (without its "\\n") as a `kind: text` prompt at its default
    cap: what prompt_problem refuses, or more bytes than the reader takes (readers/text.py iter_lines); else
    None. synthesize@N drops such a reply line: its prompts.txt is such a source."""
    found = prompt_problem(line)
    if found is None and len(line.encode("utf-8")) > max_bytes:
        return "line_too_long", f"line longer than {max_bytes} bytes"
    return found


def text_input(path: Path | str) -> Path:
    """`path` when it is a regular file or a FIFO (`clean-text <(zcat x.gz) out.jsonl`: read as it streams,
    Ctrl-C stops a wait); missing, a folder, a socket or a device (/dev/zero never ends) is one line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{shown(path)}: input not found")
    return regular_file(path, pipes=True)


READ_BYTES = 1 << 20
LINE_END = re.compile("\r\n|\r|\n")
# A byte order mark opens a file: UTF-8's is no character of the text (Notepad and Excel's "CSV UTF-8" write
# one; kept, it opened the first prompt and hid its "- " markup); the others' text is read as NULs (UTF-32's
# before UTF-16's: FF FE 00 00 starts with FF FE). No UTF-8 text starts with one of them.
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def without_bom(head: bytes, where: Path | str) -> bytes:
    """`head` (a file's first 4 bytes or more, or the whole file) without a UTF-8 byte order mark; a UTF-16 or
    UTF-32 one is a DataError naming `where`: every line of it is a NUL byte, not a prompt."""
    for mark, encoding in BYTE_ORDER_MARKS:
        if head.startswith(mark):
            if encoding != "UTF-8":
                raise DataError(
                    f"{shown(where)}: {encoding} text (it starts with its byte order mark); save it as UTF-8"
                )
            return head[len(mark) :]
    return head


def without_line_end(text: str) -> str:
    """`text` less one final line end ("\\r\\n", "\\r" or "\\n"), as raw_lines ends a line."""
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\r", "\n")) else text


def raw_lines(f: BinaryIO, max_bytes: int, where: Path | str = "") -> Iterator[bytes | None]:
    """The lines of binary file `f`, each with its end ("\\r\\n", "\\r", "\\n"; the last may have none);
    None for a line of more than `max_bytes` bytes, yielded as soon as that many came (its rest is read
    past in pieces, never held). A UTF-8 byte order mark is read past, opening the file or any line (a file joined
    after another, `cat a.txt b.txt`: kept, it opened that line's prompt invisibly and hid its "- " markup); a
    UTF-16 or UTF-32 one is a DataError naming `where` (without_bom)."""
    carry, overlong = b"", False  # overlong: in a line already reported, up to its end
    head = f.read(READ_BYTES)
    while len(head) < 4 and (more := f.read(4 - len(head))):  # a pipe may give its first bytes one at a time
        head += more
    first = without_bom(head, where)
    while chunk := first or f.read(READ_BYTES):
        first = b""
        lines = (carry + chunk).splitlines(keepends=True)  # bytes split at \r\n, \r and \n only
        # the last piece goes on in the next read: no end yet, or a "\r" whose "\n" may come next
        carry = b"" if lines[-1].endswith(b"\n") else lines.pop()
        for line in lines:
            if overlong:
                overlong = False
            elif len(line.rstrip(b"\r\n")) > max_bytes:
                yield None
            else:
                yield line.removeprefix(codecs.BOM_UTF8)
        if len(carry.removesuffix(b"\r")) > max_bytes:
            if not overlong:
                yield None
            overlong, carry = True, carry[-1:]  # its last byte: a "\r" may end it
    if carry and not overlong:
        yield None if len(carry.removesuffix(b"\r")) > max_bytes else carry.removeprefix(codecs.BOM_UTF8)


def line_batches(f: BinaryIO, where: Path | str, max_bytes: int = MAX_LINE_BYTES) -> Iterator[list[bytes]]:
    """The lines of binary file `f` (raw_lines: each with its end), about BATCH_BYTES at a time; a line
    longer than `max_bytes` is a DataError naming `where` and the line, raised once that many bytes came
    without a line end (neither held nor read past)."""
    batch: list[bytes] = []
    size = 0
    for number, raw in enumerate(raw_lines(f, max_bytes, where), start=1):
        if raw is None:
            raise DataError(f"{shown(where)}: line {number}: line longer than {max_bytes} bytes")
        batch.append(raw)
        size += len(raw)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def split_lines(text: str) -> list[str]:
    """`text` split at "\\r\\n", "\\r" and "\\n" only (not str.splitlines: U+2028 and the like are
    characters of a line); a final line end gives a last "" as str.split does."""
    return LINE_END.split(text) if "\r" in text else text.split("\n")


def decode_lines(batch: list[bytes], where: Path | str, line_no: int) -> list[str]:
    """The batch's lines as text, their ends gone (split as raw_lines split the file); invalid UTF-8 is
    an error naming its line (`line_no`: the lines before the batch)."""
    try:
        lines = split_lines(b"".join(batch).decode("utf-8"))
    except UnicodeDecodeError:
        for offset, raw in enumerate(batch, start=line_no + 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{shown(where)}: line {offset}: not valid UTF-8") from None
        raise
    if lines[-1] == "":
        lines.pop()  # after the batch's last line end
    return lines
