"""The last shape of a command's failure line, as cli prints it: cut to a length a terminal and a CI log can show
(`capped`), and the one line of a failure no check foresaw (`internal_error_line`: a bug, exit 1). cli's own;
no stage imports it."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

MAX_LINE = 2000  # characters of an error line; a longer one keeps its head and its tail (the advice)
TRACEBACK_VARIABLE = "T2I_TRACEBACK"  # set to 1: a bug's traceback instead of its one line
PACKAGE = Path(__file__).resolve().parents[1]  # scripts/


def capped(line: str) -> str:
    """`line` at most about MAX_LINE characters: its start (what failed, the file) and its end (what to do), the
    middle cut and counted. A value quoted whole (a 100 KB column name, a shard path, a server's reply) made an
    error line of that size wherever no message cut it itself."""
    if len(line) <= MAX_LINE:
        return line
    head, tail = MAX_LINE * 2 // 3, MAX_LINE // 4
    return f"{line[:head]} [... {len(line) - head - tail} characters cut ...] {line[-tail:]}"


def with_limit_hint(line: str) -> str:
    """`line`, and, when it tells of the open-file limit (EMFILE), what that limit is: hit while Python imported a
    library, the line named the library's own file (`.../pandas/__init__.py: Too many open files`), which looked
    like that file's fault; the limit (`ulimit -n`) is the process's, set where it was started."""
    if os.strerror(errno.EMFILE) not in line:
        return line
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{line} (this process may hold {soft} open files at most: raise `ulimit -n`)"


def dvc_index_line(repo: str, rev: str, exc: OSError | sqlite3.Error) -> str:
    """The line for DVC failing on its index of `repo` (sqlite, written as DVC opens a revision): diff and pr-comment
    said `.: cannot open revision 'main' (OperationalError: disk I/O error)`, as if the revision were at fault."""
    from scripts.lib.errors import shown

    return shown(f"DVC's index of {repo}: cannot read or write it to open revision {rev!r} ({what_failed(exc)})") + (
        disk_hint(exc)
    )


def what_failed(exc: OSError | sqlite3.Error) -> str:
    said = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {said}"


def disk_hint(exc: OSError | sqlite3.Error) -> str:
    """`; is the disk full ...?`, the file size limit named with its value when one is set (sqlite says only `disk
    I/O error`); none for the open-file limit, which cli's line names itself (failure_lines.with_limit_hint)."""
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return ""
    import sqlite3  # here: cli imports this module first thing, and most commands never touch sqlite

    if isinstance(exc, sqlite3.Error) and "unable to open" in str(exc):  # sqlite's EMFILE, in its own words
        files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return f"; is the open-file limit ({files} files: `ulimit -n`) too low, or the disk full?"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return "; is the disk full, or a file size limit (`ulimit -f`) set?"
    return f"; is the disk full, or the file size limit ({soft} bytes: `ulimit -f`) too low?"


def traceback_asked() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "").strip() not in ("", "0")


def internal_error_line(exc: BaseException) -> str:
    """A failure no check of ours foresaw (a bug, not the input's fault) as one line naming the exception and where
    in scripts/ it was raised, as DVC prints "unexpected error" without `-v`. It was a traceback of dozens of lines,
    and whatever the exception's message quoted (a value from the data) in full."""
    from scripts.lib.errors import exception_line

    return (
        f"internal error (a bug, please report it): {exception_line(exc)}{raised_at(exc)}; "
        f"{TRACEBACK_VARIABLE}=1 prints the traceback"
    )


def raised_at(exc: BaseException) -> str:
    """` at scripts/x.py:LINE in FUNCTION`: the innermost frame of our own code the exception went through."""
    import traceback

    ours = [frame for frame in traceback.extract_tb(exc.__traceback__) if _inside(frame.filename)]
    if not ours:
        return ""
    frame = ours[-1]
    where = Path(frame.filename).resolve().relative_to(PACKAGE.parent)
    return f" at {where.as_posix()}:{frame.lineno} in {frame.name}"


def _inside(filename: str) -> bool:
    try:
        Path(filename).resolve().relative_to(PACKAGE)
    except (ValueError, OSError):
        return False
    return True


def folder_gone_line() -> str | None:
    """The line for a command started in a folder that was deleted (from another terminal, or by a checkout):
    every path it is given is relative to that folder, and each step failed at its own first use of it, as a bare
    "No such file or directory" naming nothing, or a line that could not be checked for secrets."""
    try:
        os.getcwd()
    except OSError as exc:
        return f"the current folder cannot be read ({exc.strerror}: deleted?); cd to the repository's root again"
    return None
