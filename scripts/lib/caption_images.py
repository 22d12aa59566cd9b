"""Which images caption@S reads, and what it may send of each: a manifest's files (confined to the folder),
image files, or WebDataset samples (headers only, nothing extracted); symbolic links skipped, and a file with
another hard link unless that name is generate's store entry for the image or DVC's cache copy. Read only."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scripts.lib.archive import (
    REF_SEPARATOR,
    UnsafeArchive,
    check_image_pixels,
    iter_samples,
    make_ref,
    open_tar,
    parse_ref,
    read_opened,
)
from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.io import file_kind
from scripts.lib.params import CaptionEntry
from scripts.lib.pixels import opened
from scripts.lib.safe_paths import (
    PIPELINE_STORE,
    STORE_KEY,
    confined_file,
    dvc_cache_of,
    inside,
    is_store_entry,
    leads_out,
    open_regular,
    opened_once,
    opened_real_path,
    stored_name,
)

MANIFEST = "manifest.parquet"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif")  # the formats OpenAI-compatible servers take
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class ImageInfo:
    id: str
    ref: str  # a path, or "shard.tar!/member" (scripts/lib/archive.py)
    sha256: str
    mime: str
    width: int
    height: int
    stored: str | None = None  # Listed.stored


@dataclass(frozen=True)
class Listed:
    id: str
    ref: str
    stored: str | None = None  # the generation store's entry for this image (its generate manifest's key), if any


def list_images(folder: Path) -> tuple[list[Listed], Counter]:
    """Every image under `folder`, sorted by id, and the count of what was passed over, per reason."""
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder not found (run its upstream stage first)")
    skipped: Counter = Counter()
    manifest = folder / MANIFEST
    if os.path.lexists(manifest):
        return _manifest_images(folder, own_manifest(manifest)), skipped
    listed: list[Listed] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            skipped["symlink"] += 1
            continue
        ext = path.suffix.lower().lstrip(".")
        if not regular_file_listed(path, ext, skipped):
            continue
        if REF_SEPARATOR in rel:  # "x!/y.jpg" reads as member y.jpg of an archive x (read_image)
            skipped["ambiguous_name"] += 1
            continue
        if ext in IMAGE_EXTS:
            listed.append(Listed(rel, path.as_posix()))
        elif ext == "tar":
            listed.extend(_tar_images(folder, path, skipped))
    return sorted(listed, key=lambda image: image.id), skipped


def regular_file_listed(path: Path, ext: str, skipped: Counter) -> bool:
    """Whether `path` (no link) is a regular file to read. A FIFO, socket or device named as an image or a shard
    (`x.png`, `x.tar`) is counted `not_a_regular_file`, as read_member counts one: it was passed over uncounted,
    an image missing from the report; a folder is walked, and any other name passed over, as a regular one is."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:  # gone since it was listed
        return False
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode) and (ext in IMAGE_EXTS or ext == "tar"):
        skipped["not_a_regular_file"] += 1
    return stat.S_ISREG(mode)


def own_manifest(manifest: Path) -> Path:
    """The manifest when it is a regular file of the images folder itself: a link (to a table elsewhere)
    was followed and its rows captioned, while the images it names were confined to the folder."""
    mode = os.lstat(manifest).st_mode
    dvc_cache = dvc_cache_of(manifest.parent)
    if stat.S_ISLNK(mode) and dvc_cache is not None and inside(os.path.realpath(manifest), dvc_cache):
        return manifest  # a DVC checkout with cache.type symlink: the table is DVC's own copy
    if stat.S_ISLNK(mode):
        raise DataError(
            f"{shown(manifest)}: a symbolic link (to {shown_short(os.readlink(manifest))}); the manifest is read "
            "only as a regular file in the images folder"
        )
    if not stat.S_ISREG(mode):
        raise DataError(f"{shown(manifest)}: is {file_kind(mode)}, not a regular file; refusing to read it")
    return opened_once(manifest, lambda: _open_manifest(manifest))  # read by the same rule where it is opened


def _open_manifest(manifest: Path) -> BinaryIO:
    """The manifest opened once as own_manifest allows it: the folder's own file (no link followed: O_NOFOLLOW),
    or a link into DVC's cache, checked again by what the descriptor names. A link swapped in after
    own_manifest's look was followed, and its table's rows captioned."""
    dvc_cache = dvc_cache_of(manifest.parent)
    linked = dvc_cache is not None and os.path.islink(manifest)
    file = open_regular(manifest, follow=linked)
    if linked and not inside(opened_real_path(file, manifest), str(dvc_cache)):
        file.close()
        raise DataError(f"{shown(manifest)}: a symbolic link out of DVC's cache; the manifest is read only as its own")
    return file


