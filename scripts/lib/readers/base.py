"""What every reader shares: its config (params.yaml `sources.<name>`), the records it yields, and the problems it reports.

A reader is a generator `read(cfg, info) -> Iterator[Record | Problem]`: it only turns files of one
native format into records. Ids, prompt checks, the on_error policy, batching and writing live once,
in scripts/ingest.py. `info` is a dict the reader may fill with facts for the report (e.g. part ids).
"""

from __future__ import annotations

import codecs
import difflib
import functools
import os
import re
import stat
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.lib.archive import UnsafeArchive, check_image_pixels
from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.io import check_folder_or_file, file_kind
from scripts.lib.params import Source
from scripts.lib.pixels import HEAD_BYTES
from scripts.lib.safe_paths import matches
from scripts.lib.tables import check_column_names

SourceConfig = Source  # one `params.yaml: sources.<name>` entry (scripts/lib/params/sources.py: Source)


@dataclass
class Record:
    key: str  # native key, unique within the source: the row id is stable_id(source, key)
    prompt: str
    split: str | None = None
    image: str | None = None
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    file: Path | str = ""  # where it came from, for error messages
    where: str = ""

    def __post_init__(self) -> None:
        self.meta = without_signatures(self.meta)


# A query or fragment parameter that signs or authorises a URL: S3's presigned `X-Amz-Signature`/`-Credential`/
# `-Security-Token`, GCS's `X-Goog-*`, Azure SAS's `sig`, CloudFront's `Signature` and `Policy`, OAuth's
# `access_token`, an API's `key`/`api_key`/`token`: a name ending in one of these words (after `-`, `_`, `.` or a
# camelCase step: `accessToken`, `clientSecret`, `sessionToken`). Azure's `se` is the expiry, no secret.
SIGNING_PARAMETER = re.compile(
    r"(?i)(?:^|[-_.])(?:sig|signature|token|key|apikey|secret|credential|password|passwd|pwd|auth|policy|sas|jwt)$"
)
_CAMEL_STEP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# a parameter's `?`, `&`, `#` or `;` (`&amp;`), and `=`, as written or %-escaped once or more (a signed URL inside
# another's query: `?next=https%3A%2F%2Fb%2Fk%3FX-Amz-Signature%3D...`), or \u-escaped as JSON text writes `&`
_SEPARATOR = r"(?:[?&#;]|\\u0026|%(?:25)*(?:3[fF]|26|23|3[bB]))"
_EQUALS = r"(?:=|%(?:25)*3[dD]|\\u003[dD])"
_URL_PARAMETER = re.compile(
    rf"({_SEPARATOR})((?:(?!{_SEPARATOR}|{_EQUALS})[^=\s\"'<>])+)({_EQUALS})((?:(?!{_SEPARATOR})[^&#;\s\"'<>])*)"
)
# user:password@host without a scheme (`admin:hunter2@db.internal:5432`): ingest's without_userinfo takes the
# URLs' (scheme://user:password@). Its host is a name with a dot, a name and a port, or [an IPv6 address]: `12:30@venue`
# (a time and a place) was blanked. Not a mail address (no `:` before its `@`), nor one after a label or scheme
# (`mailto:me@host`, `email:jo@example.com`, `Contact:jo@example.com`), nor a time (`at 12:30@cafe.example`)
_MAIL_LABEL = r"mailto|sips?|xmpp|tel|e-?mail|mail|contact|from|to|cc|bcc|reply-to|re|fwd?|sender|author|by"
_BARE_USERINFO = re.compile(
    rf"(?<![\w.:/@%+~-])(?!(?i:{_MAIL_LABEL}):)(?!\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?i:\s*[ap]\.?m\.?)?@)"
    r"[\w.~%!$&'()*+,;=-]+:[^\s/?#@:\"'<>]+@(?=\[|[\w-]+(?:\.[\w-]+)+|[\w-]+:[0-9]{1,5}(?![0-9]))"
)


