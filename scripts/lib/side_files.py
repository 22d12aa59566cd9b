"""Reading what a command is given beside its table: the kind of a path (a FIFO blocks an open, /dev/zero never
ends), and side files (params.yaml, a rule set, a plan, a manifest, a lock) read whole only when regular and
under a cap. scripts/lib/io.py re-exports these for the stages that read and write.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

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


def present_file(path: Path | str) -> bool:
    """False when nothing is at an optional input's `path`, True for a regular file (after links), else one
    line: a FIFO or folder at rows.parquet was "absent", and plots read metadata.jsonl instead, without a word."""
    if not os.path.lexists(path):
        return False
    try:
        regular_file(path)
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: a symbolic link to nothing ({shown(os.readlink(path))})") from None
    except OSError as exc:  # a loop of links, a folder on the way not searchable
        raise DataError(f"{shown(path)}: {exc.strerror}") from None
    return True
