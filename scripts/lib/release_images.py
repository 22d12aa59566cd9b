"""Where a release's images are, read back from what its export wrote (rows.parquet's `image`, sha256 and size)
and by publish: every image file, tar shard and parquet part opened ONCE, checked there (safe_paths.open_within:
in the release, a regular file), so a link out, a FIFO or a folder put in the release is one line naming it.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from scripts.lib.dvc_cache import is_cache_copy
from scripts.lib.errors import DataError, quoted, shown
from scripts.lib.safe_paths import IMAGE_EXTENSIONS, Roots, dvc_cache_of, inside, open_within, opened_real_path
from scripts.lib.shards import key_id
from scripts.lib.tables import part_images

IMAGE_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)

# A check of the file an image was read from, by what its descriptor names (read_member's `check`)
OpenedCheck = Callable[[BinaryIO, Path], None]


class SourceRoots:
    """Where each source's images may be (recipe.source_roots: params.yaml's sources.S.images and path), checked
    on the file each image is read from. The rows were checked by name when read, and the writers read each image
    by name again: a link out (or a `..` of a folder swapped for a link) put at an image's name in between was
    exported as the release's own. A link inside the folders, a hard link (DVC's cache.type hardlink) stay."""

    def __init__(self, roots: dict[str, list[Path]]):
        self.roots = {source: Roots(folders) for source, folders in roots.items()}

    def check(self, row_id, source) -> OpenedCheck:
        """The check of the opened image file of row `row_id` of `source`: in its source's folders."""
        roots = self.roots.get(source) or Roots([])

        def in_roots(file: BinaryIO, path: Path) -> None:
            if not roots.holds(path, opened_real_path(file, path)):
                where = ", ".join(shown(root) for root in roots.roots) or "none in params.yaml"
                raise DataError(
                    f"{shown(path)}: image of row {quoted(row_id)} (source {quoted(source)}) leads out of "
                    f"its source's folders ({where}); refusing to read it"
                )

        return in_roots


def check_folder_links(sources: dict, names) -> None:
    """Refuse a source's `images` or `path` (params.yaml) that is itself a link leading out of the repository:
    its target became the root every image was checked in, so a link to /etc or the user's home released
    what lies there. A link inside the repository (or beside the link, as its folder resolves: data/ on
    another disk), or into DVC's cache, stays."""
    repository = os.path.realpath(".")
    for name in names:
        for key in ("images", "path"):
            given = getattr(sources[name], key, None)
            if not given or not os.path.islink(given):
                continue
            real, beside = os.path.realpath(given), os.path.realpath(os.path.dirname(os.path.abspath(given)))
            if inside(real, repository) or inside(real, beside):
                continue
            cache = dvc_cache_of(".")  # only now: the lookup opens the DVC repository
            if cache is not None and inside(real, cache):
                continue
            raise DataError(
                f"params.yaml: sources.{name}.{key}: {shown(given)} is a link to {shown(real)}, outside the "
                "repository; refusing to release what it holds (name the folder itself)"
            )


@contextmanager
def of_row(row_id, source) -> Iterator[None]:
    """A refusal of a row's image that names the file only (a folder, FIFO or 0-byte file at its name, worded
    by open_regular, read_member or check_recorded, by layout) names the row id and its source too."""
    try:
        yield
    except DataError as exc:
        if len(exc.args) == 1 and "image of row " not in str(exc):  # SourceRoots.check names it already
            exc.args = (f"{exc.args[0]} (image of row {quoted(row_id)}, source {quoted(source)})",)
        raise


def image_bytes(ref: str, check: OpenedCheck | None = None) -> bytes:
    """The stored bytes of an image: a file, or a member of an archive ('x.tar!/m.png'); `check`: of the file
    opened (SourceRoots.check)."""
    from scripts.lib.archive import UnsafeArchive, read_member

    try:
        return read_member(ref, check=check)
    except FileNotFoundError:
        raise DataError(shown(f"{ref}: image not found")) from None
    except UnsafeArchive as exc:
        raise DataError(shown(f"{ref}: refused ({exc.reason})")) from None


