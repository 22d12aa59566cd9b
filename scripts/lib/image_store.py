"""Where generate@S keeps its images, and what it may delete there.

    data/image_store/               the generation store: every image rendered or seen here, by key
        index.txt                   every name the store wrote (appended before the file appears)
        .tmp/  .gitignore           temp files (renamed into place), `*` (a local cache, never committed)
        .tmp/store.lock             held shared by each generate run, alone by generate-prune
        ab/abcdef0123....jpg        <key[:2]>/<key>.<ext>
    data/images/S/                  the stage's output: images (key or index names) + manifest.parquet
        .generate-journal           while a run is under way: every name it is about to write, with
                                    the sha256 of the bytes it puts there

A file is ours only if our own record lists it: the store's index, the output's manifest or journal
(the output's records also hold its sha256: a file edited or swapped since, or a name added to the journal
by hand, is the user's). A temp file is ours only if it carries io's temp tag. Nothing is deleted by the look of its name (a phone's IMG_20240101.jpg looks like `<prefix>_<row>.jpg`);
a folder holding anything unlisted is refused in one line, with nothing touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from scripts.lib.errors import DataError, os_error_message, shown
from scripts.lib.io import check_output_kind
from scripts.lib.name_lists import Journal, NameList, open_own
from scripts.lib.render_plan import KEY, MANIFEST, MANIFEST_COLUMNS, MANIFEST_COLUMNS_BEFORE_SHA256, stored_name
from scripts.lib.safe_paths import open_within, opened_real_path
from scripts.lib.store_files import TEMP_NAME, alive, link_file, write_file_atomic
from scripts.lib.tables import parquet_source, write_parquet
from scripts.lib.temps import is_our_temp, unremovable_folder

STORE_TMP = ".tmp"
STORE_IGNORE = ".gitignore"
STORE_INDEX = "index.txt"
# The store's own marker: a folder is generate's store only if it holds it (an index.txt and two-hex
# folders are names a user's folder may have too). Fixed bytes; a store made before the marker is known
# by the `.gitignore` of "*" and the `.tmp` folder generate made first, and gets it on its next use.
STORE_MARK = ".t2i-image-store"
STORE_MARK_TEXT = b"The generation store of t2i-datasets (python -m scripts generate): images by render key.\n"
JOURNAL = ".generate-journal"
_HEX2 = re.compile(r"[0-9a-f]{2}")


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """(files and links, real folders) under `root`, relative, never following a link."""
    files: list[str] = []
    folders: list[str] = []
    for base, dirs, names in os.walk(root):
        rel = Path(base).relative_to(root)
        for d in dirs:
            (files if (Path(base) / d).is_symlink() else folders).append((rel / d).as_posix())
        files.extend((rel / n).as_posix() for n in names)
    return sorted(files), sorted(folders)


def _regular(path: Path) -> bool:
    """A regular file, not followed if it is a link (a FIFO would block the read that hashes it)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _owner(rel: str) -> str | None:
    """The name a temp file is being written for (same folder), or None for a file that is no temp."""
    folder, _, name = rel.rpartition("/")
    match = TEMP_NAME.fullmatch(name)
    return None if match is None else (f"{folder}/{match['name']}" if folder else match["name"])


def _ancestors(names: set[str]) -> set[str]:
    return {parent.as_posix() for name in names for parent in Path(name).parents if parent != Path(".")}


def manifest_keys(manifest: Path) -> dict[str, str]:
    """file -> key of a generate manifest; a DataError if it is not one (unreadable, other columns)."""
    data = _manifest_columns(manifest, ["file", "key"])
    return {f: k for f, k in zip(data["file"], data["key"]) if isinstance(f, str) and KEY.fullmatch(str(k))}


def manifest_digests(manifest: Path) -> dict[str, str]:
    """file -> the sha256 generate recorded for its bytes (empty for a manifest written before it did)."""
    data = _manifest_columns(manifest, ["file", "sha256"])
    return {f: d for f, d in zip(data["file"], data.get("sha256", [])) if isinstance(f, str) and isinstance(d, str)}


