"""A folder's files as {relative path: digest}: byte-for-byte comparisons whose failure message stays short."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digests(root: Path) -> dict[str, str]:
    """Every file under root (sorted, POSIX paths) to its size and sha256: equal iff the bytes are equal."""
    return {
        p.relative_to(root).as_posix(): f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }
