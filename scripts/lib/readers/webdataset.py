"""kind: bucketed_webdataset - manifest.json (bucketed_shards_v1) + buckets/<bucket_id>/shard-NNNNNN.tar.

Per sample (WebDataset: adjacent members sharing a key): <key>.jpg, <key>.txt (newline-terminated
caption, the prompt), <key>.json (target_w/target_h or w/h, bucket_id, caption_* fields).

The manifest's `buckets` is a mapping bucket_id -> {scaled, base_resolution, shards, ...} (the card's
shape, and what scripts/lib/bucketed.py writes) or a list of {bucket_id, shards}; a shard is listed as
a path relative to the export folder or as {"path": ...}. Without any listing, buckets/*/shard-*.tar.
The record's width/height are the bucket target (target_w/target_h): under image_mode=passthrough_jpeg
the stored JPEG keeps its own size and the loader resizes and crops.
"""

from __future__ import annotations

import codecs
import functools
import os
import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.lib.archive import UnsafeArchive, iter_samples, make_ref, open_tar
from scripts.lib.errors import DataError, quoted, shown_short
from scripts.lib.io import bounded_bytes, present_file
from scripts.lib.nesting import loads_json
from scripts.lib.pixels import image_head
from scripts.lib.readers.base import (
    LINK_HINT,
    NAME_SHOWN,
    Problem,
    Record,
    SourceConfig,
    check_confined,
    check_distinct,
    decode,
    head_pixels,
    link_under,
    matches,
    native_name,
)
from scripts.lib.text_lines import without_line_end

MANIFEST_FORMAT = "bucketed_shards_v1"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
META_FIELDS = ["caption_variant", "caption_selector_index", "caption_source_id"]
# manifest.json lists each shard in about 60 bytes: 64 MiB is a million shards, of a thousand samples each. Read
# whole before anything is checked, a multi-gigabyte manifest (or /dev/zero linked in) took all memory.
MAX_MANIFEST_BYTES = 64 << 20