def without_signatures(value: Any) -> Any:
    """`value` (a record's metadata) with the value of every signing parameter (SIGNING_PARAMETER) in its texts
    shown as ***, and every user:password@ without a scheme as ***@. A source's metadata quoting a signed URL (a
    DALL-E-3 json's `url`, an OpenPrompts `image_uri`, a parquet source's URL column) carried a working credential
    into the prompt table, and from there into clean's table and every release; so did one without a scheme
    (`b.s3.amazonaws.com/x.png?X-Amz-Signature=...`), one %-escaped inside another URL, and a parameter named in
    camelCase (`accessToken`). The row is kept and the URL still names its object (the prompt is the data; the
    signature expires anyway, and refusing would drop whole sources whose every URL is signed); a URL's
    scheme://user:password@ is ingest's (without_userinfo). The prompt itself is kept as the source wrote it: it is
    the data, and a model is trained on it as it is."""
    if isinstance(value, str):
        if "=" in value or "%3" in value or "\\u003" in value:  # else no parameter: the common value
            value = _URL_PARAMETER.sub(_unsigned, value)
        return _BARE_USERINFO.sub("***@", value) if "@" in value else value
    if isinstance(value, dict):
        return {without_signatures(key): without_signatures(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_signatures(item) for item in value]
    return value


def _unsigned(parameter: re.Match) -> str:
    separator, name, equals, secret = parameter.groups()
    return f"{separator}{name}{equals}***" if secret and _signs(name) else parameter.group()


def _signs(name: str) -> bool:
    """Whether a parameter's name (%-escapes undone, camelCase steps cut) is SIGNING_PARAMETER's."""
    for _ in range(3):  # %-escaped twice over at most, as the separators are matched
        name = urllib.parse.unquote(name)
    return bool(SIGNING_PARAMETER.search(_CAMEL_STEP.sub("_", name)))


@dataclass
class Problem:
    """A bad record: `fail` turns it into a DataError, `skip` counts it under `reason`."""

    file: Path | str
    where: str  # "row 17", "line 3", "member x.json", or "" for the whole file
    reason: str
    detail: str
    always_skip: bool = False  # documented format behaviour (e.g. dalle3 records without width), never an error

    def message(self) -> str:
        return f"{self.file}: {self.where}: {self.detail}" if self.where else f"{self.file}: {self.detail}"


# where the first skipped records are, in the report (`skipped_at`): under `on_error: skip` it counted each reason
# only, the file and row of a record_too_long being in the `fail` line alone. A million bad rows stay 100 entries.
SKIPS_NOTED = 100


def noting_skips(read: Callable[[SourceConfig, dict], Iterator[Record | Problem]]) -> Callable:
    """`read` (a reader) noting in its `info` (`skipped_at`, copied into report.json) the reason, file, row or
    member and detail of its first SKIPS_NOTED problems; documented skips (`always_skip`: blank lines) aside."""

    @functools.wraps(read)
    def noted(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
        skipped_at: list[dict[str, str]] = info.setdefault("skipped_at", [])
        for item in read(cfg, info):
            if isinstance(item, Problem) and not item.always_skip and len(skipped_at) < SKIPS_NOTED:
                detail = shown_short(item.detail, 200)
                skipped_at.append(
                    {"reason": item.reason, "file": str(item.file), "where": item.where, "detail": detail}
                )
            yield item

    return noted


LINK_HINT = "refused: a link can pull in any file (set follow_symlinks: true in the source's params to read links)"


def leaves(path: Path, root: Path) -> bool:
    """`path` is not under `root` once normalised (a `..` or an absolute part takes it out)."""
    try:
        relative = Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        return True
    return ".." in relative.parts


# how much of a path from the data (a manifest's shard, a CSV's image_path) a message shows: a name past
# NAME_MAX (255 bytes) or PATH_MAX (4096) cannot exist, and a 100 KB one made a 100 KB error line
NAME_SHOWN = 300


def link_under(path: Path, root: Path) -> Path | None:
    """The first symbolic link on the way down from `root` (which may itself be one) to `path`."""
    current = Path(os.path.normpath(root))
    for part in Path(os.path.normpath(path)).relative_to(current).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def check_confined(path: Path, root: Path, follow_symlinks: bool = False) -> Path:
    """`path`, refused (one-line DataError) if it leaves `root` or, unless `follow_symlinks`, passes
    through a symbolic link below `root`: a reader opens only files the source holds."""
    if leaves(path, root):
        raise DataError(f"{shown_short(str(path), NAME_SHOWN)}: leaves the source folder {root}")
    try:
        link = None if follow_symlinks else link_under(path, root)
    except OSError as exc:  # a name from the data past NAME_MAX or PATH_MAX: a 100 KB line naming it whole
        raise DataError(f"{shown_short(str(path), NAME_SHOWN)}: {exc.strerror}") from None
    if link is not None:
        raise DataError(f"{link}: is a symbolic link; {LINK_HINT}")
    return path


def native_name(path: Path, root: Path) -> str:
    """`path` as the row keys name it: its path under `root` (`/`-separated, normalised), or its file name
    when `root` is the file itself. Two files of one source never share it, whatever folders they sit in."""
    if os.path.normpath(path) == os.path.normpath(root):
        return path.name
    return Path(os.path.normpath(path)).relative_to(os.path.normpath(root)).as_posix()


def check_distinct(named: list[tuple[str, str]], where: Path | str, what: str) -> None:
    """A one-line DataError for the first two of `named` (key, path) with one key: a file read twice, or
    two files whose rows the keys cannot tell apart, would give rows the same id."""
    seen: dict[str, str] = {}
    for key, path in named:
        if key not in seen:
            seen[key] = path
        elif seen[key] == path:
            raise DataError(f"{shown(where)}: {what} {shown(path)} is listed twice")
        else:
            raise DataError(
                f"{shown(where)}: {what}s {shown(seen[key])} and {shown(path)} would give their rows one key"
            )


def source_files(root: Path, pattern: str, what: str, follow_symlinks: bool = False) -> list[Path]:
    """The source's files: `root` itself when it is a file, else its sorted matches of `pattern`, in
    any case (a match that is a symbolic link is refused unless `follow_symlinks`)."""
    if root.is_file():
        return [root]
    if not root.exists():
        raise DataError(f"{root}: source path not found")
    check_folder_or_file(root, f"a {what} file")  # a FIFO or a device (/dev/zero): "not found" was wrong
    files = []
    for path in matches(root, pattern):
        if path.is_symlink() and not follow_symlinks:
            raise DataError(f"{path}: is a symbolic link; {LINK_HINT}")
        check_source_file(path, what)
        files.append(path)
    if not files:
        raise DataError(f"{root}: no {what} files ({pattern}) found")
    return files


def check_source_file(path: Path, what: str) -> None:
    """A DataError unless `path`, a match of the source's pattern, is a regular file after links. A FIFO, socket,
    device, folder (a shard extracted into `data-000001.tar/`) or link to nothing there was passed over, its
    rows missing from the table at exit 0; reading it instead would hang (a FIFO) or never end (a device)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.is_symlink():
            raise  # gone since it was listed: the caller's one line names it
        raise DataError(f"{shown(path)}: a symbolic link to nothing; not a {what} file") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{shown(path)}: is {file_kind(mode)}, not a {what} file; its rows would be left out")


def decode(data: bytes) -> str:
    """UTF-8 text; invalid bytes survive as surrogates so the prompt check can name the row."""
    return codecs.decode(data, "utf-8", "surrogateescape")


def require_columns(file: Path, present: list[str], required: list[str], echo: bool = True) -> None:
    """A one-line DataError when a required column is missing. With `echo=False` (a CSV header is the
    file's first line, whatever the file is) only a near match of the missing name is shown, never the line."""
    check_column_names(file, present)
    missing = [c for c in required if c not in present]
    if not missing:
        return
    if echo:
        hint = f"has: {columns_shown(present)}"
    else:
        near = difflib.get_close_matches(missing[0], [str(c) for c in present], n=1, cutoff=0.7)
        hint = f"did you mean {near[0]!r}?" if near else f"the header has {len(present)} fields"
    raise DataError(f"{file}: missing column {', '.join(repr(c) for c in missing)} ({hint})")


COLUMNS_SHOWN = 20  # a parquet file of 5,000 columns named every one: a 40 KB error line


def columns_shown(present: list[str]) -> str:
    """The first COLUMNS_SHOWN of a file's column names, each cut short, for a one-line message."""
    names = ", ".join(shown_short(str(name), 40) for name in present[:COLUMNS_SHOWN]) or "none"
    return names + (f" and {len(present) - COLUMNS_SHOWN:,} more" if len(present) > COLUMNS_SHOWN else "")


def head_pixels(head_of: Callable[[int], bytes], name: str, max_pixels: int) -> tuple[int, int]:
    """check_image_pixels of an image's head (`head_of(n)`: its pixels.image_head, n bytes of a format other
    than PNG): 64 KiB, then 8 times more while its header runs past them, up to 32 MiB. A JPEG or WebP with a
    200 KB ICC profile (a print workflow's) before its size was `bad_image` in a 64 KiB head: a valid image
    refused, its row dropped or the stage stopped. A PNG's head is its chunks that decide, whatever n."""
    limits = [HEAD_BYTES << 3 * step for step in range(4)]  # 64 KiB to 32 MiB
    for limit in limits:
        head = head_of(limit)
        try:
            return check_image_pixels(head, name, max_pixels)
        except UnsafeArchive as exc:
            if exc.reason != "bad_image" or len(head) < limit or limit == limits[-1]:
                raise  # not a header cut short: refused as it is
    raise AssertionError("the last limit re-raises")
