"""The one exception a stage raises for bad input or params, and how a path appears in its line."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class DataError(Exception):
    """Bad input or params: the CLI prints it as one line (no traceback) and exits 2.

    Name the file and the row, e.g. DataError("data/raw/x.csv: row 17: empty prompt").
    """


# How a library that is not Python reports an OS failure in its own exception (safetensors' Rust:
# "... No space left on device (os error 28)", or its Debug form "Os { code: 28, kind: StorageFull, ... }").
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)|\bOs \{ code: (\d+)")


def os_error_code(exc: BaseException) -> int | None:
    """The errno a library's exception carries in its text, if it is an OS failure in disguise."""
    found = _OS_ERROR_IN_TEXT.search(str(exc))
    return None if found is None else int(found.group(1) or found.group(2))


def os_error_message(exc: OSError, target: Path | str, tmp: Path | None = None) -> str:
    """One line for an OSError met while writing `target`: the path it names (never a temp path), the reason."""
    detail = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    name = exc.filename
    if exc.errno in NO_ROOM:  # the write failed, whichever file the error names (a copy names its source)
        return f"{shown(target)}: cannot write ({detail})"
    if name and (tmp is None or not str(name).startswith(str(tmp))):
        return f"{shown(name)}: {detail}"
    return f"{shown(target)}: cannot write ({detail})"


NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def os_reason(exc: BaseException) -> str:
    """Why an OS call failed, in the system's words (`Too many open files`), else the exception's type name: the
    part of a one-line error after the step (`cannot start git tag (...)`)."""
    return (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__


def exception_line(exc: BaseException, limit: int = 200) -> str:
    """A library's exception as one line of ours: `Type: its first line` (at most `limit` characters of it),
    never its traceback or the pages some libraries put in their messages."""
    detail = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def shown(path: Path | str) -> str:
    """A path (or any text from the data) as it may be printed: escape codes, other control characters
    and undecodable bytes (a non-UTF-8 file name) escaped, so a name cannot drive the terminal."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return text if text.isprintable() else "".join(map(_printable, text))


def shown_short(value, limit: int = 80) -> str:
    """A value from the data as a message may echo it: its first `limit` characters (then `…`), shown
    (escaped); a 2 MB value made a 2 MB error line."""
    text = value if isinstance(value, str) else repr(value)
    return shown(text[:limit]) + ("…" if len(text) > limit else "")


def quoted(value, limit: int = 100) -> str:
    """A name or value from params as a message quotes it: the repr of its first `limit` characters (then
    `…`); a 200 kB unknown key, entry name or rule set name made a 200 kB error line. 100 characters show
    any entry name whole (params.base.ENTRY_NAME)."""
    if not isinstance(value, str):  # a number or list as repr shows it (`got 7.5`, not `got '7.5'`)
        text = repr(value)
        return text[:limit] + ("…" if len(text) > limit else "")
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def shown_lines(text: str) -> str:
    """shown, line by line: a report of many lines (a diff, a table) printed with its newlines."""
    return "\n".join(map(shown, text.split("\n")))


def _printable(char: str) -> str:
    if char.isprintable():
        return char
    if 0xDC80 <= ord(char) <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


# a URL's user:password@ (up to the last @ before the path: a password may hold one, unencoded)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/?#]*@", re.IGNORECASE)


def redact_url_userinfo(text: str) -> str:
    """`text` with the user:password@ of every URL in it shown as ***@ (a URL from the environment,
    e.g. HF_ENDPOINT, may carry a password, and a library quotes the URL in its errors)."""
    return _URL_USERINFO.sub(r"\1***@", text)


# a path to a file: absolute, home- or dot-relative, its last part with an extension (key.json, ca.pem)
_FILE_PATH = re.compile(r"(?:~|\.{1,2}|[A-Za-z]:)?[/\\](?:[\w.-]+[/\\])*[\w-][\w.-]*\.[A-Za-z][A-Za-z0-9]{0,7}")


def names_a_file(value: str) -> bool:
    """Whether a variable's value is a path (one that exists, or shaped like a path to a file): a variable
    named like a credential (GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN_PATH) may hold where the secret is,
    which is no secret, and treating it as one refused params and blanked error lines naming the file.
    A token never has that shape (base64 has no `.`; a JWT does not start with `/`), nor is it a file here."""
    if len(value) > 4096:
        return False
    if _FILE_PATH.fullmatch(value):
        return True
    try:
        return os.path.exists(os.path.expanduser(value))
    except (OSError, ValueError):
        return False
