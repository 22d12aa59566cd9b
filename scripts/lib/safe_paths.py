"""Paths read from data (a manifest's `file`, rows.parquet's `image`), checked where they are opened.

A path that comes from a table or a JSON line is resolved (`..` and every link on the way) and must
stay inside the folder it is relative to, and name a regular file: `../../../etc/passwd`, an absolute
path, or a link in the folder pointing out of it is one line naming the table and row.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from scripts.lib.errors import DataError, shown_short
from scripts.lib.interrupts import held
from scripts.lib.io import shown
from scripts.lib.side_files import TablePath as TablePath
from scripts.lib.side_files import held_open as held_open
from scripts.lib.side_files import open_regular as open_regular
from scripts.lib.side_files import opened_once as opened_once
from scripts.lib.side_files import shares_a_name as shares_a_name

# What a release reads back as an image (export.locate_images, the card's data files). An image stored
# under another name took a name its layout writes beside it: x.txt its caption, x.json its metadata.
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff")


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Roots:
    """Folders a path must lie in after every link. A path named inside one that links into DVC's cache is the
    folder's own: a checkout with cache.type symlink leaves each output file such a link (a hard link, of
    cache.type hardlink, is a file of the folder itself)."""

    def __init__(self, roots: list[Path]):
        self.roots = roots
        self.real = [os.path.realpath(root) for root in roots]
        self.named = [os.path.abspath(root) for root in roots]
        self._cache: str | None = None  # found when needed: the lookup opens the DVC repository

    def cache(self) -> str | None:
        if self._cache is None:
            self._cache = dvc_cache_of(".") or ""
        return self._cache or None

    def holds(self, file: Path | str, real: str | None = None) -> bool:
        """Whether `file` lies in a root; `real`: where it really is, when known better than by its name (what
        an open file descriptor names: the file may have been replaced by a link since)."""
        real = os.path.realpath(file) if real is None else real  # what a link (anywhere on the way) points at
        named = os.path.abspath(file)  # the path as written, `..` applied
        if any(inside(real, root) for root in self.real):
            return True
        cache = self.cache() if any(inside(named, root) for root in self.named) else None
        return cache is not None and inside(real, cache)


def dvc_cache_of(repository: Path | str) -> str | None:
    """The real path of the DVC cache of the repository holding `repository` (where `dvc cache dir` put it:
    DVC's own config; where DVC cannot open it, a `.dvc/cache` folder above), the one folder a link of a checkout with cache.type symlink may lead into; None when
    there is none, or when it holds the repository itself (`.dvc/cache -> /`, `cache.dir: /`: every file
    would pass as DVC's). Every reader of a DVC output asks this one rule (Roots, simpletuner's release
    config, caption's manifest): each kept its own, and `.dvc/cache` walked up to and the cache DVC uses
    told a link apart differently."""
    from scripts.lib.dvc_cache import cache_folder, repository_cache

    found = cache_folder(repository) or repository_cache(repository)  # DVC cannot open it: its own .dvc/cache
    if found is None:
        return None
    cache, top = os.path.realpath(found), os.path.realpath(repository)
    return None if inside(top, cache) else cache


def leads_out(path: Path | str, root: Path | str, *, dvc_cache: bool = False, real: str | None = None) -> bool:
    """Whether `path`, after every link on its way (`..` in a relative link, a link to a link), lies outside
    `root`: the one rule for a file a stage or tool reads under a folder it was given.

    `dvc_cache`: a path named inside `root` whose link leads into DVC's cache is `root`'s own. A checkout with
    cache.type symlink leaves each output file such a link (cache.type hardlink leaves a file of the folder
    itself); a file DVC never caches (`cache: false`, git's params.yaml) needs no such exception.
    `real`: where the file really is, when known better than by its name (opened_real_path)."""
    if dvc_cache:
        return not Roots([Path(root)]).holds(path, real)
    return not inside(os.path.realpath(path) if real is None else real, os.path.realpath(root))


def check_stays_in(
    path: Path | str,
    root: Path | str,
    *,
    dvc_cache: bool = False,
    where: str | None = None,
    root_name: str | None = None,
) -> Path:
    """`path` when it stays in `root` (leads_out), else one line naming it (`where`, default the path) and the
    folder (`root_name`, default its path)."""
    if leads_out(path, root, dvc_cache=dvc_cache):
        raise _led_out(path, root, where, root_name)
    return Path(path)


def _led_out(path: Path | str, root: Path | str, where: str | None, root_name: str | None) -> DataError:
    return DataError(
        f"{where or shown(path)}: a link on its way leads out of {root_name or shown(root)}; refusing to read it"
    )


# ---------------------------------------------------------------- the generation store's names
# Here, not in image_store, because readers of generate's images (caption) tell its store links apart by them and
# depend on this module only; render_plan and image_store take them from here.

PIPELINE_STORE = Path("data/image_store")  # generate's --store in dvc.yaml, generate-prune's default
STORE_KEY = re.compile(r"[0-9a-f]{64}")  # a render key (sha256 of everything that changes an image's bytes)


def stored_name(key: str, file: str) -> str:
    """An image's name in the generation store, from its key and any name it has in OUTPUT."""
    return f"{key[:2]}/{key}{Path(file).suffix}"


def is_store_entry(opened: os.stat_result, entry: Path | str) -> bool:
    """Whether the opened file (`opened`: its fstat) is the generation store's `entry` itself (same device and
    inode, the entry a regular file of its own, not a link): generate's images are hard links into the store,
    and only that other name of an image proves its link generate's."""
    try:
        found = os.lstat(entry)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and os.path.samestat(found, opened)


def opened_real_path(file: BinaryIO, path: Path | str) -> str:
    """The real path of the file `file` has open (Linux's /proc/self/fd): what was read, even when its name
    was replaced by a link since it was checked. Without /proc, `path`'s realpath (the check as before)."""
    try:
        return os.readlink(f"/proc/self/fd/{file.fileno()}")
    except OSError:
        return os.path.realpath(path)


def open_within(
    path: Path | str,
    root: Path | str,
    *,
    one_name: bool = False,
    links_ok: Callable[[Path], bool] | None = None,
    follow: bool = True,
    dvc_cache: bool = False,
    where: str | None = None,
    root_name: str | None = None,
) -> BinaryIO:
    """The regular file `path` opened ONCE for reading (binary) when it stays in `root` (check_stays_in): the
    one open every reader of a data-named path reads from (pyarrow takes the file object), so a link or file
    swapped in after a check by name is never what is read. The opened file is checked again by what its
    descriptor names (opened_real_path) and by fstat (open_regular: a FIFO, folder or device). `one_name`: a
    file with another hard link is refused too, unless `links_ok(path)` (DVC's cache.type hardlink). Unless
    `follow`, the file itself may not be a link (a store's own files never are).
    FileNotFoundError is the caller's to name."""
    check_stays_in(path, root, dvc_cache=dvc_cache, where=where, root_name=root_name)
    file = open_regular(path, follow=follow, one_link=one_name, links_ok=links_ok)
    try:
        if leads_out(path, root, dvc_cache=dvc_cache, real=opened_real_path(file, path)):
            raise _led_out(path, root, where, root_name)
    except BaseException:
        file.close()
        raise
    return file


def read_within(
    path: Path | str,
    root: Path | str,
    *,
    cap: int,
    one_name: bool = False,
    dvc_cache: bool = False,
    where: str | None = None,
    root_name: str | None = None,
) -> bytes:
    """The bytes of the regular file `path` (at most `cap`), opened once by open_within: a file replaced by a
    link out between the check and the open was read (summary's stats.json, a workspace dvc.lock).
    FileNotFoundError is the caller's to name."""
    with open_within(path, root, one_name=one_name, dvc_cache=dvc_cache, where=where, root_name=root_name) as file:
        return read_capped(file, cap, path)


def table_in(root: Path, *names: str) -> TablePath:
    """root/names (data/splits/S/train.parquet, a positions file, compose@V's rows.parquet), refused in one line
    when a link on its way (the source's folder, the file) leads out of `root`: `data/splits/S -> /elsewhere`
    was read as the source's split. A link into DVC's cache (cache.type symlink) is the root's own, as for
    images; a hard link (cache.type hardlink) is a file of the root itself. tables.py's readers open it once
    (open_within: the same rule, checked again by what the descriptor names)."""
    path = check_stays_in(Path(root).joinpath(*names), root, dvc_cache=True)
    return held_open(path, lambda: open_within(path, root, dvc_cache=True))  # every read of one stage: one file


def resolved(path: Path | str) -> Path:
    """Path(path).resolve() (absolute, every link followed, `..` gone), a loop of links on the way one line:
    Python 3.11's resolve raises RuntimeError for it (`simpletuner-config a/train` with a -> b -> a was a
    traceback)."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        raise DataError(f"{shown(path)}: a loop of symbolic links") from None
    except OSError as exc:  # Python 3.13 raises ELOOP as an OSError; a folder on the way not searchable
        raise DataError(f"{shown(path)}: {exc.strerror}") from None


def confined_file(root: Path | str, name: str, where: str) -> Path:
    """`root / name` when it stays inside `root` after every link and is a regular file; otherwise a
    DataError naming `where` (the table and row the name came from)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise DataError(f"{where}: file {shown(repr(name))} is not a path")
    path = Path(root) / name
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.isabs(name) or not inside(real, real_root):
        raise DataError(f"{where}: file {shown(repr(name))} leaves its folder {shown(root)}")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise DataError(f"{where}: file {shown(repr(name))} not found in {shown(root)}") from None
    except OSError as exc:
        raise DataError(f"{where}: file {shown(repr(name))}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{where}: file {shown(repr(name))} is not a regular file")
    return path


def own_regular_file(path: Path, root: Path) -> Path:
    """`path` (an entry of the folder `root`) when it is a regular file with one name inside `root`;
    otherwise a DataError. A symbolic link or a hard link could send any file, a secrets file
    included, to a remote API (synthesize's examples folder followed `notes.txt -> /tmp/secret.env`)."""
    try:
        found = os.lstat(path)
    except OSError as exc:
        raise DataError(f"{shown(path)}: cannot read ({exc.strerror})") from None
    if stat.S_ISLNK(found.st_mode):
        raise DataError(f"{shown(path)}: a symbolic link; files in this folder are read only as regular files")
    if not stat.S_ISREG(found.st_mode):
        raise DataError(f"{shown(path)}: not a regular file")
    if found.st_nlink > 1:
        raise DataError(f"{shown(path)}: has another hard link; files in this folder are read only with one name")
    if not inside(os.path.realpath(path), os.path.realpath(root)):
        raise DataError(f"{shown(path)}: leaves its folder {shown(root)}")
    return path


def read_capped(file: BinaryIO, cap: int, path: Path | str) -> bytes:
    """All of `file`, refused (DataError) past `cap` bytes: checked by its size first, then by what the read
    brings (a file that grows while read), so no more than cap + 1 bytes are ever held."""
    if os.fstat(file.fileno()).st_size > cap:
        raise DataError(f"{shown(path)}: larger than {cap} bytes; refusing to read it")
    data = file.read(cap + 1)
    if len(data) > cap:
        raise DataError(f"{shown(path)}: larger than {cap} bytes; refusing to read it")
    return data


def link_opened(file: BinaryIO, path: Path | str, target: Path) -> bool:
    """Hard-link the file `file` has open (`path`) as the new name `target`, `file` rewound for a copy: False
    when no link can be made there (another filesystem). The link is made by the name and proved to be of the
    opened file: a file or FIFO swapped in under the name after the checks on the open was linked into the
    release; such a link (the name just made, ours) is removed and refused in one line."""
    file.seek(0)
    try:
        os.link(opened_real_path(file, path), target, follow_symlinks=False)  # the file itself, never a link
    except OSError:
        return False
    if not os.path.samestat(os.lstat(target), os.fstat(file.fileno())):
        os.unlink(target)
        raise DataError(
            f"{shown(path)}: replaced while it was placed; refusing to ship a file other than the one checked"
        )
    return True


def not_an_image_name(name: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> str | None:
    """Why a file named `name` cannot be written as an image beside its `<stem>.txt` caption and `<stem>.json`
    metadata (an extension none of `extensions`: `x.txt` is its own caption's name, and the caption was
    written through the image's hard link into the user's file), or None."""
    if os.path.splitext(name)[1][1:].lower() in extensions:
        return None
    return f"{shown_short(repr(name))} has no image extension ({', '.join(extensions)})"


def check_image_name(name: str, where: str) -> None:
    """Refuse a row whose image is a file without an image's extension (not_an_image_name): publish's
    metadata.jsonl or rows.parquet naming the release's own `metadata.jsonl`, `README.md` or `rows.parquet`
    passed every path check, and its bytes were published as the row's image at exit 0."""
    problem = not_an_image_name(name)
    if problem is not None:
        raise DataError(f"{where}: its image {problem}; refusing to read it as an image")


def new_file(path: Path, data: bytes) -> None:
    """Write `data` as the new file `path`. A release's staging folder holds hard links to the user's
    images: a name already there may be one, and writing to it wrote into the user's file."""
    try:
        with open(path, "xb") as file:
            file.write(data)
    except FileExistsError:
        raise DataError(
            f"{shown(path)}: two files of one export under this name (ids equal but for case, on a disk "
            "that ignores it?); refusing to write one over the other"
        ) from None


def matches(root: Path, pattern: str) -> list[Path]:
    """`root`'s entries whose name matches `pattern` ("*.txt") in any case, sorted: PROMPTS.TXT is a text
    file too (Windows and macOS file systems match it already; case-sensitive, Linux silently left it out)."""
    if not root.is_dir():
        return []  # as glob finds nothing there
    return sorted(path for path in root.iterdir() if fnmatch.fnmatchcase(path.name.lower(), pattern.lower()))


# What a run makes inside a folder of its own (replay-history's DEST, sample-data's output), by identity: moved
# here from replay_history, its first user, as sample_data makes its tree through it too.
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# what a name another put there mid-run gives: it exists, is a link (ELOOP), a FIFO without reader (ENXIO), is
# not the folder made (ENOTDIR), is gone (ENOENT)
PLANTED = {errno.EEXIST, errno.ELOOP, errno.ENXIO, errno.ENOTDIR, errno.ENOENT}


class MadeHere:
    """What a run makes under `base`, each entry recorded by identity (device, inode) as it is made. A name is
    made or opened relative to the open folder above it, with no link followed, so an entry another put there
    mid-run (a link, a FIFO, a file or a folder of theirs) is refused, never written through; `remove` deletes
    what the run made, by identity, never by name. `sub` is the same record seen from one of its folders."""

    def __init__(self, base: Path, prefix: str = "", entries: dict[str, tuple[int, int]] | None = None, pin=False):
        self.base, self.prefix, self.pin = base, prefix, pin
        self.entries = {} if entries is None else entries
        # with `pin` (for `remove`), a top-level entry made is held open (O_PATH) for the run: its inode cannot be
        # freed, so a user's entry put in its place never has its number (a folder removed and made again had it)
        self.pins: dict[str, int] = {}

    def sub(self, name: str) -> MadeHere:
        view = MadeHere(self.base, f"{self.prefix}{name}/", self.entries, self.pin)
        view.pins = self.pins
        return view

    def close(self) -> None:
        for pin in self.pins.values():
            os.close(pin)
        self.pins.clear()

    def _made(self, key: str, folder: int, leaf: str) -> None:
        """Record `key`, just made as `leaf` in the open `folder`; pin it if top-level."""
        self.entries[key] = identity(os.stat(leaf, dir_fd=folder, follow_symlinks=False))
        if self.pin and "/" not in key:
            self.pins[key] = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)

    # Each entry is made and recorded as one step (interrupts.held): a signal between the two left an entry no
    # record named, which `remove` kept (a replay stopped right after making `.git` left DEST behind)
    def new_folder(self, rel: str) -> None:
        with self._parent(rel) as (folder, leaf, key), held():
            os.mkdir(leaf, dir_fd=folder)
            self._made(key, folder, leaf)

    def new_link(self, rel: str, target: str) -> None:
        with self._parent(rel) as (folder, leaf, key), held():
            os.symlink(target, leaf, dir_fd=folder)
            self._made(key, folder, leaf)

    def new_file(self, rel: str, data: bytes, mode: int | None = None) -> None:
        with self._parent(rel) as (folder, leaf, key):
            with held():
                fd = os.open(leaf, NEW_FILE_FLAGS, 0o666, dir_fd=folder)
                try:
                    self._made(key, folder, leaf)
                except BaseException:
                    os.close(fd)
                    raise
            with os.fdopen(fd, "wb") as file:
                if mode is not None:  # a tracked script keeps its exec bit, as shutil.copy2 kept it
                    os.fchmod(file.fileno(), mode)
                file.write(data)

    def rewrite(self, rel: str, data: bytes) -> None:
        """New contents for a file this run made, refused unless the name still holds that regular file: a new
        file beside it renamed over it (a rename replaces a link there, never writes through one)."""
        with self._parent(rel) as (folder, leaf, key):
            status = os.stat(leaf, dir_fd=folder, follow_symlinks=False)
            if not stat.S_ISREG(status.st_mode) or identity(status) != self.entries.get(key):
                raise FileExistsError(errno.EEXIST, "not the file this run made")
            temp = f".{leaf}.tmp-new"
            new = os.open(temp, NEW_FILE_FLAGS, 0o666, dir_fd=folder)  # a name there already is another's
            try:
                with os.fdopen(new, "wb") as file:
                    os.fchmod(file.fileno(), stat.S_IMODE(status.st_mode))
                    file.write(data)
                os.rename(temp, leaf, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
                raise
            if key in self.pins:
                os.close(self.pins.pop(key))
            self._made(key, folder, leaf)

    def remove(self) -> None:
        """Delete the top-level entries this run made that are still they (a user's entry put in the place of
        one, or beside them, stays); what the run's children made inside its folders goes with them.

        An entry it cannot delete is one DataError naming it (and the failure being handled, if one is): a
        removal that failed in silence (rmtree at `ulimit -n` 10-12, the run's error being EMFILE) left DEST/.git
        unsaid. Each entry's pin is closed before its removal, as rmtree needs a descriptor per folder level."""
        left: list[str] = []
        for key, made in reversed(list(self.entries.items())):
            path = self.base / key
            if "/" in key or not os.path.lexists(path) or identity(path.lstat()) != made:
                continue
            if key in self.pins:
                os.close(self.pins.pop(key))
            if not removed(path):
                left.append(key)
        handled = sys.exc_info()[1]
        if left and (handled is None or isinstance(handled, Exception)):  # a signal's 130/143 and line stand
            raise DataError(left_behind([self.base / key for key in left])) from None

    @contextlib.contextmanager
    def _parent(self, rel: str) -> Iterator[tuple[int, str, str]]:
        """The open folder that holds `rel`, its last name and its key; the folders on the way are made (and
        recorded) or, made earlier, checked to be the same ones."""
        key = self.prefix + rel
        *folders, leaf = key.split("/")
        folder = os.open(self.base, FOLDER_FLAGS)
        try:
            for depth, name in enumerate(folders, start=1):
                inner_key = "/".join(folders[:depth])
                if inner_key not in self.entries:
                    os.mkdir(name, dir_fd=folder)  # new: a name there already is another's
                    self._made(inner_key, folder, name)
                inner = os.open(name, FOLDER_FLAGS, dir_fd=folder)
                os.close(folder)
                folder = inner
                if identity(os.fstat(folder)) != self.entries[inner_key]:
                    raise FileExistsError(errno.EEXIST, "another folder")
            yield folder, leaf, key
        except OSError as exc:
            if exc.errno not in PLANTED:
                raise
            raise DataError(
                f"{shown(self.base / key)}: another entry took this name while the run wrote it (a link, a FIFO "
                "or another's file or folder); refusing to write through it"
            ) from None
        finally:
            os.close(folder)


def removed(path: Path) -> bool:
    """Delete `path` (a folder with all inside it); False if any of it is left (each failure collected, none
    raised: the rest is still removed)."""
    failures: list[object] = []
    if stat.S_ISDIR(path.lstat().st_mode):
        # onexc from Python 3.12 (onerror is deprecated there), onerror before: either collects the failure
        collect = {"onexc" if sys.version_info >= (3, 12) else "onerror": lambda *failed: failures.append(failed)}
        shutil.rmtree(path, **collect)  # type: ignore[arg-type]
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            failures.append(exc)
    return not failures and not os.path.lexists(path)


def left_behind(paths: list[Path]) -> str:
    """The line for entries a failed run could not remove, after the failure being handled (sys.exc_info), if any:
    it replaces that failure's own line, which it repeats. (Under a signal the signal's own line and exit code
    stand: MadeHere.remove raises none.)"""
    names = ", ".join(shown(str(path)) for path in paths)
    line = f"{names} left behind (made by this run, not removed): remove {'it' if len(paths) == 1 else 'them'} by hand"
    handled = sys.exc_info()[1]
    return f"{handled}; {line}" if isinstance(handled, Exception) and str(handled) else line


def identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino
