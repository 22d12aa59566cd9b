"""kind: text - one prompt per line (ChatGPT/GPT-4 prompt lists); a leading "- " is list markup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scripts.lib.readers.base import Problem, Record, SourceConfig, decode, source_files


def read_text(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    for file in source_files(Path(cfg.path), "*.txt", "text", cfg.follow_symlinks):
        with file.open("rb") as f:
            for number, raw in enumerate(iter_lines(f, cfg.max_prompt_bytes), start=1):
                if raw is None:
                    yield Problem(
                        file, f"line {number}", "line_too_long", f"line longer than {cfg.max_prompt_bytes} bytes"
                    )
                    continue
                line = decode(raw.rstrip(b"\n").removesuffix(b"\r"))
                if not line.strip():
                    yield Problem(file, f"line {number}", "blank_line", "blank line", always_skip=True)
                    continue
                yield Record(
                    key=f"{file.name}:{number}", prompt=line.removeprefix("- "), file=file, where=f"line {number}"
                )


def iter_lines(f, max_bytes: int) -> Iterator[bytes | None]:
    """Lines of a binary file; None for a line over `max_bytes` (read past in chunks, never held)."""
    while True:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(1 << 20)
            yield None
            continue
        yield raw