def locate_images(release_dir: Path, split: str) -> dict[str, tuple[str, str, int]]:
    """id -> (reference relative to the release, sha256, bytes) of every image under release_dir/split: image
    files `<id>.<ext>`, image members of tar shards and the embedded images of parquet parts. Each is read from
    one open, checked there (open_within): read by name, an image or shard that was a link out of the release
    was listed (and its sha256 published) as the release's own, a FIFO or folder under such a name passed over."""
    found: dict[str, tuple[str, str, int]] = {}
    for path in sorted((release_dir / split).rglob("*")):
        kind = _kind(path)
        if kind is None:
            continue
        rel = path.relative_to(release_dir).as_posix()
        with open_within(path, release_dir) as file:
            for row_id, ref, data in _images_in(kind, file, path, rel):
                found.setdefault(row_id, (ref, hashlib.sha256(data).hexdigest(), len(data)))
    return found


def _kind(path: Path) -> str | None:
    """What locate_images reads `path` as (by its name: "image", "tar" or "part"), or None. A folder or FIFO
    under such a name is read too (open_within refuses it): passed over, its images went unlisted."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix == ".tar":
        return "tar"
    if suffix == ".parquet" and path.name.startswith("part-"):
        return "part"
    return None


def _images_in(kind: str, file: BinaryIO, path: Path, rel: str) -> Iterator[tuple[str, str, bytes]]:
    """(id, reference, bytes) of each image the opened `file` holds (the file itself, a shard's image members, a
    part's rows)."""
    if kind == "image":
        yield path.name[: -len(path.suffix)], rel, file.read()
    elif kind == "part":
        for row_id, image in part_images(file, path).items():
            yield row_id, f"{rel}!/{row_id}", image
    else:
        with tarfile.open(fileobj=file) as tar:
            for member in tar:
                stem, ext = os.path.splitext(member.name.rpartition("/")[2])
                data = tar.extractfile(member) if member.isfile() and ext.lower() in IMAGE_SUFFIXES else None
                if data is not None:
                    yield key_id(stem), f"{rel}!/{member.name}", data.read()


def release_image_bytes(release_dir: Path, ref: str) -> bytes:
    """The bytes of an image of rows.parquet's `image` column (a file, a tar or zip member, a parquet part's row).
    The file (a shard, part, zip or image) is opened ONCE, checked there (in the release, a regular file; an
    archive with one name, or as DVC's cache.type hardlink checkout left it), as publish reads the release's other
    files: a shard was read by name (a link out or FIFO put there was read), and a hard link to a file outside the
    release kept its name and passed every check; until round 35b a zip or an image file was still read by name."""
    archive, sep, member = ref.partition("!/")
    path, listed = Path(release_dir) / archive, f"listed in {Path(release_dir) / 'rows.parquet'}"
    try:
        # an image file may be its source's hard link (export links it in); its bytes are told by its sha256
        with open_within(path, release_dir, one_name=bool(sep), links_ok=is_cache_copy, dvc_cache=True) as file:
            if sep and path.suffix.lower() == ".parquet":
                return part_images(file, path)[member]  # the part read once, not a row
            return _opened_image(file, path, member if sep else None, listed)
    except FileNotFoundError:
        raise DataError(f"{path}: not found ({listed})") from None
    except KeyError:
        raise DataError(f"{path}: no row with id {member!r} ({listed})") from None


def _opened_image(file: BinaryIO, path: Path, member: str | None, listed: str) -> bytes:
    """The image file `file`, or its member `member` (a tar's or zip's), opened and checked by
    release_image_bytes, in image_bytes' words."""
    from scripts.lib.archive import UnsafeArchive, read_opened

    ref = path if member is None else f"{path}!/{member}"
    try:
        return read_opened(file, path, member)
    except FileNotFoundError:
        raise DataError(shown(f"{ref}: image not found ({listed})")) from None
    except UnsafeArchive as exc:
        raise DataError(shown(f"{ref}: refused ({exc.reason})")) from None
