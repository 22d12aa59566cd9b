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
    """Every path under root, links not followed: a file's bytes, a link's target, None for a folder, "fifo"
    for a FIFO (its read would block)."""
    found: dict[str, object] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_fifo():
                found[rel] = "fifo"
            else:
                found[rel] = None if path.is_dir() else path.read_bytes()
    return found


def bytes_copy(src: Path, dest: Path) -> Path:
    """`dest`, a copy of the tree at `src` by bytes alone: no mode, time or extended attribute (shutil's copies
    take a file's xattrs, and with them an output's mark of ours: a clone's copy has none)."""
    for path in sorted(src.rglob("*")):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dest