def _manifest_columns(manifest: Path, columns: list[str]) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with parquet_source(manifest) as source:  # one open, checked there: a FIFO or folder put there is refused
            table = pq.read_table(source)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{manifest}: not a readable generate manifest ({type(exc).__name__})") from None
    if table.column_names not in (MANIFEST_COLUMNS, MANIFEST_COLUMNS_BEFORE_SHA256):
        raise DataError(f"{manifest}: not a generate manifest (columns {table.column_names})")
    return table.select([c for c in columns if c in table.column_names]).to_pydict()


def file_sha256(path: Path, root: Path) -> str:
    with _opened_in(path, root) as f:  # a store or output file, from one open checked there
        return hashlib.file_digest(f, "sha256").hexdigest()  # type: ignore[arg-type]  # a BufferedReader


def _opened_in(path: Path, root: Path, *, own_folder: bool = False) -> BinaryIO:
    """`path` opened ONCE, checked there (safe_paths.open_within: in `root`, a regular file, not a link). `own_folder`:
    a store file `<store>/<ab>/<key>.<ext>` whose folder is no link (`ab -> /elsewhere` or `ab -> cd` passed)."""
    try:
        file = open_within(path, root, follow=False)
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: removed while it was read") from None
    own = os.path.join(os.path.realpath(path.parent.parent), *path.parts[-2:])  # <store>/<ab>/<name>
    if own_folder and opened_real_path(file, path) != own:
        file.close()
        raise DataError(f"{shown(path)}: its folder is a link (to another folder of the store or out of it)")
    return file


# ---------------------------------------------------------------- the generation store


class ImageStore:
    """The generation store: images by key, kept across runs. An image in it has the bytes rendering
    would give (its key names everything that changes them), so it only ever saves time."""

    def __init__(self, root: Path | str, output: Path | None = None):
        """Open (create if needed) the store; sweep temp files of dead runs."""
        self.root = Path(root)
        check_store(self.root, output)
        claim_store(self.root)
        self.tmp = self.root / STORE_TMP
        self.index = NameList(self.root / STORE_INDEX)
        self.tmp.mkdir(parents=True, exist_ok=True)
        if not (self.root / STORE_IGNORE).is_file():
            write_file_atomic(self.root / STORE_IGNORE, b"*\n", self.tmp)
        self.indexed = self.index.names()
        self._sweep(self.indexed)

    def path(self, stored: str) -> Path:
        return self.root / stored

    def has(self, stored: str) -> bool:
        """The store holds `stored` as it wrote it: a name its index lists, a regular file (a user's file
        under a key's name, or a link out of the store, is never served as a render)."""
        return stored in self.indexed and _regular(self.root / stored)

    def refuse_folders_at(self, stored: list[str]) -> None:
        """Refuse, before the model loads, a folder at a name the store is to write an image to (a user's, or an
        image replaced by one): the rename over it failed after the model loaded, on every run, and a rename
        over an empty one would replace a folder that is not ours."""
        for name in stored:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                raise DataError(
                    f"{shown(path)}: a folder where the generation store keeps an image; refusing to render over "
                    "it (move it away)"
                )

    def put(self, stored: str, data: bytes) -> None:
        self.index.add(stored)  # before the file: a listed name may be missing, never the reverse
        self.indexed.add(stored)
        write_file_atomic(self.root / stored, data, self.tmp)

    def forget(self, stored: str, linked: Path) -> None:
        """Drop `stored` when it is the file `linked` (a hard link): bytes a user changed through the link
        are no longer the render of its key. The index may list a missing name (put's rule)."""
        with contextlib.suppress(OSError):
            if os.path.samefile(self.root / stored, linked):
                (self.root / stored).unlink()

    def take(self, src: Path, stored: str, sha256: str | None = None) -> bool:
        """Link `src` (one open, no link) in as `stored` unless held; True if taken. `sha256`: checked on that open."""
        if self.has(stored) or os.path.lexists(self.root / stored):  # a file the index does not list stays
            return False
        self.index.add(stored)
        self.indexed.add(stored)
        with open_within(src, src.parent, follow=False) as opened:  # by name, a link put there since was followed
            if sha256 is not None and hashlib.file_digest(opened, "sha256").hexdigest() != sha256:  # type: ignore[arg-type]
                raise DataError(f"{shown(src)}: changed while generate checked it; not taken into the image store")
            opened.seek(0)  # hashed by name before, a file renamed in between was taken under another's key
            link_file(src, self.root / stored, self.tmp, opened)
        return True

    def _sweep(self, indexed: set[str]) -> None:
        """Delete temp files of dead runs, for names the store writes (its images, index, .gitignore)."""
        for tmp in self.tmp.iterdir():
            match = TEMP_NAME.fullmatch(tmp.name)
            if match is None or not match["pid"] or alive(int(match["pid"])) or not is_our_temp(tmp):
                continue
            name = match["name"]
            if name in (STORE_INDEX, STORE_IGNORE) or f"{name[:2]}/{name}" in indexed:
                tmp.unlink(missing_ok=True)

    def prune(self, wanted: set[str] | None) -> dict:
        """Delete every indexed image not in `wanted` (all of them with None). Nothing is deleted
        when an image folder holds a file the index does not list."""
        indexed = self.index.names()
        files, folders = _walk(self.root)
        images = [f for f in files if "/" in f and _HEX2.fullmatch(f.split("/", 1)[0])]
        for rel in images:
            if rel not in indexed:
                raise DataError(
                    f"{self.root}: holds {rel!r}, which its index does not list (generate did not write it, "
                    f"or the store predates {STORE_INDEX}); refusing to prune (delete the store by hand to "
                    "empty it)"
                )
        check_prunable(self.root)
        removed = kept = 0
        for rel in images:
            if wanted is not None and rel in wanted:
                kept += 1
            else:
                (self.root / rel).unlink()
                removed += 1
        # a folder at an indexed name (a user's, or an image replaced by one) is not ours to delete: it stays
        # listed and counts as kept, never silently forgotten (generate refuses to render over it, naming it)
        at_folders = indexed & set(folders)
        left = {rel for rel in images if wanted is not None and rel in wanted} | at_folders
        write_file_atomic(self.index.path, NameList.text(left), self.tmp)
        for folder in reversed(folders):
            if _HEX2.fullmatch(folder) and not any((self.root / folder).iterdir()):
                (self.root / folder).rmdir()
        self._sweep(indexed)
        return {"removed": removed, "kept": kept + len(at_folders)}


