"""Append-only records of names, one per line: the generation store's index and generate's journal. Each
is a regular file of ours with one link, opened without following a link or blocking on a FIFO, and each
line goes in whole (scripts/lib/image_store.py says what the records prove).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from scripts.lib.errors import DataError, os_error_message, shown


class NameList:
    """An append-only list of relative names in one text file: each `add` is one O_APPEND write,
    whole even with several threads or processes appending (local filesystems)."""

    def __init__(self, path: Path):
        self.path = path

    def names(self) -> set[str]:
        """The names of its whole lines. A last line with no newline is left out: `add` writes a name and its
        newline in one write, so a cut one (a full disk, a kill) raised before its file was written, and it may
        be a prefix of a real name or cut inside a character. A line before it that is not UTF-8 is refused."""
        try:
            fd = open_own(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return set()
        try:
            with open(fd, "rb") as f:
                text = _whole_lines(f.read()).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.path}: unreadable ({type(exc).__name__}); it says which files are ours") from None
        return {line for line in text.split("\n") if line}  # as written: "\n" ends a name, U+2028 does not

    def add(self, name: str) -> None:
        """One line, written whole, under the file's own lock: a last line a full disk or a kill cut short
        (never a name: see `names`) is cut off first, so it never joins the lines after it."""
        fd = open_own(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # threads and processes appending: one cuts a torn line, then appends
            whole = self._whole_size()
            if whole != os.fstat(fd).st_size:
                os.ftruncate(fd, whole)
            data = (name + "\n").encode("utf-8")
            if os.write(fd, data) != len(data):  # a full disk mid-line: the line is not there
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise DataError(os_error_message(exc, self.path)) from None
        finally:
            os.close(fd)

    def _whole_size(self) -> int:
        """The file's size up to the end of its last whole line."""
        fd = open_own(self.path, os.O_RDONLY)
        try:
            end = os.fstat(fd).st_size
            if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
                return end
            while end > 0:
                start = max(0, end - 4096)
                found = os.pread(fd, end - start, start).rfind(b"\n")
                if found >= 0:
                    return start + found + 1
                end = start
            return 0
        finally:
            os.close(fd)

    @staticmethod
    def text(names: set[str]) -> bytes:
        """A whole list of `names`, sorted: what a rewrite puts in place (a temp file, then a rename)."""
        return "".join(f"{n}\n" for n in sorted(names)).encode("utf-8")


def _whole_lines(data: bytes) -> bytes:
    """`data` without a last line that has no newline."""
    return data[: data.rfind(b"\n") + 1]


def open_own(path: Path, flags: int) -> int:
    """Open a record of ours (the store's index, the output's journal, the store's lock): a regular file with
    one link, never followed through a link, never a FIFO or device that would block or write elsewhere."""
    try:
        fd = os.open(path, os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | flags, 0o666)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if exc.errno != errno.ELOOP:
            raise DataError(os_error_message(exc, path)) from None
        fd = -1
    info = os.fstat(fd) if fd >= 0 else None
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        if fd >= 0:
            os.close(fd)
        raise DataError(
            f"{shown(path)}: is not a file of generate's own (a link, a hard link, a FIFO or a device); "
            "refusing to read or write it (move it away)"
        )
    return fd


class Journal(NameList):
    """The output's journal: each line a name and, tab-separated, the sha256 of the bytes written there
    (added before the file appears, so a killed run's files are provably its own)."""

    def names(self) -> set[str]:
        return set(self.digests())

    def digests(self) -> dict[str, set[str]]:
        """name -> the sha256s recorded for it (empty where a line names no digest: it proves nothing)."""
        found: dict[str, set[str]] = {}
        for line in super().names():
            name, _, digest = line.partition("\t")
            found.setdefault(name, set()).update([digest] if digest else [])
        return found

    def add(self, name: str, digest: str | None = None) -> None:
        super().add(f"{name}\t{digest}" if digest else name)

    @staticmethod
    def text_with(digests: dict[str, str]) -> bytes:
        """A whole journal of `digests` (name -> sha256)."""
        return NameList.text({f"{name}\t{digest}" for name, digest in digests.items()})
