"""Reading what a command is given beside its table: the kind of a path (a FIFO blocks an open, /dev/zero never
ends), and side files (params.yaml, a rule set, a plan, a manifest, a lock) read whole only when regular and
under a cap. scripts/lib/io.py re-exports these for the stages that read and write. And what tells a file's content
now from another (device, inode, size, mtime: file_state), so a stage refuses output made from a file that changed
while it was read: dedup's input since round 18, ingest's source files since round 45b (a file appended to or
rewritten during the read was taken as whatever part the reader caught, at exit 0, and dvc.lock then held the md5
of the file as it ended up).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import weakref
from collections.abc import Callable
from pathlib import Path, PosixPath
from typing import BinaryIO

from scripts.lib.errors import DataError, shown


def file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for its one line."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def check_folder_or_file(path: Path, expected: str) -> None:
    """A DataError unless `path`, which is there, is a folder or a regular file after links: a FIFO or a device
    (/dev/zero) is named as what it is, then `expected` ("a file (sources.S.path)", "a parquet file")."""
    mode = path.stat().st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise DataError(f"{shown(path)}: is {file_kind(mode)}, not a folder or {expected}")


def regular_file(path: Path | str, pipes: bool = False) -> Path:
    """`path` when it is a regular file after links (or a FIFO, with `pipes`: a command that streams its
    input), checked before anything opens it: opening a FIFO blocks until a writer comes (the command
    hung), and a device such as /dev/zero never ends. FileNotFoundError is the caller's to name."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or (pipes and stat.S_ISFIFO(mode))):
        raise DataError(f"{shown(path)}: is {file_kind(mode)}, not a regular file; refusing to read it")
    return Path(path)


class TablePath(PosixPath):
    """A table's path checked by name, with how it must be opened (`opener`): tables.py's readers open it once
    that way and read that file, never the name again (a link swapped in after the check was followed). A path
    made from it (`.parent`, `/ x`) is a plain path: its `opener` is None."""

    opener: Callable[[], BinaryIO] | None = None


def opened_once(path: Path | str, opener: Callable[[], BinaryIO]) -> TablePath:
    """`path` as a TablePath that tables.py's readers open by `opener` (which checks what it opened)."""
    table = TablePath(path)
    table.opener = opener
    return table