def check_prunable(store: Path) -> None:
    """Refuse, nothing deleted, to prune a store holding a folder this process may not write (read-only): the
    images before it were deleted and the run stopped at exit 2 on the first it could not, its index unwritten."""
    locked = unremovable_folder(store)
    if locked is not None:
        raise DataError(
            f"{shown(locked)}: a folder of the generation store this process may not write (read-only?); refusing "
            "to prune (nothing deleted; make the store writable, e.g. `chmod -R u+w`)"
        )


STORE_LOCK = "store.lock"  # in .tmp: generate runs hold it shared, generate-prune alone


@contextlib.contextmanager
def store_lock(store: Path | None, exclusive: bool = False, output: Path | None = None) -> Iterator[None]:
    """Hold the store's lock for a run: generate runs share the store (each appends whole lines to its
    index), generate-prune has it alone (it deleted images a running generate had just linked)."""
    if store is None:
        yield
        return
    store = Path(store)
    check_store(store, output)  # before anything is made in a folder that may be the user's
    try:
        claim_store(store)
        (store / STORE_TMP).mkdir(parents=True, exist_ok=True)
        fd = open_own(store / STORE_TMP / STORE_LOCK, os.O_RDONLY | os.O_CREAT)
    except OSError as exc:
        raise DataError(os_error_message(exc, store / STORE_TMP / STORE_LOCK)) from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = "a generate run is using it" if exclusive else "generate-prune is pruning it"
            raise DataError(f"{shown(store)}: {busy}; wait for it to end") from None
        yield
    finally:
        os.close(fd)