def manifest_shards(root: Path, follow_symlinks: bool = False) -> list[Path]:
    """Shard paths listed by the manifest (or buckets/*/shard-*.tar), each checked to stay inside root
    (and, unless `follow_symlinks`, to reach no file through a symbolic link)."""
    manifest_file = check_confined(root / "manifest.json", root, follow_symlinks)
    if not present_file(manifest_file):  # a FIFO, folder or device there is one line saying so
        raise DataError(f"{manifest_file}: not found (bucketed WebDataset export)")
    try:
        manifest = loads_json(bounded_bytes(manifest_file, MAX_MANIFEST_BYTES).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep; not UTF-8 a ValueError
        raise DataError(f"{manifest_file}: malformed JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{manifest_file}: format is not {MANIFEST_FORMAT!r}")
    listed = []
    for number, bucket in enumerate(manifest_buckets(manifest.get("buckets"), manifest_file)):
        shards = bucket.get("shards", [])
        if not isinstance(shards, list):
            raise DataError(
                f"{manifest_file}: buckets[{number}].shards is a {type(shards).__name__}, expected a list of paths"
            )
        listed += [shard.get("path") if isinstance(shard, dict) else shard for shard in shards]
    if not listed:
        found = [
            shard
            for bucket in matches(root, "buckets")
            for folder in matches(bucket, "*")
            for shard in matches(folder, "shard-*.tar")
        ]
        return [check_confined(path, root, follow_symlinks) for path in found]
    return listed_shards(root, listed, manifest_file, follow_symlinks)


def listed_shards(root: Path, listed: list, manifest_file: Path, follow_symlinks: bool) -> list[Path]:
    """The manifest's shard names as paths under `root`, checked by their text (no `..`, not absolute) and, unless
    `follow_symlinks`, each folder on their way once for a link; a shard that is itself a link is refused where it
    is opened (opened_shard). Each shard walked through pathlib and lstat'ed part by part cost 250 us: a manifest
    of a million shards took 164 s and 836 MB before a byte was read."""
    top = Path(os.path.normpath(root))
    folder_links: dict[str, Path | None] = {}
    shards = []
    for name in listed:
        if not isinstance(name, str) or not name:
            raise DataError(f"{manifest_file}: shard path {quoted(name)} is not a path")
        if name.startswith("/") or ".." in name.replace("\\", "/").split("/"):
            raise DataError(f"{manifest_file}: shard path {quoted(name, NAME_SHOWN)} leaves the export folder")
        relative = posixpath.normpath(name)
        folder = posixpath.dirname(relative)
        if not follow_symlinks and folder not in folder_links:
            folder_links[folder] = _link_on_the_way(top / folder, top)
        if folder_links.get(folder) is not None:
            raise DataError(f"{folder_links[folder]}: is a symbolic link; {LINK_HINT}")
        shards.append(top / relative)
    return shards


def _link_on_the_way(folder: Path, top: Path) -> Path | None:
    try:
        return link_under(folder, top)
    except OSError as exc:  # a name from the data past NAME_MAX or PATH_MAX
        raise DataError(f"{shown_short(str(folder), NAME_SHOWN)}: {exc.strerror}") from None


def opened_shard(shard: Path, follow_symlinks: bool) -> None:
    """A one-line DataError unless `shard` is a regular file there, and, unless `follow_symlinks`, no link: the
    shard's own check, one stat where it is opened (its folders were checked once each: listed_shards)."""
    try:
        mode = (os.stat if follow_symlinks else os.lstat)(shard).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in its name
        raise DataError(f"{shown_short(str(shard), NAME_SHOWN)}: shard listed in manifest.json not found") from None
    except OSError as exc:  # a name past NAME_MAX or PATH_MAX
        raise DataError(f"{shown_short(str(shard), NAME_SHOWN)}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise DataError(f"{shard}: is a symbolic link; {LINK_HINT}")
    if not stat.S_ISREG(mode):
        raise DataError(f"{shard}: shard listed in manifest.json not found")


def manifest_buckets(buckets: Any, manifest_file: Path) -> list[dict]:
    """The manifest's `buckets` (a mapping bucket_id -> bucket, or a list of buckets; absent: none) as a list of
    mappings. A bucket that is no mapping is one line: one was passed over, its shards' rows lost at exit 0, and a
    manifest of such buckets only (`"buckets": ["a"]`) read as one listing nothing, so every buckets/*/shard-*.tar,
    the ones it did not name too, was read."""
    if buckets is None:
        return []
    if not isinstance(buckets, (dict, list)):
        raise DataError(f"{manifest_file}: 'buckets' is a {type(buckets).__name__}, expected a list of buckets")
    named = list(buckets.items()) if isinstance(buckets, dict) else list(enumerate(buckets))
    for key, bucket in named:
        if not isinstance(bucket, dict):
            raise DataError(
                f"{manifest_file}: bucket {shown_short(repr(key))} is a {type(bucket).__name__} "
                f"({shown_short(repr(bucket), 40)}), expected a mapping holding its shards"
            )
    return [dict(bucket, bucket_id=key) for key, bucket in named] if isinstance(buckets, dict) else list(buckets)


def read_bucketed_webdataset(cfg: SourceConfig, info: dict) -> Iterator[Record | Problem]:
    root = Path(cfg.path)
    shards = manifest_shards(root, cfg.follow_symlinks)
    natives = native_names(shards, root)
    names = [native.removeprefix("buckets/") for native in natives]  # as shard_name, without pathlib per shard
    check_distinct(list(zip(names, natives)), root / "manifest.json", "shard")
    info["shards"] = len(shards)
    for shard, name in zip(shards, names):
        opened_shard(shard, cfg.follow_symlinks)
        with open_tar(shard) as buf:
            for item in iter_samples(buf, cfg.max_member_bytes):
                if isinstance(item, UnsafeArchive):
                    yield Problem(shard, "", item.reason, str(item))
                    continue
                yield _sample(shard, name, *item, cfg)


def native_names(shards: list[Path], root: Path) -> list[str]:
    """native_name of each shard (all under `root`, a folder), by their text: pathlib's relative_to per shard
    was most of a large manifest's cost."""
    top = os.path.normpath(root) + "/"
    names = [os.path.normpath(shard) for shard in shards]
    return [name[len(top) :] if name.startswith(top) else native_name(Path(name), root) for name in names]


def shard_name(shard: Path, root: Path) -> str:
    """The shard's part of its rows' keys: its path under the export, less the layout's `buckets/`
    (`<bucket_id>/shard-000000.tar`): unique per shard, wherever a manifest puts it."""
    return native_name(shard, root).removeprefix("buckets/")


def _sample(shard: Path, shard_key: str, key: str, members: dict, cfg: SourceConfig) -> Record | Problem:
    where = f"sample {key!r}"
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
    if image_ext is None or "txt" not in members or "json" not in members:
        return Problem(shard, where, "incomplete_sample", f"needs an image, .txt and .json, has {sorted(members)}")
    try:
        meta = loads_json(members["json"].read().decode("utf-8"))
    except UnicodeDecodeError:
        return Problem(shard, where, "not_utf8", "json member is not UTF-8")
    except (ValueError, RecursionError) as exc:
        return Problem(shard, where, "bad_json", f"malformed json ({str(exc).splitlines()[0]})")
    if not isinstance(meta, dict):
        return Problem(shard, where, "bad_json", "json member is not an object")
    width, height = meta.get("target_w", meta.get("w")), meta.get("target_h", meta.get("h"))
    if not (isinstance(width, int) and isinstance(height, int)) or isinstance(width, bool) or isinstance(height, bool):
        return Problem(shard, where, "bad_size", "json has no integer target_w/target_h or w/h")
    image, txt = members[image_ext], members["txt"]
    if txt.size > cfg.max_prompt_bytes:  # a text source's line is capped so; a 20 MB caption went into the table
        return Problem(shard, where, "line_too_long", f".txt is {txt.size:,} bytes, over max_prompt_bytes")
    try:  # its head only (every reader's): the whole image was copied out of the shard to read its size
        pixels = head_pixels(functools.partial(image_head, image.read_at), image.name, cfg.max_image_pixels)
    except UnsafeArchive as exc:
        return Problem(shard, where, exc.reason, str(exc))
    # its newline-terminated line, as a text source's line: a UTF-8 byte order mark and a Windows "\r\n" are
    # no part of the caption (UTF-16's mark is not UTF-8: the record check refuses it)
    caption = without_line_end(decode(txt.read().removeprefix(codecs.BOM_UTF8)))
    kept = {name: meta.get(name) for name in META_FIELDS}
    kept.update(bucket_id=meta.get("bucket_id") or shard.parent.name, key=key, pixels=list(pixels))
    return Record(
        key=f"{shard_key}/{key}",
        prompt=caption,
        image=make_ref(shard, image.name),
        width=width,
        height=height,
        meta=kept,
        file=shard,
        where=where,
    )
