"""kind: text - one prompt per line (ChatGPT/GPT-4 prompt lists); a leading "- " is list markup.

Lines end at "\\r\\n", "\\r" or "\\n" (scripts/lib/text_lines.py: raw_lines, as clean-text and dedup-text
read them), never at U+2028 or the like: those stay inside the prompt. A UTF-8 byte order mark opening a file
is read past; a UTF-16 or UTF-32 file is one line naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scripts.lib.readers.base import Problem, Record, SourceConfig, decode, source_files
from scripts.lib.text_lines import raw_lines


def read_text(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    for file in source_files(Path(cfg.path), "*.txt", "text", cfg.follow_symlinks):
        with file.open("rb") as f:
            for number, raw in enumerate(raw_lines(f, cfg.max_prompt_bytes, file), start=1):
                if raw is None:
                    yield Problem(
                        file, f"line {number}", "line_too_long", f"line longer than {cfg.max_prompt_bytes} bytes"
                    )
                    continue
                line = decode(raw.rstrip(b"\r\n"))  # its end only: a line holds no "\r" nor "\n"
                if not line.strip():
                    yield Problem(file, f"line {number}", "blank_line", "blank line", always_skip=True)
                    continue
                yield Record(
                    key=f"{file.name}:{number}", prompt=line.removeprefix("- "), file=file, where=f"line {number}"
                )