def check_store(store: Path, output: Path | None = None) -> None:
    """The store holds only what generate writes there, and is neither inside OUTPUT nor around it."""
    check_output_kind(store)  # a link to a folder elsewhere was written through (marker, index, images there)
    if store.exists() and not store.is_dir():
        raise DataError(f"{store}: is a file, expected the generation store folder")
    if output is not None:
        # as they resolve: `data/alias/S/st` (data/alias -> images) made a store inside data/images/S
        a, b = os.path.realpath(store), os.path.realpath(output)
        if a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep):
            raise DataError(f"--store {store}: must be a folder of its own, not {output} or inside/around it")
    if not store.is_dir():
        return
    entries = sorted(store.iterdir())
    for entry in entries:
        mode = entry.lstat().st_mode  # never through a link: .tmp or index.txt linked out wrote there
        if (entry.name in (STORE_IGNORE, STORE_INDEX, STORE_MARK) and stat.S_ISREG(mode)) or (
            (entry.name == STORE_TMP or _HEX2.fullmatch(entry.name)) and stat.S_ISDIR(mode)
        ):
            continue
        raise DataError(
            f"{shown(store)}: holds {shown(repr(entry.name))}, which generate did not write; refusing to use it as "
            "the generation store (point --store at its own folder, e.g. data/image_store)"
        )
    if entries and not (_holds(store / STORE_MARK, STORE_MARK_TEXT) or _made_before_the_mark(store)):
        raise DataError(
            f"{shown(store)}: has no {STORE_MARK}, so generate did not make it (its index.txt and folders may be "
            "a user's); refusing to use or prune it (point --store at the store generate made, e.g. data/image_store)"
        )


def claim_store(store: Path) -> None:
    """Make the store folder (checked by check_store) and put its marker in, once."""
    store.mkdir(parents=True, exist_ok=True)
    if not (store / STORE_MARK).is_file():
        (store / STORE_TMP).mkdir(exist_ok=True)
        write_file_atomic(store / STORE_MARK, STORE_MARK_TEXT, store / STORE_TMP)


def _made_before_the_mark(store: Path) -> bool:
    """A store generate made before it wrote the marker: the `.tmp` folder and the `.gitignore` of "*"
    it made before anything else (a user's folder of images and an index has neither)."""
    return (store / STORE_TMP).is_dir() and _holds(store / STORE_IGNORE, b"*\n")


