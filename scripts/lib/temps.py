"""The temp siblings of an output and the lock that guards it.

Beside a target T, all under the lock: .T.tmp-new (what is being written), .T.tmp-old (the previous
T while the new one is renamed in), .T.tmp-spill (rows an external sort set aside: external_sort.py),
.T.tmp-lock (held by the one process writing T). A killed run leaves them behind; the next run removes
each only if it carries TEMP_XATTR (a name proves nothing: a user's own `.T.tmp-old/` is refused, and a
user's `.T.tmp-lock` is neither locked, nor taken over, nor unlinked). A name T too long for a sibling
name to fit NAME_MAX is shortened there (sibling_name), so any T the file system takes can be written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from scripts.lib.errors import DataError, os_error_message, shown
from scripts.lib.interrupts import held

TMP_NEW, TMP_OLD, TMP_SPILL, TMP_LOCK = "tmp-new", "tmp-old", "tmp-spill", "tmp-lock"
TEMP_XATTR = "user.t2i-datasets.temp"
NAME_MAX = 255  # bytes in one path part (ext4, xfs, btrfs, tmpfs)
RANDOM_TAIL = 9  # what mkstemp/mkdtemp add to a sibling name: `.` or nothing, then 8 random characters


def real_path(path: Path | str) -> Path:
    """`path` as the kernel resolves it: its folder's links before any `..` (abspath reads `lnk/../x` as
    `./x`, not the kernel's folder); the last part as named (a link output is refused, not followed)."""
    head, name = os.path.split(os.fspath(path))
    if name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(head or ".")) / name


def _sibling(target: Path, kind: str) -> Path:
    target = real_path(target)  # beside the file the kernel writes, whatever links its path runs through
    return target.parent / sibling_name(target.name, kind)


def sibling_name(name: str, kind: str) -> str:
    """The name of an output's temp of `kind` (TMP_NEW, TMP_OLD, ...) beside it: `.NAME.KIND`, or, where
    that (plus a random tail) would pass NAME_MAX, `.NAME-START~DIGEST.KIND`: a 250-byte output name the
    file system takes was refused as `File name too long` for its temp's. The same name each run, so the
    next run still finds what a killed one left."""
    full = f".{name}.{kind}"
    room = NAME_MAX - RANDOM_TAIL
    if len(os.fsencode(full)) <= room:
        return full
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    start = name
    while start and len(os.fsencode(f".{start}~{digest}.{kind}")) > room:
        start = start[:-1]  # whole characters: a cut UTF-8 sequence would be a name of bytes only
    return f".{start}~{digest}.{kind}"


def _remove(path: Path) -> bool:
    """Delete a file, link or folder of ours (a temp or old copy); absent is fine. Whether it is gone: a
    file in it that cannot be deleted (immutable, its folder read-only) leaves it, and callers that
    would trip over it later say so."""
    return removal_failure(path) is None


def removal_failure(path: Path) -> OSError | None:
    """_remove's work: None when `path` is gone, else the first error that left it, for the caller's line
    (EMFILE under `ulimit -n` was told as "a file in it is immutable or a folder read-only")."""
    failures: list[OSError] = []

    def failed(function, name, info) -> None:
        if isinstance(info[1], OSError):
            failures.append(info[1])

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=failed)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failures.append(exc)
    if not os.path.lexists(path):
        return None
    return failures[0] if failures else OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))


_HELD = threading.local()  # the lock files this thread holds: a command locks its output before its work


def _held_locks() -> set[Path]:
    if not hasattr(_HELD, "locks"):
        _HELD.locks = set()
    return _HELD.locks


