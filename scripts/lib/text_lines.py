"""The lines of a text file that clean-text and dedup-text read: each capped as ingest caps a `kind: text`
line, read in bounded pieces, so a file without a newline (a sparse 8 GB file, /dev/zero's stream) is one
line naming the file, not every byte held in memory until the kernel kills the command."""

from __future__ import annotations

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


def line_batches(f: BinaryIO, where: Path | str, max_bytes: int = MAX_LINE_BYTES) -> Iterator[list[bytes]]:
    """The lines of binary file `f` (each with its "\\n"), about BATCH_BYTES at a time; a line longer than
    `max_bytes` is a DataError naming `where` and the line, raised once that many bytes came without a
    newline (neither held nor read past)."""
    batch: list[bytes] = []
    size = number = 0
    while raw := f.readline(max_bytes + 1):
        number += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise DataError(f"{shown(where)}: line {number}: line longer than {max_bytes} bytes")
        batch.append(raw)
        size += len(raw)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def decode_lines(batch: list[bytes], where: Path | str, line_no: int) -> list[str]:
    """The batch's lines as text, their "\\n" gone (split at "\\n" only, like the file's lines); invalid
    UTF-8 is an error naming its line (`line_no`: the lines before the batch)."""
    try:
        lines = b"".join(batch).decode("utf-8").split("\n")
    except UnicodeDecodeError:
        for offset, raw in enumerate(batch, start=line_no + 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{shown(where)}: line {offset}: not valid UTF-8") from None
        raise
    if lines[-1] == "":
        lines.pop()  # after the batch's last "\n"
    return lines
