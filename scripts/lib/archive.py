"""Safe access to untrusted tar and zip archives, shared by ingest and release.

Nothing is ever extracted to disk. Tar shards are read through a window (TarBuffer: never mmap, whose
SIGBUS on a file truncated while read would kill the process) and walked header by header (a small
ustar/pax/GNU parser: the stdlib `tarfile` costs several times more per member, and the DALL-E-3
compile reads millions of members); every member is checked before its bytes are used:
- names: no absolute paths, no `..`, no empty names;
- types: regular files only (directories are passed over); symlinks, hardlinks, devices, fifos and
  sparse/unknown members are refused, pax sparse members too;
- pax records: a member's path and size are followed; a global header's path or size (every later member's, to
  tar) ends the walk; two pax or GNU long-name headers before one member are a corrupt header (below);
- sizes: a member larger than `max_bytes` is refused without reading it; images larger than
  `max_pixels` (decompression bombs) are refused from their header before any decoding.

A corrupt header (bad checksum or number field, bad pax record, two extension headers for one member, a pax
path or size record over 1 MiB) does not end the walk: as GNU tar ("Skipping to next header"), it scans on
block by block (512-aligned) to the next valid header (checksum right, number fields parse, a name) and resumes
there; the bytes passed over are ONE counted skip (SkippedRegion) naming their range. What that means for safety:
- a member the corruption touched is never yielded: the corrupt header's own member (and, after a bad extension
  header, the member it described: its name or size unknown) is passed over with the region, and nothing from
  before it (a pending pax size or name) applies after the resync, so no member gets another's size;
- every member after a resync goes through every check above (names, types, sizes, pax rules), as any other;
- a header found inside a member's data (a tar inside a tar) is walked as GNU tar walks it: its members are
  yielded as members, and its end blocks end the walk (counted, with the bytes left unread) as they end tar's;
- a lone zero block in the skipped bytes is data (an image's black rows), two in a row the archive's end;
- iter_samples never pairs members across a skip: a sample with members on both sides is one counted
  "incomplete_sample" (the skipped bytes may have held more of it);
- ingest and a release (read_member's index) walk the same way, so both mean the same members;
- the scan reads each byte once through the window: a 10,000-member shard costs the same walked with one bad
  header in it (tests/test_round42a.py, slow tier).

Images inside archives are referenced as "<archive path>!/<member name>", for example
"data/raw/dalle3/data-000000.tar!/00000001.png"; `read_member(ref)` re-validates everything.

Over 500 lines for one job: the tar walk and the zip reads must each mean what tar and unzip mean, member
for member, and split across modules the checks of one format would drift apart.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from scripts.lib.errors import DataError
from scripts.lib.io import REF_SEPARATOR, shown
from scripts.lib.pixels import TooManyPixels, UnsupportedPixels, image_head, image_size, opened, stream_reader

DEFAULT_MAX_MEMBER_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # ~6300 x 6300; PIL's own bomb limit is 89M

BLOCK = 512
ZERO_BLOCK = b"\x00" * BLOCK
REGULAR_TYPES = {b"0", b"\x00", b"7"}
EXTENSION_TYPES = {b"x", b"g", b"L"}  # pax (per-file, global) and GNU long-name headers
TYPE_NAMES = {
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "character device",
    b"4": "block device",
    b"6": "fifo",
    b"K": "long link name",
    b"S": "sparse file",
    b"V": "volume label",
    b"M": "multi-volume",
}


class UnsafeArchive(Exception):
    """A member or archive that must not be used; `reason` is the counted skip reason."""

    def __init__(self, reason: str, detail: str, member: str | None = None):
        super().__init__(detail)
        self.reason = reason
        self.member = member  # a refused member's (plain) name: its sample must still see the name taken


@dataclass
class TarMember:
    """One regular member of a tar archive; `read()` copies its bytes out of the archive."""

    name: str
    size: int
    offset: int  # of the data in the archive
    _buf: Any

    def read(self) -> bytes:
        return self.read_at(0, self.size)

    def read_at(self, start: int, count: int) -> bytes:
        """`count` bytes of the member from `start` (fewer at its end): pixels.image_head's reader."""
        start = min(start, self.size)
        return bytes(self._buf[self.offset + start : self.offset + min(start + count, self.size)])


class ArchiveChanged(DataError):
    """The archive shrank while it was read (another process truncated or rewrote it): one line, exit 2."""


