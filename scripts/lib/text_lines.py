"""The lines of a text file that ingest (`kind: text`), clean-text, dedup-text and synthesize's example files
read: each capped as ingest caps a `kind: text` line, read in bounded pieces, so a file without a newline
(a sparse 8 GB file, /dev/zero's stream) is one line naming the file, not every byte held in memory.

A line ends at "\\r\\n", "\\r" or "\\n" (Python's universal newlines: Windows, old Mac and Unix files give
the same lines), never at U+2028, U+2029, U+0085 or the other separators `str.splitlines` knows: those
are characters inside a prompt.
"""

from __future__ import annotations

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


UTF8_BOM = b"\xef\xbb\xbf"


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    """`f`'s bytes, READ_BYTES at a time, without a leading UTF-8 byte-order mark: Notepad and Excel's
    "UTF-8" write one, and it stayed an invisible U+FEFF at the start of the first prompt (no exact
    duplicate of the same prompt without it)."""
    head = b""
    while len(head) < len(UTF8_BOM) and (chunk := f.read(READ_BYTES)):
        head += chunk  # a pipe may hand over the mark a byte at a time
    yield head.removeprefix(UTF8_BOM)
    while chunk := f.read(READ_BYTES):
        yield chunk


def raw_lines(f: BinaryIO, max_bytes: int) -> Iterator[bytes | None]:
    """The lines of binary file `f` (a leading byte-order mark left out: _chunks), each with its end
    ("\\r\\n", "\\r", "\\n"; the last may have none); None for a line of more than `max_bytes` bytes,
    yielded as soon as that many came (its rest is read past in pieces, never held)."""
    carry, overlong = b"", False  # overlong: in a line already reported, up to its end
    for chunk in _chunks(f):
        if not chunk:
            continue
        lines = (carry + chunk).splitlines(keepends=True)  # bytes split at \r\n, \r and \n only
        # the last piece goes on in the next read: no end yet, or a "\r" whose "\n" may come next
        carry = b"" if lines[-1].endswith(b"\n") else lines.pop()
        for line in lines:
            if overlong:
                overlong = False
            elif len(line.rstrip(b"\r\n")) > max_bytes:
                yield None
            else:
                yield line
        if len(carry.removesuffix(b"\r")) > max_bytes:
            if not overlong:
                yield None
            overlong, carry = True, carry[-1:]  # its last byte: a "\r" may end it
    if carry and not overlong:
        yield None if len(carry.removesuffix(b"\r")) > max_bytes else carry


def line_batches(f: BinaryIO, where: Path | str, max_bytes: int = MAX_LINE_BYTES) -> Iterator[list[bytes]]:
    """The lines of binary file `f` (raw_lines: each with its end), about BATCH_BYTES at a time; a line
    longer than `max_bytes` is a DataError naming `where` and the line, raised once that many bytes came
    without a line end (neither held nor read past)."""
    batch: list[bytes] = []
    size = 0
    for number, raw in enumerate(raw_lines(f, max_bytes), start=1):
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