def open_regular(
    path: Path | str, *, follow: bool = True, one_link: bool = False, links_ok: Callable[[Path], bool] | None = None
) -> BinaryIO:
    """`path` opened for reading (binary) when it is a regular file; otherwise a DataError.

    The open never waits (O_NONBLOCK: a FIFO blocked until a writer came) and, unless `follow`, does not
    follow a link (O_NOFOLLOW: a link to /dev/zero or to a file elsewhere); what was opened is checked
    again (fstat), so a FIFO or link put there since the first look is refused too. `one_link`: a file
    with another hard link is refused too, unless `links_ok(path)` (DVC's cache.type hardlink)."""
    found = os.stat(path) if follow else os.lstat(path)  # FileNotFoundError is the caller's to name
    _check_regular(path, found.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link made since the lstat
            raise DataError(f"{shown(path)}: a symbolic link; refusing to read through it") from None
        raise
    try:
        opened = os.fstat(fd)  # before fdopen, which refuses a folder put there since in its own words
        _check_regular(path, opened.st_mode)
        if one_link and shares_a_name(opened, path, links_ok):
            raise DataError(f"{shown(path)}: has another hard link; refusing to read a file shared with another name")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def shares_a_name(opened: os.stat_result, path: Path | str, links_ok: Callable[[Path], bool] | None) -> bool:
    """Whether the opened file (`opened`: its fstat) has another hard link, which may be anywhere, outside the
    folder it was named in included; `links_ok(path)` excuses one (DVC's cache.type hardlink checkout)."""
    return opened.st_nlink > 1 and not (links_ok is not None and links_ok(Path(path)))


def _check_regular(path: Path | str, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise DataError(f"{shown(path)}: a symbolic link; refusing to read through it")
    if not stat.S_ISREG(mode):
        raise DataError(f"{shown(path)}: is {file_kind(mode)}, not a regular file; refusing to read it")


def held_open(path: Path | str, first_open: Callable[[], BinaryIO]) -> TablePath:
    """`path` as a TablePath whose every reader reads the one file `first_open` opened (and checked) for the
    first: a later open is of that file again (/proc/self/fd), never of the name. A stage reads its input
    more than once (split: its ids, then its rows; release: the composed ids, then the rows streamed), and
    a file renamed over the name between two reads mixed two tables in one output. A later open that finds
    the file changed since (its size or time: written in place) is one line. Without /proc the name is
    opened again and must still be that file."""
    table = TablePath(path)
    held: list[tuple[int, os.stat_result]] = []

    def opener() -> BinaryIO:
        if not held:
            file = first_open()
            fd = os.dup(file.fileno())
            held.append((fd, os.fstat(fd)))
            weakref.finalize(table, os.close, fd)
            return file
        return _opened_again(*held[0], path)

    table.opener = opener
    return table


def _opened_again(fd: int, first: os.stat_result, path: Path | str) -> BinaryIO:
    try:
        again = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no /proc: the name, proved below to be the same file
        again = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    now = os.fstat(again)
    if not (os.path.samestat(now, first) and (now.st_size, now.st_mtime_ns) == (first.st_size, first.st_mtime_ns)):
        os.close(again)
        raise DataError(
            f"{shown(path)}: replaced or changed while this command read it; refusing to mix two versions of it"
        )
    return os.fdopen(again, "rb")


MAX_CONFIG_BYTES = 64 << 20  # no params.yaml, rule set or plan comes near: a 3 GB file was read whole


def config_text(path: Path | str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a file that configures a command (params.yaml, a rule set, a `--recipe` plan): bounded_bytes,
    newlines read as open() reads them (universal). UnicodeDecodeError is the caller's."""
    return io.TextIOWrapper(io.BytesIO(bounded_bytes(path, max_bytes)), encoding="utf-8").read()


def bounded_bytes(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of a side file read whole (a config, a manifest, a lock), only when it is a regular file
    (regular_file) of at most `max_bytes`, else one line naming the file and the cap. The open does not wait
    (O_NONBLOCK) and the opened file is checked again: a FIFO put there since the check is refused too."""
    regular_file(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise DataError(f"{shown(path)}: is {file_kind(opened.st_mode)}, not a regular file; refusing to read it")
        # its size (+1), not the cap: read(cap + 1) allocates the whole cap first, 64 MiB for a 1 KB rule set,
        # a MemoryError under a memory limit (`ulimit -v`); one that grew since fstat is read on to the cap
        data = f.read(opened.st_size + 1) if opened.st_size <= max_bytes else b""
        if len(data) > opened.st_size:
            data += f.read(max_bytes + 1 - len(data))
        if opened.st_size > max_bytes or len(data) > max_bytes:
            raise DataError(f"{shown(path)}: larger than {max_bytes} bytes; refusing to read it")
    return data


def present_file(path: Path | str, where: str | None = None, *, dangling_absent: bool = False) -> bool:
    """False when nothing is at an optional input's `path`, True for a regular file (after links), else one
    line naming `where` (default the path): a FIFO or folder at rows.parquet was "absent", and plots read
    metadata.jsonl instead, without a word. A link to nothing is one line too (a dvc.lock link whose target
    is gone is no "no lock"), unless `dangling_absent`: a file only shown when there (pr-comment's contact
    sheet, a DVC symlink checkout after `dvc gc`). The one rule for the stages and the side tools alike."""
    name = where or shown(path)
    if not os.path.lexists(path):
        return False
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if dangling_absent:
            return False
        raise DataError(f"{name}: a symbolic link to nothing ({shown(os.readlink(path))})") from None
    except OSError as exc:  # a loop of links, a folder on the way not searchable
        raise DataError(f"{name}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{name}: is {file_kind(mode)}, not a regular file; refusing to read it")
    return True


# ---------------------------------------------------------------- files unchanged while read
FileState = tuple[int, int, int, int]


def file_state(path: Path | str) -> FileState:
    """(device, inode, size, mtime in ns) of `path`, after links."""
    status = os.stat(path)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def tree_state(root: Path | str) -> dict[str, FileState]:
    """file_state of `root` (a file) or of every regular file under it (a folder, links followed as the
    readers may follow them; a loop or an unreadable entry is left to the reader's own one line)."""
    if not os.path.isdir(root):
        return {str(root): file_state(root)} if os.path.isfile(root) else {}
    states = {}
    for folder, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                states[path] = file_state(path)
    return states


def check_files_unchanged(before: dict[str, FileState], root: Path | str) -> None:
    """One line naming the first file of `root` that is not as `before` (tree_state when the read began):
    grown, rewritten, replaced, added or removed."""
    now = tree_state(root)
    for path in sorted(before.keys() | now.keys()):
        if before.get(path) != now.get(path):
            raise DataError(f"{shown(path)}: {changed(before.get(path), now.get(path))} while it was read; run again")


def changed(was: FileState | None, now: FileState | None) -> str:
    if was is None:
        return "appeared"
    if now is None:
        return "removed"
    if was[:2] != now[:2]:
        return "replaced"
    return f"changed (size {was[2]:,} -> {now[2]:,} bytes)" if was[2] != now[2] else "changed (modification time)"