def _manifest_images(folder: Path, manifest: Path) -> list[Listed]:
    from scripts.lib.tables import check_table, read_parquet

    frame = read_parquet(manifest)
    # a null id or file (a traceback at sorting or at the path check) is one line naming its row
    check_table(frame, manifest, strings=("id", "file"), unique="id", present=("file",))
    keys = frame["key"] if "key" in frame.columns else [None] * len(frame)
    listed = []
    for row, (image_id, name, key) in enumerate(zip(frame["id"], frame["file"], keys), start=1):  # rows from 1
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise DataError(f"{shown(manifest)}: row {row}: file {shown_short(repr(name))} leaves the images folder")
        # resolved where it is read: a link in the folder pointing out of it is refused too
        path = confined_file(folder, name, f"{manifest}: row {row}").as_posix()
        listed.append(Listed(image_id, path, store_entry(key, name)))
    return sorted(listed, key=lambda image: image.id)


def store_entry(key: object, name: str) -> str | None:
    """The generation store's entry for a generate manifest row's image (its render key), where generate's
    image may be a hard link to; None for a row with no key (a manifest of the user's)."""
    if not isinstance(key, str) or not STORE_KEY.fullmatch(key):
        return None
    return (PIPELINE_STORE / stored_name(key, name)).as_posix()


def _tar_images(folder: Path, shard: Path, skipped: Counter) -> list[Listed]:
    """The image of each WebDataset sample of a shard (headers only; nothing is extracted)."""
    listed = []
    rel = shard.relative_to(folder).as_posix()
    try:
        with open_tar(shard) as buf:
            for item in iter_samples(buf, max_bytes=1 << 62):  # sizes are checked when an image is read
                if isinstance(item, UnsafeArchive):
                    skipped[item.reason] += 1
                    continue
                _, members = item
                ext = next((ext for ext in IMAGE_EXTS if ext in members), None)
                if ext is not None:
                    member = members[ext].name
                    listed.append(Listed(f"{rel}{REF_SEPARATOR}{member}", make_ref(shard, member)))
    except UnsafeArchive as exc:
        skipped[exc.reason] += 1
    return listed


def inspect_image(image: Listed, params: CaptionEntry) -> ImageInfo:
    """sha256, type and size of an image, after the byte and pixel caps; UnsafeArchive (with the
    counted reason) when it cannot be sent."""
    data = read_image(image.ref, params, image.stored)
    return _info(image, data, params)


def read_image(ref: str, params: CaptionEntry, stored: str | None = None) -> bytes:
    """The bytes of the image `ref` names, from the file opened ONCE and checked there (confined_open): the
    folder check was of the name (realpath), and a link out or a FIFO swapped in before the open was read; an
    archive's member was read by name again (read_member) until round 35b. `stored`: Listed.stored."""
    confine(ref, Path(params.images))
    archive, member = parse_ref(ref)
    try:
        with confined_open(archive, Path(params.images), ref, stored) as file:
            return read_opened(file, archive, member, params.max_image_bytes)  # never by name: from this open
    except FileNotFoundError:
        raise DataError(f"{ref}: image not found (the images folder changed while it was captioned)") from None
    except OSError as exc:
        raise DataError(f"{ref}: cannot read image ({exc.strerror or exc})") from None


def confine(ref: str, root: Path) -> None:
    """UnsafeArchive when the reference can also name a plain file: "x!/y.jpg" opened y.jpg of whatever x
    linked to, outside the folder. Where the file lies is checked on its open (confined_open)."""
    archive, member = parse_ref(ref)
    if member is not None and os.path.lexists(ref):
        raise UnsafeArchive("ambiguous_name", f"{ref}: both a file and a member of {archive}")


def confined_open(archive: Path, root: Path, ref: str, stored: str | None = None) -> BinaryIO:
    """The file of a reference (the archive of "a.tar!/m", or the plain file) opened once, never waited on,
    and UnsafeArchive unless it is a regular file inside the images folder after every link, as its
    descriptor names it, with one name or a hard link generate or DVC made (check_own_file)."""
    try:
        file = open_regular(archive)
    except DataError:  # a FIFO, folder or device: counted, as read_member counts one
        raise UnsafeArchive("not_a_regular_file", f"{archive}: not a regular file (a FIFO, socket or device)") from None
    try:
        check_own_file(file, archive, root, ref, stored)
    except BaseException:
        file.close()
        raise
    return file


