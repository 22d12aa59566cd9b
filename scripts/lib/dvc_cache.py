"""The one reader of DVC's internals: a directory output as dvc.lock records it, found in the DVC cache;
and whether a path still holds the bytes a dvc.lock records (io.file_is_ours's DVC proof).

generate@S uses it to start the generation store from the output's previous version: DVC deletes a
stage's outputs before it runs, and a fresh clone after `dvc pull` has no store, so without it a
threshold change would re-render what the cache already holds. It is only ever a head start: every
failure to read the lock or the cache means "nothing known", never an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

import yaml

from scripts.lib.errors import DataError
from scripts.lib.nesting import loads_json
from scripts.lib.side_files import MAX_CONFIG_BYTES, bounded_bytes

LOCK = "dvc.lock"
# cache file names: checked, so a doctored lock or listing never names a path of its choosing
MD5 = re.compile(r"[0-9a-f]{32}")
DIR_OID = re.compile(r"[0-9a-f]{32}\.dir")
PYTHON = re.compile(r"python[0-9.]*")  # `python`, `python3`, `python3.11`, a venv's bin/python
SHELL_SEPARATORS = ("&&", "||", ";", "|")


def locked_output_oid(output: Path | str, root: Path | str = ".") -> str | None:
    """The md5 dvc.lock (in `root`) records for `output` when it is a directory (`<md5>.dir`), else None."""
    rel = os.path.relpath(os.path.abspath(output), os.path.abspath(root))
    if rel.startswith(".." + os.sep):
        return None
    oid = locked_outputs(Path(root) / LOCK).get(rel)
    return oid if oid is not None and DIR_OID.fullmatch(oid) else None


def cached_directory(output: Path | str, root: Path | str = ".") -> dict[str, Path]:
    """file name inside `output` -> its file in the DVC cache, for `output` as dvc.lock records it.
    Empty outside a DVC repository, for an output dvc.lock does not list as a directory, or when the
    cache lacks the listing. The files named may be absent too (a partial `dvc pull`): check them."""
    oid = locked_output_oid(output, root)
    if oid is None:
        return {}
    found = _from_cache(root, lambda odb: {rel: Path(odb.oid_to_path(md5)) for rel, md5 in _listing(odb, oid).items()})
    return found or {}


def directory_listing(root: Path | str, oid: str) -> dict[str, str] | None:
    """{relpath: md5} of a folder output `oid` (`<md5>.dir`), from the .dir object in the DVC cache of the
    repository holding `root` (None when there is none, or the cache lacks it)."""
    if not DIR_OID.fullmatch(oid):
        return None
    return _from_cache(root, lambda odb: _listing(odb, oid))


def _from_cache(root: Path | str, read):
    """read(the repository's local cache), or None when DVC finds no repository or the cache fails."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:  # the cache may live elsewhere (cache.dir, `dvc exp run --temp`)
            return read(repo.cache.local)
    except (DvcException, OSError, UnicodeDecodeError, ValueError):
        return None


def _listing(odb, oid: str) -> dict[str, str]:
    """{relpath: md5} of the .dir object `oid` (entries with a bad md5 left out: they never name a path)."""
    # a listing nested deeper than any DVC writes is TooDeep (a ValueError: "nothing known"), not a RecursionError
    listing = Path(odb.oid_to_path(oid))
    if not stat.S_ISREG(os.stat(listing).st_mode):  # a FIFO there would block the read for good
        raise ValueError(f"{oid}: not a file")
    entries = loads_json(listing.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{oid}: not a .dir listing")
    return {
        e["relpath"]: str(e["md5"])
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("relpath"), str) and MD5.fullmatch(str(e.get("md5")))
    }


# --- proving an output ours: the bytes a dvc.lock records ---------------------------------------------


def holds_locked_bytes(real: Path, files_under: Callable[[Path], list[str]], command: str = "") -> bool:
    """A stage records `real` (a path as the kernel resolves it), or a folder above it, as an output (an
    `outs` path of a dvc.lock above it) of a stage whose cmd runs `command` (`python -m scripts clean`;
    any command when ""), and `real` still holds the bytes the lock records, which DVC's
    cache keeps: a file's md5 is the lock's; every file of a folder (`files_under`: their relative paths)
    is in the lock's .dir listing, read from the cache, with its md5. So a checked-out copy edited by hand,
    or a file a user added to an output folder, is the user's. A .gitignore line (`/name`) proves nothing
    (a user writes one to keep a private file out of git), nor a `dvc add` file: what a user adds is the
    user's data, not a stage's output."""
    chain = [real, *real.parents]
    for depth, folder in enumerate(chain[1:], start=1):
        outs = _locked(folder / LOCK)
        for item in chain[:depth]:
            recorded = outs.get(item.relative_to(folder).as_posix())
            if recorded is not None:
                md5, commands = recorded
                runs = not command or command in commands  # another command's output is that command's
                return runs and _holds_recorded(real, item, md5, folder, files_under)
        if (folder / ".dvc").is_dir():  # the repository's root: a dvc.lock above it is another project's
            break
    return False


def locked_outputs(lock: Path) -> dict[str, str]:
    """The output paths a dvc.lock records (a stage's `outs`, relative to its folder) and the md5 of each
    ('' where the lock names none; a folder's ends in .dir)."""
    return {path: md5 for path, (md5, _) in _locked(lock).items()}


def _locked(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """locked_outputs, each with the `python -m scripts` commands its stage's cmd runs."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG((st := os.stat(lock)).st_mode):
            return _parsed_outputs(str(lock), st.st_mtime_ns, st.st_size)
    return {}


def _lock_text(lock: str, size: int) -> str:
    """The lock's text, `size` bytes as stat'ed, read bounded (side_files.bounded_bytes: every command's output
    check read a dvc.lock of gigabytes whole); one grown or replaced since is a ValueError: it proves nothing."""
    try:
        data = bounded_bytes(lock, MAX_CONFIG_BYTES)
    except DataError as exc:  # over the cap, or a FIFO swapped in
        raise ValueError(str(exc)) from None
    if len(data) != size:
        raise ValueError(f"{lock}: changed while read")
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # newlines as read_text read them


@functools.lru_cache(maxsize=16)
def _parsed_outputs(lock: str, mtime_ns: int, size: int) -> dict[str, tuple[str, frozenset[str]]]:
    """_locked of one version of the file: a lock of thousands of lines is parsed once, not per output."""
    from scripts.lib.params.yaml_text import read_yaml

    try:
        data = read_yaml(_lock_text(lock, size))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):  # TooDeep is a ValueError
        return {}
    stages = data.get("stages") if isinstance(data, dict) else None
    entries = list(stages.values()) if isinstance(stages, dict) else []
    return {
        os.path.normpath(out["path"]): (str(out.get("md5") or ""), _commands_run(entry.get("cmd")))
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("outs"), list)
        for out in entry["outs"]
        if isinstance(out, dict) and isinstance(out.get("path"), str)
    }


def _commands_run(cmd) -> frozenset[str]:
    """The commands a stage's cmd (a line, or a list of them) runs as `python -m scripts NAME ...` where a
    shell command starts (the line's start, or after `&&`, `||`, `;`, `|`); words in an `echo`, after a
    `#`, or `scripts` as an argument name no command of ours."""
    found: set[str] = set()
    for line in cmd if isinstance(cmd, list) else [cmd]:
        with contextlib.suppress(ValueError):  # unbalanced quotes: runs none of ours
            words = shlex.split(line, comments=True) if isinstance(line, str) else []  # (None would read stdin)
            starts = [0] + [i + 1 for i, word in enumerate(words) if word in SHELL_SEPARATORS]
            found.update(
                words[i + 3]
                for i in starts
                if i + 3 < len(words)
                and PYTHON.fullmatch(os.path.basename(words[i]))
                and words[i + 1 : i + 3] == ["-m", "scripts"]
            )
    return frozenset(found)


def _holds_recorded(path: Path, out: Path, md5: str, root: Path, files_under) -> bool:
    """`path` (the output `out` itself, or a file or folder inside it) holds what the lock records for `out`."""
    if not DIR_OID.fullmatch(md5):
        return path == out and file_md5(path) == md5
    repository = next((f for f in (root, *root.parents) if (f / ".dvc").is_dir()), root)
    listing = directory_listing(repository, md5)
    if listing is None:  # the cache does not hold the folder's listing: nothing to compare with
        return False
    inside = path.relative_to(out).as_posix()
    if not path.is_dir() or path.is_symlink():
        return _listed(listing, inside, path)
    prefix = "" if inside == "." else inside + "/"
    return all(_listed(listing, prefix + rel, path / rel) for rel in files_under(path))


def _listed(listing: dict[str, str], rel: str, path: Path) -> bool:
    """The listing holds `rel` with `path`'s bytes: an entry it lacks (a user's file, link or empty folder,
    whose file_md5 is None too) is not the lock's."""
    recorded = listing.get(rel)
    return recorded is not None and recorded == file_md5(path)


def file_md5(path: Path) -> str | None:
    """The md5 DVC 3 records for a regular file's bytes (None: not a regular file, or unreadable)."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def repository_cache(folder: Path | str) -> str | None:
    """The DVC cache of the repository holding `folder`: its `.dvc/cache` when that is a folder itself. A
    `.dvc/cache` in the current folder, or one that is a link (to `/`, to a shared folder), proves nothing."""
    for above in (Path(folder), *Path(folder).parents):
        if (above / ".dvc").is_dir() and not (above / ".dvc").is_symlink():
            cache = above / ".dvc" / "cache"
            return str(cache) if cache.is_dir() and not cache.is_symlink() else None
    return None


def is_cache_copy(path: Path | str, root: Path | str = ".", opened: os.stat_result | None = None) -> bool:
    """`path` is the very file (same inode) the DVC cache of the repository at `root` holds under its md5
    (wherever `dvc cache dir` put it): what a checkout with cache.type hardlink puts in the workspace.
    `opened`: the fstat of the file a reader has open, proved to be that cache file (the name only finds it)."""
    md5, files = file_md5(Path(path)), _cache_files(os.path.abspath(root))
    if md5 is None or files is None:
        return False
    try:
        return os.path.samestat(os.stat(Path(files) / md5[:2] / md5[2:]), opened or os.stat(path))
    except OSError:
        return False


@functools.lru_cache(maxsize=8)
def _cache_files(root: str) -> str | None:
    """The folder of file objects (`<cache>/files/md5`) of the repository at `root`, as DVC reads its config."""
    return _from_cache(root, lambda odb: odb.path)


def cache_folder(root: Path | str = ".") -> str | None:
    """The DVC cache of the repository at `root` (`.dvc/cache`, or where `dvc cache dir` put it)."""
    files = _cache_files(os.path.abspath(root))
    return os.path.dirname(os.path.dirname(files)) if files else None
