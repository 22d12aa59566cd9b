"""A folder's files as {relative path: digest}: byte-for-byte comparisons whose failure message stays short;
and a folder's whole tree, links and empty folders included (`tree`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_digests(root: Path) -> dict[str, str]:
    """Every file under root (sorted, POSIX paths) to its size and sha256: equal iff the bytes are equal."""
    return {
        p.relative_to(root).as_posix(): f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def tree(root: Path) -> dict[str, object]:
    """Every path under root, links not followed: a file's bytes, a link's target, None for a folder."""
    found: dict[str, object] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            rel = path.relative_to(root).as_posix()
            found[rel] = (
                ("link", os.readlink(path)) if path.is_symlink() else None if path.is_dir() else path.read_bytes()
            )
    return found