class TarBuffer:
    """A tar file as read-only bytes: `len(buf)` and `buf[a:b]`, read with pread through a window.

    Not an mmap: a file truncated while mapped kills the process with SIGBUS on the next access; here
    a short read raises ArchiveChanged, one line naming the file. A sequential walk costs one pread
    per WINDOW bytes (fewer system calls than page faults on a mapping).
    """

    WINDOW = 1 << 20

    def __init__(self, fd: int, size: int, path: Path | str):
        self._fd, self._size, self.path = fd, size, path
        self._start, self._data = 0, b""

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice):
            raise TypeError("TarBuffer supports slices only")
        start, stop, _ = key.indices(self._size)
        if stop <= start:
            return b""
        end = self._start + len(self._data)
        if self._start <= start and stop <= end:
            return self._data[start - self._start : stop - self._start]
        if stop - start > self.WINDOW:  # a big member: read it alone, keep the window
            return self._pread(start, stop - start)
        self._start = start
        self._data = self._pread(start, min(self.WINDOW, self._size - start), need=stop - start)
        return self._data[: stop - start]

    def _pread(self, offset: int, length: int, need: int | None = None) -> bytes:
        parts, got = [], 0
        while got < length:
            chunk = os.pread(self._fd, length - got, offset + got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        if got < (length if need is None else need):
            raise ArchiveChanged(
                f"{self.path}: the file shrank while it was read (now {os.fstat(self._fd).st_size} "
                f"bytes, was {self._size}): rewritten or truncated by another process?"
            )
        return b"".join(parts)


@contextlib.contextmanager
def open_tar(path: Path | str) -> Iterator[Any]:
    """A tar file as bytes for iter_tar (TarBuffer: only the parts walked are read, never extracted)."""
    with open(path, "rb") as f:
        yield TarBuffer(f.fileno(), os.fstat(f.fileno()).st_size, path)


def check_member_name(name: str) -> None:
    """Refuse names that would escape an extraction folder (tar-slip / zip-slip)."""
    if not name:
        raise UnsafeArchive("unsafe_member", "member with an empty name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive("unsafe_member", f"member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchive("unsafe_member", f"member {name!r} has a '..' component")


# A tar number as GNU tar reads it: ASCII octal digits between blanks (a header field, to its NUL), ASCII decimal digits
# alone (pax). int() took `1_0`, `+10`, `0o12`, Unicode digits: tar refuses them, and our member boundaries would differ.
_OCTAL, _DECIMAL = re.compile(rb"\s*([0-7]*)\s*"), re.compile("[0-9]+")


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    digits = _OCTAL.fullmatch(field.split(b"\x00", 1)[0])
    if digits is None:
        raise UnsafeArchive("corrupt_archive", f"bad {what} field {field!r} in a tar header")
    return int(digits[1], 8) if digits[1] else 0


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        digits = data[pos:space].decode("latin-1")
        length = int(digits) if _DECIMAL.fullmatch(digits) else -1  # -1: refused as a bad length below
        if length <= space - pos or pos + length > len(data):
            raise ValueError(f"bad pax record length {digits[:40]!r}")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


# A pax sparse member is a regular `0` member whose data is a sparse map and the file's non-zero parts: read as
# the file, its holes were dropped (a 35 MB image became its 4 kB of data) or the map read as the image's head.
SPARSE_RECORD = "GNU.sparse."


# A pax or GNU long-name header over this is not read into memory: its records are walked one by one (see _large_pax)
EXTENSION_CAP = 1024 * 1024
_KEPT_KEYS = ("path", "size", "GNU.sparse.name")  # what the walk takes from a pax header (and GNU.sparse.*: refused)


def _large_pax(buf: Any, start: int, size: int) -> dict[str, str]:
    """The records the walk uses (path, size, sparse keys) of a pax header over EXTENSION_CAP, read record by record
    in bounded reads: the rest (a 10 MB `comment`, which GNU tar reads) is passed over by its length, never held.
    Raises ValueError as _pax_records does; other keys are kept with an empty value."""
    records: dict[str, str] = {}
    pos, end = start, start + size
    while pos < end:
        head = bytes(buf[pos : min(pos + 300, end)])
        space = head.find(b" ")
        if space < 0:
            if end - pos > len(head):  # no record length within 300 bytes: not one
                raise ValueError("bad pax record length")
            break
        digits = head[:space].decode("latin-1")
        length = int(digits) if _DECIMAL.fullmatch(digits) else -1
        if length <= space or pos + length > end:
            raise ValueError(f"bad pax record length {digits[:40]!r}")
        key = head[space + 1 : length - 1].partition(b"=")[0].decode("utf-8", "replace")
        if key in _KEPT_KEYS:
            if length > EXTENSION_CAP:
                raise ValueError(f"a {key!r} record of {length} bytes")
            records.update(_pax_records(bytes(buf[pos : pos + length])))
        else:
            records[key] = ""
        pos += length
    return records


def _rest_unread(pos: int, end: int) -> str:
    """What a walk that ends before the end of the shard leaves: said in its one counted skip, as its samples
    cannot be told apart (no later offset can be trusted) and go uncounted."""
    left = end - pos
    return (
        f"; the rest of the shard ({left} bytes from byte {pos}) is not read, its samples not counted" if left else ""
    )


def _check_global(records: dict[str, str]) -> None:
    """Refuse a global pax header's path, size or sparse map: every later member's to GNU tar and tarfile
    (renamed or resized all), which the walk does not apply."""
    if taken := sorted(k for k in records if k in ("path", "size") or k.startswith(SPARSE_RECORD)):
        raise ValueError(f"a global header sets {', '.join(taken)} for every later member")


class SkippedRegion(UnsafeArchive):
    """A corrupt header and the bytes after it passed over to the next valid header (`stop`; None: none follows)."""

    def __init__(self, detail: str, start: int, stop: int | None):
        super().__init__("corrupt_archive", detail)
        self.start, self.stop = start, stop


def _header_fault(header: bytes) -> str | None:
    """Why a 512-byte block is not a tar header the walk can follow (its checksum or size field), or None."""
    try:
        checksum = _octal(header[148:156], "checksum")
        _octal(header[124:136], "size")
    except UnsafeArchive as exc:
        return str(exc)
    if checksum != sum(header) - sum(header[148:156]) + 256:
        return "bad tar header checksum"
    return None


def _plausible_header(header: bytes) -> bool:
    """A block a resync may resume at: a named header whose checksum and size fields hold (GNU tar's test), its
    checksum in octal digits as every writer puts it (tested first: half of random data reads as base-256)."""
    octal_checksum = _OCTAL.fullmatch(header[148:156].split(b"\x00", 1)[0])
    return header[0] != 0 and octal_checksum is not None and _header_fault(header) is None


def _next_header(buf: Any, pos: int, end: int, past_member: bool) -> int | None:
    """The offset of the first plausible header from `pos` on, 512-aligned (GNU tar's "Skipping to next header"),
    or None when the archive ends first (two zero blocks: its end marker; or the end of the file). A lone zero block
    is member data (an uncompressed image's black rows). `past_member`: the first non-extension header found is the
    member a refused extension header described (its name or size unknown), passed over with its data."""
    zero_before = False
    for at, block in _blocks(buf, pos, end):
        if block == ZERO_BLOCK:
            if zero_before:
                return None
            zero_before = True
            continue
        zero_before = False
        if block[0] and _plausible_header(block):
            if not past_member:
                return at
            past_member = block[156:157] in EXTENSION_TYPES  # another extension of that member: still before it
    return None


def _blocks(buf: Any, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    """The whole 512-byte blocks from `pos` with their offsets, read from `buf` a window at a time."""
    while pos + BLOCK <= end:
        chunk = buf[pos : min(end, pos + TarBuffer.WINDOW)]
        whole = len(chunk) // BLOCK * BLOCK
        for offset in range(0, whole, BLOCK):
            yield pos + offset, chunk[offset : offset + BLOCK]
        pos += whole


def _skipped(fault: str, at: int, start: int, stop: int | None, end: int) -> SkippedRegion:
    """The one counted skip of a corrupt header at `at`: the byte range passed over, and where the walk resumes."""
    if stop is None:
        told = f"; no valid tar header follows: bytes {start} to {end} ({end - start} bytes) are passed over"
    else:
        told = f"; bytes {start} to {stop} ({stop - start} bytes) skipped to the next valid header, the walk goes on"
    return SkippedRegion(f"{fault} at byte {at}{told}", start, stop)


def _only_zeros_after(buf: Any, pos: int, end: int) -> bool:
    """Whether the file holds nothing but zeros from `pos` (an archive's end blocks and record padding)."""
    while pos < end:
        chunk = buf[pos : min(pos + TarBuffer.WINDOW, end)]
        if chunk.strip(b"\x00"):
            return False
        pos += len(chunk)
    return True


def iter_tar(buf: Any, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[TarMember | UnsafeArchive]:
    """Walk a tar archive held in `buf` (see open_tar): yield each safe regular member, or an
    UnsafeArchive for a refused one.

    A corrupt header (a bad checksum or number field, a bad pax record, two extension headers for one member) is
    ONE SkippedRegion ("corrupt_archive") naming the bytes passed over: the walk resumes at the next valid header
    (see _next_header), with nothing of what came before it (a pax size or name) carried over. A truncated archive,
    a global header renaming or resizing every member, and zero blocks followed by data after a resync end the walk
    (its detail says how much was not read). An extension header over EXTENSION_CAP is passed over by its size,
    and only the member it describes refused.
    """
    pos, end = 0, len(buf)
    resynced = False
    member_at = 0  # where the current member's first header (its extension headers included) starts
    pending_name: str | None = None
    pending_size: int | None = None
    pending_pax: dict[str, str] | None = None  # the records of the pax header before this member
    # why the member after an extension header over EXTENSION_CAP is refused, and whether its name was in it
    oversized: tuple[str, bool] | None = None
    while True:
        header = buf[pos : pos + BLOCK]
        if len(header) < BLOCK:
            if header.strip(b"\x00"):
                yield UnsafeArchive("corrupt_archive", f"truncated tar header at byte {pos}")
            elif pos == 0:  # an empty file: tar and tarfile refuse it too
                yield UnsafeArchive("corrupt_archive", "empty file, not a tar archive")
            elif not header:  # every writer ends an archive with zero blocks: the rest of it was cut off
                yield UnsafeArchive(
                    "corrupt_archive", f"tar archive ends at byte {pos} without its end blocks (cut short?)"
                )
            return
        if header == ZERO_BLOCK:
            # after a resync the end blocks may be those of a tar inside a member: tar ends there too, said here
            if resynced and not _only_zeros_after(buf, pos, end):
                yield UnsafeArchive("corrupt_archive", f"end-of-archive blocks at byte {pos}{_rest_unread(pos, end)}")
            return
        if pending_name is None and pending_pax is None and oversized is None:
            member_at = pos
        fault = _header_fault(header)
        past_member = False  # whether the skip passes over the member a refused extension header described
        if fault is None:
            size = _octal(header[124:136], "size")
            typeflag = header[156:157]
            if pending_size is not None and typeflag not in EXTENSION_TYPES:
                size = pending_size  # a pax header overrides the ustar size field
            data_at = pos + BLOCK
            pos = data_at + (size + BLOCK - 1) // BLOCK * BLOCK
            if pos > end:
                yield UnsafeArchive(
                    "corrupt_archive", f"tar member at byte {data_at - BLOCK} runs past the end of the file"
                )
                return
            if typeflag in EXTENSION_TYPES:
                fault = _extension_fault(typeflag, pending_pax, pending_name, oversized)
                past_member = typeflag != b"g"  # the member it describes is unknown (its name or size): passed over
                if fault is None:
                    # over the cap: passed over by its size (ending the walk there lost every later sample,
                    # uncounted); the member it describes is refused, counted, and the walk goes on
                    big = size > EXTENSION_CAP
                    if big and typeflag == b"L":  # the name is the data: never held, the member refused without it
                        oversized = f"oversized GNU long-name header ({size} bytes) at byte {data_at}", True
                        continue
                    data = b"" if big else bytes(buf[data_at : data_at + size])
                    if typeflag == b"L":
                        pending_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
                        continue
                    try:
                        records = _large_pax(buf, data_at, size) if big else _pax_records(data)
                        if typeflag == b"g":
                            try:
                                _check_global(records)
                            except ValueError as exc:  # every later member is another to tar: none can be walked
                                rest = _rest_unread(data_at - BLOCK, end)
                                yield UnsafeArchive(
                                    "corrupt_archive", f"bad pax header at byte {data_at} ({exc}){rest}"
                                )
                                return
                            continue  # what is left of a global header (a comment: git archive's) names no member
                        pending_size = _pax_size(records, pending_size)
                    except ValueError as exc:
                        fault = f"bad pax header ({exc})"
                    else:
                        if big:
                            oversized = f"oversized pax header ({size} bytes) at byte {data_at}", False
                        pending_pax = records
                        pending_name = records.get("GNU.sparse.name", records.get("path"))
                        continue
                at = data_at - BLOCK
        else:
            at, pos = pos, pos + BLOCK
        if fault is not None:  # a corrupt header: its member and any extension headers before it are passed over
            stop = _next_header(buf, pos, end, past_member)
            yield _skipped(fault, at, member_at, stop, end)
            if stop is None:
                return
            pos, resynced = stop, True
            pending_name = pending_size = pending_pax = oversized = None
            continue
        yield from _member(header, typeflag, size, data_at, buf, max_bytes, pending_name, pending_pax, oversized)
        pending_name = pending_size = pending_pax = oversized = None


def _extension_fault(typeflag: bytes, pending_pax, pending_name, oversized) -> str | None:
    """Two of pax `x` and GNU `L` before one member: GNU tar keeps one, tarfile another (x L: A, B)."""
    if typeflag != b"g" and (pending_pax is not None or pending_name is not None or oversized is not None):
        return "a second extension header for one member"
    return None


def _pax_size(records: dict[str, str], pending_size: int | None) -> int | None:
    if "size" not in records:
        return pending_size
    if not _DECIMAL.fullmatch(records["size"]):
        raise ValueError(f"size {records['size'][:40]!r} is not a plain decimal number")
    return int(records["size"])


def _member(
    header: bytes,
    typeflag: bytes,
    size: int,
    data_at: int,
    buf: Any,
    max_bytes: int,
    pending_name: str | None,
    pending_pax: dict[str, str] | None,
    refused: tuple[str, bool] | None,
) -> Iterator[TarMember | UnsafeArchive]:
    """The member a (non-extension) header describes, after every check: yielded, refused, or nothing (a folder)."""
    if pending_name is not None:
        name = pending_name
    else:
        name = header[:100].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:263] == b"ustar\x00" and header[345]:
            prefix = header[345:500].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            name = f"{prefix}/{name}"
    sparse = any(key.startswith(SPARSE_RECORD) for key in pending_pax or {})
    if typeflag == b"5":
        return  # directory entries carry no data
    if refused is not None:  # its sample sees the name taken (refused), unless the name was the oversized part
        why, name_lost = refused
        shown_name = "after it" if name_lost else repr(name)
        named = None if name_lost or not _plain_name(name) else name
        yield UnsafeArchive("corrupt_archive", f"{why}: the member {shown_name} is refused", named)
        return
    if typeflag not in REGULAR_TYPES or sparse:
        kind = "sparse file (pax GNU.sparse records)" if sparse else TYPE_NAMES.get(typeflag, f"type {typeflag!r}")
        detail = f"member {name!r} is a {kind}, only regular files are read"
        yield UnsafeArchive("unsafe_member", detail, name if _plain_name(name) else None)
        return
    try:
        check_member_name(name)
    except UnsafeArchive as exc:
        yield exc
        return
    if size > max_bytes:
        yield UnsafeArchive("member_too_large", f"member {name!r} is {size} bytes (cap {max_bytes})", name)
        return
    yield TarMember(name, size, data_at, buf)


def _plain_name(name: str) -> bool:
    try:
        check_member_name(name)
    except UnsafeArchive:
        return False
    return True


def split_key(name: str) -> tuple[str, str]:
    """WebDataset rule: key = path up to the first dot of the basename, extension lowercased."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_samples(
    buf: Any, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> Iterator[tuple[str, dict[str, TarMember]] | UnsafeArchive]:
    """Group adjacent members sharing a key: yield (key, {ext: member}) or a refused member.

    A key that comes back after other keys would give two samples the same id, and a member name that
    repeats in a sample two candidates for one file: either is refused whole as "duplicate_key". A copy
    refused on its own (over `max_bytes`, a link) still counts: a release indexes every copy, whatever
    its size, so ingest and release would each mean another one.

    A sample with members on both sides of a SkippedRegion (its .png before a corrupt header, its .json after)
    is one counted "incomplete_sample": the bytes between may have held more of it (another .json), so neither
    side is paired with the other.
    """
    key: str | None = None
    group: dict[str, TarMember] = {}
    exts: set[str] = set()  # of the sample's members, refused ones included
    seen: set[str] = set()
    refused: str | None = None
    torn: SkippedRegion | None = None  # the skip right before this member, while a sample was open at it
    for item in iter_tar(buf, max_bytes):
        if isinstance(item, UnsafeArchive):
            yield item
            if isinstance(item, SkippedRegion) and key is not None:
                torn = item
            if item.member is None:
                continue
        name = item.name if isinstance(item, TarMember) else item.member
        assert name is not None  # a refused member without a name went on above
        item_key, ext = split_key(name)
        if torn is not None and item_key == key:
            yield UnsafeArchive("incomplete_sample", straddles(item_key, torn))
            key, group, refused = None, {}, item_key
        torn = None
        if item_key == refused:
            continue  # the rest of a refused duplicate sample (or of one torn by a skip)
        if item_key != key:
            if group:
                assert key is not None  # a group fills only under its sample's key
                yield key, group
            key, group, exts = item_key, {}, set()
            if item_key in seen:
                yield UnsafeArchive("duplicate_key", f"member {name!r}: sample key {item_key!r} appears twice")
                key, refused = None, item_key
                continue
            seen.add(item_key)
        elif ext in exts:  # which copy is the sample's? ingest read the first, a release the last: neither
            yield UnsafeArchive("duplicate_key", f"member {name!r} appears twice in sample {item_key!r}")
            key, group, refused = None, {}, item_key
            continue
        exts.add(ext)
        if isinstance(item, TarMember):
            group[ext] = item
    if group:
        assert key is not None  # a group fills only under its sample's key
        yield key, group


def straddles(key: str, skip: SkippedRegion) -> str:
    return (
        f"sample {key!r} has members on both sides of the bytes skipped from byte {skip.start} to {skip.stop}"
        " (a corrupt header): some of it may be lost, none of it is paired"
    )


# ---------------------------------------------------------------- image headers
def check_image_pixels(head: bytes, name: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """The image's size from its header; refuse unreadable headers and decompression bombs (ours, and
    PIL's: an image it would not decode is `image_too_large` too, not `bad_image`)."""
    try:
        size = image_size(head, name)
    except (TooManyPixels, UnsupportedPixels) as exc:
        raise UnsafeArchive(exc.reason, str(exc)) from None
    if size is None:
        raise UnsafeArchive("bad_image", f"{name}: not a readable image header")
    if size[0] * size[1] > max_pixels:
        raise UnsafeArchive("image_too_large", f"{name}: {size[0]}x{size[1]} pixels exceeds the cap of {max_pixels}")
    return size


# ---------------------------------------------------------------- references
def make_ref(archive: Path | str, member: str) -> str:
    path = PurePosixPath(Path(archive).as_posix())
    if REF_SEPARATOR in str(path):  # parse_ref would split the reference inside the archive's own path
        raise DataError(f"{shown(str(path))}: a folder name ending in '!' cannot hold an archive ('!/' marks a member)")
    return f"{path}{REF_SEPARATOR}{member}"


def parse_ref(ref: str) -> tuple[Path, str | None]:
    """'a.tar!/x.png' -> (Path('a.tar'), 'x.png'); a plain path -> (Path, None)."""
    archive, sep, member = ref.partition(REF_SEPARATOR)
    return Path(archive), (member if sep else None)


@dataclass(frozen=True)
class Opened:
    """A file a caller opened ONCE, as a cache key: its version (device, inode, time, size) is compared, its
    descriptor `fd` and `path` (for messages) are only carried to the read, never opened by name again."""

    dev: int
    ino: int
    mtime_ns: int
    size: int
    fd: int = field(compare=False, hash=False)
    path: str = field(compare=False, hash=False)

    @classmethod
    def of(cls, file: BinaryIO, path: Path | str) -> Opened:
        found = os.fstat(file.fileno())
        return cls(found.st_dev, found.st_ino, found.st_mtime_ns, found.st_size, file.fileno(), str(path))


@functools.lru_cache(maxsize=4096)  # 8 shards: a release's rows, in id order, hop shards and walked one each time
def _tar_index(opened: Opened) -> dict[str, tuple[int, int] | None]:
    """member name -> (offset, size) of the safe regular members (cached per archive version); None for a
    name the archive holds more than once (any copies, links included): which one a row meant is unknown."""
    return _index_of(TarBuffer(opened.fd, opened.size, opened.path))


def _index_of(buf: Any) -> dict[str, tuple[int, int] | None]:
    index: dict[str, tuple[int, int] | None] = {}
    named: set[str] = set()
    for item in iter_tar(buf, max_bytes=1 << 62):  # sizes are checked per read
        name = item.name if isinstance(item, TarMember) else item.member
        if name is None:
            continue
        if name in named:
            index[name] = None
        elif isinstance(item, TarMember):
            index[name] = (item.offset, item.size)
        named.add(name)
    return index


def read_opened_member(file: BinaryIO, path: Path, member: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
    """read_member's tar member, from the shard `file` its caller opened ONCE and checked there
    (safe_paths.open_within: in its folder, a regular file, one name): read_member opens the shard by its name,
    and a link out, FIFO or hard link put at a shard's name was read as the release's own.
    Raises UnsafeArchive, or FileNotFoundError for a member the shard lacks."""
    check_member_name(member)
    return _member_at(_tar_index(Opened.of(file, path)), file.fileno(), path, member, max_bytes)


def _member_at(index: dict, fd: int, archive: Path, member: str, max_bytes: int) -> bytes:
    """The bytes of `member` of the tar open as `fd` (`index`: its _index_of)."""
    ref = f"{archive}{REF_SEPARATOR}{member}"
    if member not in index:
        raise FileNotFoundError(f"{ref}: no such regular member (or refused as unsafe)")
    entry = index[member]
    if entry is None:
        raise UnsafeArchive("duplicate_key", repeated(ref))
    offset, size = entry
    if size > max_bytes:
        raise UnsafeArchive("member_too_large", f"{ref}: {size} bytes (cap {max_bytes})")
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise ArchiveChanged(f"{archive}: the file shrank while it was read (member {member!r} cut short)")
    return data


@functools.lru_cache(maxsize=64)  # closed when dropped from the cache: 64 files open at most
def _open_zip(opened: Opened) -> tuple[zipfile.ZipFile, dict[str, int]]:
    """A zip opened once per version of the file, on its own copy of the caller's descriptor (the file checked,
    never its name again), and its names' copy counts: opened per member read, its directory was parsed for
    each (a 20,000-member zip: 68 ms a read, quadratic in its members)."""
    zf = zipfile.ZipFile(os.fdopen(os.dup(opened.fd), "rb"))  # the copy closes when the cache drops the ZipFile
    counts: dict[str, int] = {}  # a name held twice is refused, whichever copy zipfile would read
    for info in zf.infolist():
        counts[info.filename] = counts.get(info.filename, 0) + 1
    return zf, counts


def read_member(ref: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES, check: Callable | None = None) -> bytes:
    """Bytes of the file a reference names: 'archive.tar!/member', 'archive.zip!/member' or a plain path.

    The file is opened ONCE, never waited on (a FIFO blocked the open in C, deaf to Ctrl-C), checked on what
    was opened (a regular file) and read from that open (read_opened): it was checked by name, then opened by
    name again, and a FIFO or another file swapped in between was what was read.
    `check(file, path)`: of the file opened, before a byte is read (release: in its source's folders).
    Raises UnsafeArchive (with `.reason`) or FileNotFoundError.
    """
    from scripts.lib.side_files import open_regular

    archive, member = parse_ref(ref)
    try:
        file = open_regular(archive)
    except DataError:  # a FIFO, folder, socket or device: counted, as before
        raise UnsafeArchive("not_a_regular_file", f"{archive}: not a regular file (a FIFO, socket or device)") from None
    with file:
        if check is not None:
            check(file, archive)
        return read_opened(file, archive, member, max_bytes)


def read_opened(file: BinaryIO, archive: Path, member: str | None, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
    """read_member's bytes (the plain file, or its member `member`) from the file `file` its caller opened ONCE
    and checked there: nothing is read by name. Re-validates the member name, its type (regular file) and its
    size against `max_bytes`. Raises UnsafeArchive or FileNotFoundError."""
    if member is None:
        if os.fstat(file.fileno()).st_size > max_bytes:
            raise UnsafeArchive("member_too_large", f"{archive}: larger than {max_bytes} bytes")
        data = file.read(max_bytes + 1)
        if len(data) > max_bytes:  # grown since the fstat
            raise UnsafeArchive("member_too_large", f"{archive}: larger than {max_bytes} bytes")
        return data
    check_member_name(member)
    if archive.suffix.lower() != ".zip":  # PART-1.ZIP too
        return read_opened_member(file, archive, member, max_bytes)
    try:
        zf, counts = _open_zip(Opened.of(file, archive))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError) as exc:
        raise UnsafeArchive("corrupt_archive", f"{archive}: not a readable zip ({type(exc).__name__})") from None
    ref = f"{archive}{REF_SEPARATOR}{member}"
    if member not in counts:
        raise FileNotFoundError(f"{ref}: no such member")
    if counts[member] > 1:
        raise UnsafeArchive("duplicate_key", repeated(ref))
    return read_zip_member(zf, zf.getinfo(member), max_bytes)


def repeated(ref: str) -> str:
    return f"{ref}: the archive holds this name more than once (which copy is meant is unknown)"


def check_sha256(ref: str, data: bytes, recorded) -> None:
    """A row that records its image's sha256 (`image_sha256`: a rendered image's, from generate's manifest)
    takes only those bytes: another image under its name (a hard link to a photo elsewhere, a copy, an
    edit, the same pixels saved again) is refused in one line naming it. No record: nothing to compare."""
    if isinstance(recorded, str) and hashlib.sha256(data).hexdigest() != recorded:
        raise DataError(
            f"{shown(ref)}: not the image its row records (its sha256 is not the one generate recorded: "
            "replaced or edited since); restore it, or run generate again"
        )


# A zip member's file type, as a Unix zip records it in the high bits of its external attributes (0: none recorded).
# A member marked a FIFO, device, socket or folder, bytes and all, was read as an image at exit 0
ZIP_FILE_TYPES = {0o010000: "a FIFO", 0o020000: "a character device", 0o040000: "a folder"}
ZIP_FILE_TYPES |= {0o060000: "a block device", 0o140000: "a socket"}


def read_zip_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES, head: int = 0
) -> bytes:
    """A zip member's bytes (or, with `head`, its pixels.image_head of that limit), refusing unsafe names and bombs.

    The declared size is checked first, and at most max_bytes + 1 bytes are ever inflated, so a
    member lying about its size is caught too.
    """
    check_member_name(info.filename)
    if info.is_dir():
        raise UnsafeArchive("unsafe_member", f"member {info.filename!r} is a directory")
    mode = (info.external_attr >> 16) & 0o170000
    if mode == 0o120000:
        raise UnsafeArchive("unsafe_member", f"member {info.filename!r} is a symlink")
    if mode not in (0, 0o100000):  # as a tar's FIFO or device member is refused: unzip or bsdtar makes one
        kind = ZIP_FILE_TYPES.get(mode, f"of file type {mode:o}")
        raise UnsafeArchive("unsafe_member", f"member {info.filename!r} is {kind}, only regular files are read")
    if info.file_size > max_bytes:
        raise UnsafeArchive("member_too_large", f"member {info.filename!r} is {info.file_size} bytes (cap {max_bytes})")
    try:
        with zf.open(info) as f:
            data = image_head(stream_reader(f), head) if head else f.read(max_bytes + 1)
    except NotImplementedError:  # Deflate64, implode, ...: methods zipfile cannot inflate
        raise UnsafeArchive(
            "unreadable_member",
            f"member {info.filename!r} uses an unsupported compression method ({info.compress_type})",
        ) from None
    except RuntimeError:  # "File ... is encrypted, password required for extraction"
        raise UnsafeArchive("unreadable_member", f"member {info.filename!r} is encrypted") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:  # bad CRC, corrupt or cut data
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UnsafeArchive("corrupt_archive", f"member {info.filename!r} is corrupt ({detail})") from None
    if len(data) > max_bytes:
        raise UnsafeArchive("member_too_large", f"member {info.filename!r} inflates beyond {max_bytes} bytes")
    return data


def read_image(
    ref: str, root: Path | str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
):
    """Decode the image a reference names (PIL.Image, RGB), after the size and pixel caps. The file (the image,
    or the archive of 'x.tar!/m.png') is opened ONCE under `root`, the folder the reference came from, and
    checked there (safe_paths.open_within: in `root` by what its descriptor names, a regular file, one name
    unless DVC's cache.type hardlink left it): read by name with no root, a `..`, an absolute path, a link
    out, a hard link to a file elsewhere or a FIFO named by a row was read (or waited on)."""
    data = _confined_bytes(ref, Path(root), max_bytes)
    check_image_pixels(data[:65536] if data[:8] == b"\x89PNG\r\n\x1a\n" else data, ref, max_pixels)
    with opened(io.BytesIO(data), ref) as img:
        return img.convert("RGB")


def _confined_bytes(ref: str, root: Path, max_bytes: int) -> bytes:
    """The bytes `ref` names under `root`, from one open checked by open_within (DataError for a path out of
    it, a FIFO or a shared file; FileNotFoundError the caller's)."""
    from scripts.lib.dvc_cache import is_cache_copy
    from scripts.lib.safe_paths import open_within

    archive, member = parse_ref(ref)  # named as the rows name it (from the working folder), lying under `root`
    with open_within(archive, root, one_name=True, links_ok=is_cache_copy, where=ref) as file:
        return read_opened(file, archive, member, max_bytes)