@contextlib.contextmanager
def output_lock(target: Path | str, whole_run: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of `target` (a second run writing the same path fails at once), and
    remove what a killed run of it left behind (.T.tmp-new, .T.tmp-old). `whole_run`: a command locks its
    output before its work, and its own atomic_path (this thread) then finds the lock held, not refused (a
    second flock of the same file in one process refused the command's own write); any other taker is."""
    target = Path(target)
    if _sibling(target, TMP_LOCK) in _held_locks():
        yield
        return
    check_outside_stores(target)  # before a folder is made: `--out .git/x` made .git/x even when refused
    made = _missing_folders(real_path(target).parent)
    try:
        real_path(target).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(os_error_message(exc, target.parent)) from None
    lock = _sibling(target, TMP_LOCK)
    fd = -1
    try:
        # a few calls that never wait (LOCK_NB): a signal inside them is noted and raised once the lock is
        # held, here, where the `finally` removes it. One between mkstemp and its unlink left a
        # `.T.tmp-lock.XXXXXXXX` that no later run removes; one before this `try`, the lock itself
        with held():
            fd = _locked(lock, target)
        if whole_run:
            _held_locks().add(lock)
        for kind in (TMP_NEW, TMP_OLD, TMP_SPILL):
            remove_stale(_sibling(target, kind), target)
        check_removable(target)  # before the work: a long release refused only at its rename, after it all
        yield
    finally:
        if fd >= 0:
            _held_locks().discard(lock)
            with contextlib.suppress(OSError):
                os.unlink(lock)  # while still holding it: see the inode check in _locked
            os.close(fd)
            if not os.path.lexists(target):  # a failed or refused run leaves none of the folders it made
                for folder in made:
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)


def _locked(lock: Path, target: Path) -> int:
    """The lock file of `target`, opened and held (exclusive), or a DataError when another run holds it."""
    while True:
        fd = _open_lock(lock, target)
        flock_or_refuse(fd, f"{target}: another run is writing it (lock {lock}); wait for it to end", close=True)
        if not is_our_temp(fd):  # made by no run of ours (each is tagged before it has its name)
            os.close(fd)
            raise _not_our_temp(lock, target)
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            current = os.stat(lock)
            mine = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def flock_or_refuse(fd: int, busy: str, close: bool = False) -> None:
    """Take the exclusive flock of the open `fd` without waiting, or raise DataError(`busy`): the one line every
    lock of ours (an output's, tag's, replay-history's DEST) gives when another run holds it. `close`: `fd` is
    closed on refusal (else the caller's `finally` closes it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if close:
            os.close(fd)
        raise DataError(busy) from None


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those above it that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _open_lock(lock: Path, target: Path) -> int:
    """The lock file, opened: a new one is made under a name of its own, tagged, then linked in (so `lock`
    never names an untagged file of ours); one a run left is opened without following a link or blocking."""
    while True:
        try:
            fd, made = tempfile.mkstemp(prefix=f"{lock.name}.", dir=lock.parent)
        except OSError as exc:  # named after the output: the temp's name is ours, not the user's
            raise DataError(os_error_message(exc, target, tmp=lock)) from None
        try:
            mark_temp(fd)
            os.link(made, lock)
            return fd
        except FileExistsError:
            os.close(fd)
        except OSError as exc:
            os.close(fd)
            raise DataError(os_error_message(exc, target, tmp=Path(made))) from None
        finally:
            os.unlink(made)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:  # its holder just removed it
            continue
        except OSError:  # a link (or what cannot be opened) is no lock of ours
            raise _not_our_temp(lock, target) from None
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        raise _not_our_temp(lock, target)


def mark_temp(path: Path | int) -> None:
    """Tag a temp sibling this process made, by path or open file (remove_stale deletes only tagged ones)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(path, TEMP_XATTR, b"1", follow_symlinks=isinstance(path, int))


def is_our_temp(path: Path | int) -> bool:
    try:
        return os.getxattr(path, TEMP_XATTR, follow_symlinks=isinstance(path, int)) == b"1"
    except (OSError, AttributeError):
        return False


def remove_stale(path: Path, target: Path) -> None:
    """Delete what a killed run writing `target` left at `path` (a .T.tmp-* sibling): only a temp we tagged."""
    if is_our_temp(path):
        if (failure := removal_failure(path)) is not None:
            raise cannot_remove(path, target, failure)
        return
    if os.path.lexists(path):
        raise _not_our_temp(path, target)


def unremovable_folder(folder: Path | str) -> Path | None:
    """The first folder of `folder`'s tree (itself included; links are not followed) whose entries this process
    may not list or delete (read-only, `chmod -R a-w`, or unreadable), or None: what `shutil.rmtree` of the
    tree would leave. Files need no look: deleting one is its folder's write permission."""
    full = os.R_OK | os.W_OK | os.X_OK
    if not os.access(folder, full):
        return Path(folder)
    for here, folders, _ in os.walk(folder):  # a folder is looked at before os.walk lists it (it may not)
        for name in folders:
            inner = os.path.join(here, name)
            if not os.path.islink(inner) and not os.access(inner, full):
                return Path(inner)
    return None


def check_removable(target: Path | str) -> None:
    """Refuse (DataError, nothing touched) to replace the folder `target` when its old copy could not be deleted
    after the new one is in: a folder in it is read-only. It was moved aside all the same, the new output put in
    its place, and the run said so at exit 2, leaving `.T.tmp-old` (untagged: its tag cannot be set on a
    read-only folder) that every later run refused to touch."""
    target = Path(target)
    if target.is_symlink() or not target.is_dir():
        return
    locked = unremovable_folder(target)
    if locked is not None:
        inner = "" if locked == target else f"holds {shown(locked.relative_to(target).as_posix())!r}, "
        raise DataError(
            f"{shown(target)}: {inner}a folder this process may not write (read-only?), so its old copy could not "
            "be deleted; refusing to replace it (make it writable, e.g. `chmod -R u+w`, or choose another output path)"
        )


def cannot_remove(path: Path, target: Path, failure: OSError, placed: bool = False) -> DataError:
    """The line for an old copy (tagged as ours) that could not be deleted; `placed`: the new output is in."""
    copy = f"{shown(path)}: an old copy of {shown(target)} that a run of this command moved aside"
    if failure.errno in (errno.EMFILE, errno.ENFILE):  # a descriptor limit passes: the next run's remove_stale
        done = f"the new {shown(target)} is in place; " if placed else ""
        return DataError(
            f"{copy}, could not be deleted now ({failure.strerror}: a descriptor limit, `ulimit -n`?); "
            f"{done}the next run deletes it"
        )  # "delete it by hand" sent the user to do what the next run does
    denied = failure.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    reason = "a file in it is immutable or a folder read-only" if denied else failure.strerror or str(failure)
    return DataError(f"{copy}, which cannot be deleted ({reason}); delete it by hand")


def _not_our_temp(path: Path, target: Path) -> DataError:
    return DataError(
        f"{shown(path)}: named as a temp file of {shown(target)}, but no run of this command left it; "
        "refusing to delete it (move it away)"
    )


# The repository's own stores: git's and DVC's folders (.dvc/cache, .dvc/tmp inside), DVC's cache where
# `dvc cache dir` put it and a remote's local folder (.dvc/config). No command writes there, whatever the
# spelling (`a/../.git/x`, a link to .git): `publish --out .git/hub` and a stage's `.dvc/cache/x` did.
STORE_NAMES = (".git", ".dvc")
STORE_KEYS = {"cache": "dir", "remote": "url"}  # section -> the key naming a folder in .dvc/config
# What git and DVC read in a repository: an output of that name there (absent, or of ours) rewrote the pipeline
# (`params-doc dvc.yaml`, `sub/dvc.yaml`: DVC reads every one), what DVC tracks (`data/x.dvc`) or what git
# ignores (`.gitignore`). params.yaml and .gitmodules are read at the root only.
CONTROL_FILES = ("dvc.yaml", "dvc.lock", ".gitignore", ".dvcignore", ".gitattributes")
ROOT_CONTROL_FILES = ("params.yaml", ".gitmodules")


def check_outside_stores(target: Path | str) -> None:
    """Refuse, in one line naming the output and the store, an output that is, holds or lies inside a
    repository store (repository_stores) of the repository holding it or the current folder."""
    real = real_path(target)
    # one there already is the user's: refused as such when replaced (io.check_replaceable: "cannot prove")
    if not os.path.lexists(real) and (root := _control_file_root(real)) is not None:
        raise DataError(
            f"{shown(target)}: the output is a file git or DVC reads ({real.name} in the repository "
            f"{shown(root)}); refusing to write it (choose another output path)"
        )
    stores = repository_stores(real.parent)
    with contextlib.suppress(OSError):  # a deleted current folder has no repository to look in
        stores |= repository_stores(Path(os.getcwd()))
    store = next((s for s in sorted(stores) if s == real or s in real.parents or real in s.parents), None)
    if store is not None:
        what = "is" if store == real else "holds" if real in store.parents else "lies inside"
        raise DataError(
            f"{shown(target)}: the output {what} the repository store {shown(store)} (git's or DVC's); "
            "refusing to write there (choose an output path outside .git, .dvc and DVC's cache and remotes)"
        )


def _control_file_root(real: Path) -> Path | None:
    """The repository root whose git or DVC reads `real` by its name (CONTROL_FILES, a `.dvc` file), else None."""
    wide = real.name in CONTROL_FILES or (real.name.endswith(".dvc") and real.name != ".dvc")
    if not wide and real.name not in ROOT_CONTROL_FILES:
        return None
    for folder in real.parents if wide else (real.parent,):
        if any(os.path.lexists(folder / name) for name in STORE_NAMES):
            return folder
    return None


def repository_stores(start: Path) -> set[Path]:
    """The real paths of the stores of the nearest repository holding `start` (the first folder above with a
    `.git` or `.dvc`): those two and the cache and local remote folders its DVC config names. The nearest only:
    `dvc exp run --temp` runs the stages in a whole repository inside the outer one's .dvc/tmp."""
    for folder in (start, *start.parents):
        stores = {Path(os.path.realpath(folder / name)) for name in STORE_NAMES if os.path.lexists(folder / name)}
        if stores:
            real = Path(os.path.realpath(folder))
            for config in ("config", "config.local"):  # one holding the repository (`url = /data`) is no store here
                stores |= {
                    s for s in _configured_stores(folder / ".dvc" / config) if s != real and s not in real.parents
                }
            return stores
    return set()


def _configured_stores(config: Path) -> set[Path]:
    try:
        status = os.stat(config)
    except OSError:
        return set()
    if not stat.S_ISREG(status.st_mode):
        return set()
    return _stores_named(str(config), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=16)
def _stores_named(config: str, mtime_ns: int, size: int) -> set[Path]:
    """The local folders a DVC config names as its cache (`dir`) or a remote (`url`), relative ones read
    from the config's folder as DVC reads them; a URL with a scheme (s3://, ssh://) is no folder here."""
    try:
        with open(config, "rb") as file:
            text = file.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return set()
    found, section = set(), ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]'\" ").split(" ")[0].strip("'\"").lower()
            continue
        key, sep, value = line.partition("=")
        value = value.strip().strip("'\"")
        if not sep or STORE_KEYS.get(section) != key.strip().lower() or not value:
            continue
        value = value.removeprefix("file://")
        if "://" not in value:
            found.add(Path(os.path.realpath(os.path.join(os.path.dirname(config), os.path.expanduser(value)))))
    return found