def check_own_file(file: BinaryIO, archive: Path, root: Path, ref: str, stored: str | None = None) -> None:
    """UnsafeArchive unless the opened `file` lies in `root` (by its descriptor) and is the folder's own: one
    name, or a hard link generate made (`stored`, the store's entry for this very image) or DVC's cache.type
    hardlink made. Any other hard link keeps its name in the folder, so no path check sees it: a user's file
    linked in from elsewhere (a key, a private photo) was captioned, sent to the API."""
    real = opened_real_path(file, archive)
    if leads_out(archive, root, real=real):
        raise UnsafeArchive("outside_images_folder", f"{ref}: leaves the images folder {root}")
    status = os.fstat(file.fileno())  # the file read, never a second look by name
    if status.st_nlink > 1 and not _links_made_here(status, real, stored):
        raise UnsafeArchive(
            "hard_link",
            f"{shown(ref)}: has another hard link, neither generate's store entry for this image nor DVC's cache "
            "copy; not read",
        )


def _links_made_here(status: os.stat_result, real: str, stored: str | None) -> bool:
    """Whether the opened file's other name is the store's entry for its image, or DVC's cache copy of it."""
    from scripts.lib.dvc_cache import is_cache_copy

    return (stored is not None and is_store_entry(status, stored)) or is_cache_copy(real, opened=status)


def _info(image: Listed, data: bytes, params: CaptionEntry) -> ImageInfo:
    check_whole(data, image.ref)  # before PIL parses the header: a flood of JPEG segments is kept in memory there
    width, height = check_image_pixels(data, image.ref, params.max_image_pixels)
    try:
        with opened(io.BytesIO(data), image.ref) as img:
            fmt = img.format
    except MemoryError:  # a memory limit is no bad image to skip and count
        raise
    except Exception:
        raise UnsafeArchive("bad_image", f"{image.ref}: not a readable image") from None
    if fmt not in MIME:
        raise UnsafeArchive("unsupported_format", f"{image.ref}: {fmt} (servers take {', '.join(MIME)})")
    return ImageInfo(image.id, image.ref, hashlib.sha256(data).hexdigest(), MIME[fmt], width, height, image.stored)


# ---------------------------------------------------------------- whole files (the bytes sent, never decoded)

MAX_JPEG_SEGMENTS = 4096  # before the first scan; a camera writes dozens (ICC and XMP split in 64 KiB parts)
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers with no length: TEM, RST0-7


def check_whole(data: bytes, ref: str) -> None:
    """UnsafeArchive for a JPEG, PNG or GIF cut short (no end of image after its pixels) or a JPEG of more than
    MAX_JPEG_SEGMENTS segments before its pixels. Caption sends the bytes as they are, never decoded: a cut file
    was sent, and a server refusing it (HTTP 400) failed the stage for every image; PIL kept each of a JPEG's
    segments in a list (a 16 MB file of 4 million: 600 MB and 24 s). Any other bytes are PIL's to read."""
    if data[:3] == b"\xff\xd8\xff":
        whole = _jpeg_whole(data, ref)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        whole = _png_whole(data)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        whole = _gif_whole(data)
    else:
        return
    if not whole:
        raise UnsafeArchive("truncated_image", f"{ref}: cut short (no end of image after its pixels)")


def _jpeg_whole(data: bytes, ref: str) -> bool:
    """Whether the JPEG's segments lead to a scan and an end of image (EOI) after it. Scan data cannot hold
    FF D9 (a coded FF is followed by 00), so a cut scan has none; bytes after the EOI (a motion photo's video,
    an MPO's second picture) are left as they are."""
    at, segments = 2, 0
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return False  # not a marker where one must be: PIL would read a broken file
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise UnsafeArchive("bad_image", f"{ref}: over {MAX_JPEG_SEGMENTS} JPEG segments before its pixels")
        if marker in JPEG_STANDALONE:
            at += 2
            continue
        if marker == 0xD9:  # an end of image before any scan
            return False
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker == 0xDA:  # start of scan: the entropy-coded data, then more scans or the EOI
            return data.find(b"\xff\xd9", end) >= 0
        at = end
    return False


def _png_whole(data: bytes) -> bool:
    """Whether the PNG's chunks (their lengths, not their contents) run whole to its IEND."""
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        at += 12 + length
        if kind == b"IEND":
            return at <= len(data)
    return False


def _gif_whole(data: bytes) -> bool:
    """Whether the GIF's blocks (extensions, frames, each of sub-blocks) run whole to its trailer (3B)."""
    at = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)
    while at < len(data):
        kind = data[at]
        if kind == 0x3B:
            return True
        if kind == 0x21:  # an extension: its label, then sub-blocks
            at += 2
        elif kind == 0x2C:  # a frame: its descriptor, any local colour table, the LZW code size, then sub-blocks
            if at + 10 > len(data):
                return False
            flags = data[at + 9]
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return False
        while at < len(data) and data[at]:  # sub-blocks up to an empty one
            at += data[at] + 1
        at += 1
    return False