def _holds(path: Path, data: bytes) -> bool:
    """`path` is a regular file (not a link) holding exactly `data`."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


# ---------------------------------------------------------------- the stage's output folder


class OutputFolder:
    """OUTPUT of generate@S. Its manifest (written last) lists a finished run's files; while a run is
    under way its journal lists every name the run writes, before writing it, so a killed run's files
    are ours too. The manifest is also what says which key an index-named file holds."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.journal = Journal(self.root / JOURNAL)
        self.digests: dict[str, str] = {}  # file -> sha256 of what this run found verified or wrote

    def keys(self) -> dict[str, str]:
        """file -> key from the manifest (empty without one). A manifest.parquet that is no regular file (a link to
        /dev/zero, a FIFO or a big file elsewhere) is refused unread: _check_ours' own check came after this read."""
        manifest = self.root / MANIFEST
        if not os.path.lexists(manifest):
            return {}
        if not _regular(manifest):
            raise DataError(
                f"{shown(manifest)}: not a regular file (a link, FIFO or device); refusing to read or prune it (move it away)"
            )
        return manifest_keys(manifest)

    def start(self, wanted: set[str], store: ImageStore | None = None) -> int:
        """Begin a run that keeps the files `wanted`: refuse a folder holding anything we did not write, take every image
        whose key is known into `store`, delete the rest (the manifest too: incomplete until `finish`); returns how many others went."""
        self.root.mkdir(parents=True, exist_ok=True)
        files, folders, keys = self.refuse_foreign()
        self._check_ours(files, keys, store)  # before anything is taken into the store or pruned
        kept = {rel for rel in files if rel in wanted}
        if store is not None:
            for rel in files:
                if rel in keys and rel not in (MANIFEST, JOURNAL):
                    store.take(self.root / rel, stored_name(keys[rel], rel), self.digests.get(rel))
        write_file_atomic(self.journal.path, Journal.text_with(self.digests_of(sorted(kept))))  # before the manifest
        removed = 0
        for rel in files:
            if rel not in kept and rel != JOURNAL:
                (self.root / rel).unlink()
                removed += rel != MANIFEST
        for rel in reversed(folders):
            if not any((self.root / rel).iterdir()):
                (self.root / rel).rmdir()
        return removed

    def refuse_foreign(self) -> tuple[list[str], list[str], dict[str, str]]:
        """start's refusals that hash nothing (a name neither manifest nor journal lists), also run before the input."""
        keys = self.keys()
        owned = set(keys) | self.journal.names() | {MANIFEST, JOURNAL}
        files, folders = _walk(self.root)
        for rel in files:
            if rel not in owned and _owner(rel) not in owned:
                raise DataError(
                    f"{self.root}: holds {rel!r}, which generate did not write (its manifest and journal do "
                    "not list it); refusing to prune it (point the stage at its own image folder)"
                )
        for rel in sorted(set(folders) - _ancestors(owned)):
            raise DataError(
                f"{self.root}: holds the folder {rel!r}, which generate did not write; refusing to prune "
                "it (point the stage at its own image folder)"
            )
        return files, folders, keys

    def _check_ours(self, files: list[str], keys: dict[str, str], store: ImageStore | None) -> None:
        """Refuse what generate did not leave as it is: a file under one of its temp names that no run of it
        tagged, anything but a regular file (a FIFO would hang the hash), and a file whose bytes are not a
        sha256 the manifest or journal records (retouched or replaced since, or a name added by hand: the
        user's, neither replaced, nor pruned, nor recorded as a render; one changed through the store's hard
        link leaves the store too)."""
        recorded = manifest_digests(self.root / MANIFEST) if _regular(self.root / MANIFEST) else {}
        journaled = self.journal.digests()
        for rel in files:
            if TEMP_NAME.fullmatch(rel.rpartition("/")[2]) is not None and not is_our_temp(self.root / rel):
                raise DataError(
                    f"{shown(self.root / rel)}: named as a temp file of generate's, but no run of it left it; refusing to delete it (move it away)"
                )
            if not _regular(self.root / rel):
                raise DataError(
                    f"{shown(self.root / rel)}: not a regular file (a link, FIFO or device); refusing to read or prune it (move it away)"
                )
            if rel in (MANIFEST, JOURNAL) or _owner(rel) is not None:
                continue
            if rel not in recorded and rel in keys:  # a manifest from before generate recorded sha256s
                continue
            digest = file_sha256(self.root / rel, self.root)
            if digest != recorded.get(rel) and digest not in journaled.get(rel, ()):
                if store is not None and rel in keys:
                    store.forget(stored_name(keys[rel], rel), self.root / rel)
                raise DataError(
                    f"{shown(self.root / rel)}: changed since generate wrote it (not the sha256 its manifest or "
                    "journal records); refusing to replace, prune or record it as a render (move it away, and its "
                    "row is rendered again)"
                )
            self.digests[rel] = digest

    def has(self, file: str) -> bool:
        return (self.root / file).is_file()

    def write(self, file: str, data: bytes) -> None:
        self.digests[file] = hashlib.sha256(data).hexdigest()
        self.journal.add(file, self.digests[file])
        write_file_atomic(self.root / file, data)

    def link(self, src: Path, file: str) -> None:
        """`file` the image `src` of the store, from one open checked there: a hard link, or a copy (temp here)."""
        with _opened_in(src, src.parent, own_folder=True) as opened:
            self.digests[file] = hashlib.file_digest(opened, "sha256").hexdigest()  # type: ignore[arg-type]
            self.journal.add(file, self.digests[file])
            link_file(src, self.root / file, opened=opened)

    def digests_of(self, files: list[str]) -> dict[str, str]:
        """file -> sha256 of each of `files` (read here when this run neither wrote nor verified it)."""
        return {file: self.digests.get(file) or file_sha256(self.root / file, self.root) for file in files}

    def finish(self, manifest) -> None:
        """Write the manifest (the run is complete) and drop the journal."""
        write_parquet(manifest, self.root / MANIFEST)
        self.journal.path.unlink(missing_ok=True)
