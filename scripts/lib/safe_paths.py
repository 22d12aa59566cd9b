"""Paths read from data (a manifest's `file`, rows.parquet's `image`), checked where they are opened.

A path that comes from a table or a JSON line is resolved (`..` and every link on the way) and must
stay inside the folder it is relative to, and name a regular file: `../../../etc/passwd`, an absolute
path, or a link in the folder pointing out of it is one line naming the table and row.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scripts.lib.errors import DataError
from scripts.lib.io import shown


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confined_file(root: Path | str, name: str, where: str) -> Path:
    """`root / name` when it stays inside `root` after every link and is a regular file; otherwise a
    DataError naming `where` (the table and row the name came from)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise DataError(f"{where}: file {shown(repr(name))} is not a path")
    path = Path(root) / name
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.isabs(name) or not inside(real, real_root):
        raise DataError(f"{where}: file {shown(repr(name))} leaves its folder {shown(root)}")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise DataError(f"{where}: file {shown(repr(name))} not found in {shown(root)}") from None
    except OSError as exc:
        raise DataError(f"{where}: file {shown(repr(name))}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{where}: file {shown(repr(name))} is not a regular file")
    return path


def own_regular_file(path: Path, root: Path) -> Path:
    """`path` (an entry of the folder `root`) when it is a regular file with one name inside `root`;
    otherwise a DataError. A symbolic link or a hard link could send any file, a secrets file
    included, to a remote API (synthesize's examples folder followed `notes.txt -> /tmp/secret.env`)."""
    try:
        found = os.lstat(path)
    except OSError as exc:
        raise DataError(f"{shown(path)}: cannot read ({exc.strerror})") from None
    if stat.S_ISLNK(found.st_mode):
        raise DataError(f"{shown(path)}: a symbolic link; files in this folder are read only as regular files")
    if not stat.S_ISREG(found.st_mode):
        raise DataError(f"{shown(path)}: not a regular file")
    if found.st_nlink > 1:
        raise DataError(f"{shown(path)}: has another hard link; files in this folder are read only with one name")
    if not inside(os.path.realpath(path), os.path.realpath(root)):
        raise DataError(f"{shown(path)}: leaves its folder {shown(root)}")
    return path
