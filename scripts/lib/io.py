"""Shared plumbing every stage uses: stable ids, and outputs written atomically under a lock into
folders the pipeline can prove it wrote (parquet tables in and out: scripts/lib/tables.py).

Stages keep their logic pure (table in -> table out) and call these helpers only at the edges.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.lib.dvc_cache import holds_locked_bytes
from scripts.lib.errors import DataError, os_error_code, os_error_message, shown
from scripts.lib.interrupts import Interrupted, held, holding, stop_if_received
from scripts.lib.marks import (
    MARKER,
    current_command,
    edited_since,
    files_under,
    holds_marker,
    is_real_folder,
    mark_file,
    mark_folder,
    same_bytes,
    tagged_as_written,
    unproven_rank,
)
from scripts.lib.nesting import dumps_json
from scripts.lib.side_files import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES  # re-exported: read beside the stages
from scripts.lib.side_files import bounded_bytes as bounded_bytes
from scripts.lib.side_files import check_folder_or_file as check_folder_or_file
from scripts.lib.side_files import config_text as config_text
from scripts.lib.side_files import file_kind as file_kind
from scripts.lib.side_files import present_file as present_file
from scripts.lib.side_files import regular_file as regular_file
from scripts.lib.temps import (
    TEMP_XATTR,
    TMP_NEW,
    TMP_OLD,
    _remove,
    _sibling,
    cannot_remove,
    check_outside_stores,
    check_removable,
    mark_temp,
    output_lock,
    real_path,
    removal_failure,
    remove_stale,
    sibling_name,
)


def _read_umask() -> int:
    """The process's umask: setting one is the only way to read it (os.umask(os.umask(0)) read back the 0)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # once at import, before any thread starts

# The normalised prompt table every reader emits (docs/contracts.md).
PROMPT_COLUMNS = ["id", "source", "prompt", "split", "image", "width", "height", "meta"]
# The two splits of every split folder and release.
SPLITS = ("train", "validation")
# An image inside an archive is "<archive path>!/<member>" (scripts/lib/archive.py), so no plain path may hold it.
REF_SEPARATOR = "!/"


def stable_id(source: str, key: str | int) -> str:
    """Id of a row: the same on every run and machine (never Python's salted hash())."""
    return hashlib.sha256(f"{source}\x00{key}".encode()).hexdigest()[:16]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_output_kind(target: Path | str) -> None:
    """Refuse an output path that is a device, FIFO or socket (replacing /dev/null as root breaks the
    system; a FIFO would block), or a symbolic link (replacing it loses the link; writing through it
    writes wherever it points) unless the link points into DVC's cache (cache.type symlink: DVC's)."""
    path = os.fspath(target)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise DataError(os_error_message(exc, target)) from None
    if stat.S_ISLNK(mode):
        real = Path(os.path.realpath(path))
        if any(part.name == "cache" and part.parent.name == ".dvc" for part in real.parents):
            return
        raise DataError(
            f"{shown(target)}: is a symbolic link (to {shown(os.readlink(path))}); refusing to replace "
            "or write through it (remove the link, or name the file it points at)"
        )
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{shown(target)}: is {file_kind(mode)}, not a regular file; refusing to replace it")


def check_not_input(output: Path | str, inputs) -> None:
    """Refuse an output that is one of the inputs, a folder holding one (it would be replaced), or a path
    inside an input folder (it would replace what is read: `data/splits/S`, a split folder of `data/splits`)."""
    out = real_path(output)
    for item in inputs:
        if item is None:
            continue
        src = Path(os.path.realpath(item))  # an input named through a link is what the link names
        if src == out or out in src.parents or (src in out.parents and src.is_dir()):
            what = "is" if src == out else "holds" if out in src.parents else "is inside"
            raise DataError(f"{shown(output)}: the output {what} the input {shown(item)}; choose another output path")


def check_apart(*outputs: Path | str | None) -> None:
    """Refuse outputs of one command where one is, or lies inside, another (whether or not they exist yet):
    the inner one would be renamed in, then replaced with its outer folder or refused half-way."""
    named = [(Path(item), real_path(item)) for item in outputs if item is not None]
    for a, real_a in named:
        for b, real_b in named:
            if a is not b and (real_a == real_b or real_b in real_a.parents):
                raise DataError(
                    f"{shown(a)}: lies inside (or is) the output {shown(b)}; give each output a place of its own"
                )


def file_is_ours(path: Path | str, new: Path | str | None = None) -> bool:
    """Whether replacing the file `path` loses nothing of anyone else's: we tagged it and it is unchanged
    since, it holds `new`'s bytes, DVC records it as an output with these bytes, or its folder holds the
    MARKER. Its name alone proves nothing, nor does git holding it (dvc.yaml and params.yaml are
    committed: a mistyped output path wrote over them)."""
    path = Path(path)
    if (
        tagged_as_written(path)
        or holds_marker(path.parent)
        or holds_locked_bytes(real_path(path), files_under, current_command())
    ):
        return True
    return new is not None and same_bytes(path, Path(new))


def _not_ours(path: Path) -> DataError:
    return DataError(
        f"{shown(path)}: exists and this command cannot prove it wrote it (no t2i-datasets mark, or changed "
        f"since; not a DVC output; not the bytes it would write); refusing to replace it "
        f"(choose another output path, or move the file away)"
    )


# The command line's arguments that end in a slash: a user naming a folder. The argument parser hands
# `out/` over as Path("out"), so a file output would be written as the file `out`; set by scripts.cli.
_FOLDER_SPELLINGS: set[str] = set()


def note_folder_spellings(argv: list[str]) -> None:
    """Remember which arguments of this command end in a slash (check_file_spelling refuses them as files)."""
    _FOLDER_SPELLINGS.clear()
    _FOLDER_SPELLINGS.update(os.path.normpath(a) for a in argv if a.endswith(("/", os.sep)) and a.strip("/" + os.sep))


def check_file_spelling(path: Path | str) -> None:
    """Refuse a file output the user spelled as a folder (`out/`), in one line, before anything is written."""
    if os.path.normpath(path) in _FOLDER_SPELLINGS:
        raise DataError(
            f"{shown(path)}/: names a folder (it ends with /), but this command writes a file; give a file path"
        )


def check_files_ours(*paths: Path | str, inputs=()) -> None:
    """Before a command writing several files beside each other (S.parquet, S.report.json) writes one:
    refuse, in one line, if any is one of `inputs` or inside one (check_not_input: `clean S p.parquet
    p.parquet` would replace what it reads) or exists and is not a regular file of ours (file_is_ours)."""
    for path in map(Path, paths):
        check_file_spelling(path)
        check_outside_stores(path)
        check_not_input(path, inputs)
        if not os.path.lexists(path):
            continue
        check_output_kind(path)
        if path.is_dir():
            raise DataError(f"{shown(path)}: is a folder, expected a file path")
        if not file_is_ours(path):
            raise _not_ours(path)


def check_replaceable(target: Path | str, new: Path | str | None = None, writes=()) -> None:
    """Refuse (DataError, nothing touched) to replace `target` by `new` unless it is absent, a file that is ours
    (file_is_ours), or a folder that is empty, holds the MARKER, or whose every file `new` holds with the same bytes
    (a name proves nothing: a user's README.md stays). A file `new` replaces a regular file, never a folder, a link or
    a device. `writes`, before the work (no `new`): the names written there, a regular file of one proved at the end."""
    target = Path(target)
    check_outside_stores(target)  # never into .git or .dvc, whatever wrote the new copy
    if not os.path.lexists(target):
        return
    check_output_kind(target)
    if new is not None and not Path(new).is_dir():
        if target.is_dir():
            raise DataError(f"{shown(target)}: is a folder, expected a file path")
        if not file_is_ours(target, new):
            raise _not_ours(target)
        return
    if target.is_symlink() or not target.is_dir():
        raise DataError(f"{shown(target)}: exists and is not a folder; refusing to replace it (move it away first)")
    if holds_marker(target) or holds_locked_bytes(real_path(target), files_under, current_command()):
        return

    # named first: a file `new` does not hold at all (the user's, where another is only other bytes of ours),
    # then one no mark of ours proves unchanged (marks.unproven_rank: added or edited since)
    def naming_order(rel: str) -> tuple[bool, int]:
        return (new is not None and os.path.lexists(Path(new) / rel)) or rel in writes, unproven_rank(target, rel)

    for rel in sorted(files_under(target), key=naming_order):
        if (rel in writes or (rel == MARKER and bool(writes))) and stat.S_ISREG(os.lstat(target / rel).st_mode):
            continue  # a file the command writes again: proved or refused by its bytes at the end
        if new is not None and same_bytes(target / rel, Path(new) / rel):
            continue  # a file the command writes again as it is
        if new is not None and rel.endswith("/") and is_real_folder(Path(new) / rel):
            continue  # an empty folder where the command writes a folder too
        if edited_since(target / rel):
            raise DataError(
                f"{shown(target)}: holds {shown(rel)!r}, edited since this command wrote it (so it cannot prove "
                f"it its own); refusing to replace the folder (move that file out of it, or delete it yourself)"
            )
        raise DataError(
            f"{shown(target)}: holds {shown(rel)!r}, which this command did not write (the folder's {MARKER} "
            f"marker absent or changed since, and not the bytes it would write); refusing to replace the folder (point the command at "
            f"its own output path, or move the folder away)"
        )


def check_outputs_ours(folder: Path | str, names) -> None:
    """Refuse to write the outputs `names` into `folder` (a folder of separate outputs, e.g. a stage's
    prompts.txt and report.json, a release's README.md beside its split folders) over files we cannot
    prove ours: one is ours when the folder holds the MARKER, or when file_is_ours says so (our mark on
    it, unchanged; DVC records it). A marked folder beside a file proves nothing of the file."""
    folder = Path(folder)
    present = [name for name in names if os.path.lexists(folder / name)]
    for name in present:
        check_output_kind(folder / name)
    if not present or holds_marker(folder):
        return
    for name in present:
        if not file_is_ours(folder / name):
            raise DataError(
                f"{shown(folder / name)}: exists and this command cannot prove it wrote it (no {MARKER} "
                f"marker, no t2i-datasets mark on it or changed since, not a DVC output); refusing to "
                f"replace it (choose another output folder, or move the file away)"
            )


def replace_path(new: Path, target: Path, is_dir: bool) -> None:
    """Rename `new` over `target` (a folder: through replace_together, the old one renamed aside, then
    deleted), unless a signal came while `new` was written: a Ctrl-C never leaves an output that looks finished."""
    if is_dir and os.path.lexists(target):
        replace_together([(new, target)])
        return
    if not holding():  # inside held() (commit_together) the renames go on; the signal waits for the last
        stop_if_received()
    check_replaceable(target, new)
    os.replace(new, target)


def replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each new path over its target, all or none (a release's entries never mix two runs): every
    target checked first, then, signals held, each existing one renamed aside and each new one in; a
    failure puts every name back as it was. The old copies are deleted last."""
    if not holding():
        stop_if_received()
    for new, target in pairs:
        check_replaceable(target, new)
        check_removable(target)
    aside: list[tuple[Path, Path]] = []
    placed: list[tuple[Path, Path]] = []
    signalled: Interrupted | None = None
    try:
        with held():  # a signal between these renames left an output gone and its old copy untagged
            try:
                for _, target in pairs:
                    if os.path.lexists(target):
                        old = _sibling(target, TMP_OLD)
                        os.replace(target, old)
                        mark_temp(old)
                        aside.append((old, target))
                for new, target in pairs:
                    os.replace(new, target)
                    placed.append((new, target))
            except BaseException:
                with contextlib.suppress(OSError):
                    for new, target in reversed(placed):
                        os.replace(target, new)
                    for old, target in reversed(aside):
                        os.replace(old, target)
                raise
    except Interrupted as exc:  # held() raises a signal that came during the renames once they are all done
        if len(placed) != len(pairs):
            raise
        signalled = exc  # the old copies go first: a Ctrl-C there left `.T.tmp-old` (sample-data, release)
    for old, target in aside:
        if (failure := removal_failure(old)) is not None:
            raise cannot_remove(old, target, failure, placed=True)
    if signalled is not None:
        raise signalled


def commit_together(stack: contextlib.ExitStack) -> None:
    """Close `stack`, whose atomic_paths finish a command's outputs, then rename them in all or none
    (replace_together), signals held: a Ctrl-C that came before stops the run with none renamed, one that
    comes during waits for the last rename. Every output is checked again first: one a user put in place
    since the start is refused before any is renamed. Each atomic_path renamed its own as it closed, so a
    later one failing to finish (its folder's mark on a disk just full) left the earlier ones in place: a
    SimpleTuner config beside no parquet."""
    stop_if_received()
    for target, tmp in list(_open_outputs()):
        check_replaceable(target, tmp)
    finished: list[tuple[Path, Path]] = []  # (target, temp) of each output whose atomic_path has finished it
    _OPEN.finished = finished
    try:
        with held():
            try:
                stack.close()
            finally:
                _OPEN.finished = None
            replace_together([(tmp, target) for target, tmp in finished])
    except BaseException as exc:
        for _, tmp in finished:
            _remove(tmp)
        if isinstance(exc, OSError) and finished:  # a rename failed: name its output, never a temp path
            raise _renaming_failure(exc, finished) from None
        raise


def _renaming_failure(exc: OSError, finished: list[tuple[Path, Path]]) -> DataError:
    """The line for a rename of finished (target, temp) pairs that failed: the target whose temp it names."""
    named = str(exc.filename)
    target = next((t for t, tmp in finished if named.startswith(str(tmp))), finished[0][0])
    return DataError(os_error_message(exc, target, Path(named)))


@contextlib.contextmanager
def outputs_together() -> Iterator[None]:
    """Every atomic_path that finishes inside the block waits, its temp written whole, and all are renamed in
    at the block's end (replace_together), or, if the block fails, none. For a command whose outputs are
    written in separate steps (pr-comment: plots/, then each contact sheet, then comment.md, each renamed in
    as it closed): a full disk at comment.md left this run's sheets beside the previous run's comment."""
    if getattr(_OPEN, "finished", None) is not None:  # inside commit_together: it renames them with its own
        yield
        return
    finished: list[tuple[Path, Path]] = []
    _OPEN.finished = finished
    try:
        try:
            yield
        finally:
            _OPEN.finished = None
        try:
            replace_together([(tmp, target) for target, tmp in finished])
        except OSError as exc:  # a rename failed: name its output, never a temp path
            raise _renaming_failure(exc, finished) from None
    except BaseException:
        for _, tmp in finished:
            _remove(tmp)
        raise


_OPEN = threading.local()


def _open_outputs() -> list[tuple[Path, Path]]:
    """(target, temp) of each atomic_path of this thread whose block is running."""
    if not hasattr(_OPEN, "outputs"):
        _OPEN.outputs = []
    return _OPEN.outputs


# pyarrow's OSError text: "Error writing bytes to file. Detail: [errno 27] File too large", or "Failed to open
# local file '<a temp path>'. Detail: [errno 24] ...": told as the OS tells its errno, never naming a temp
_ARROW_ERRNO = re.compile(r"Detail: \[errno (\d+)\]")


def _arrow_errno(exc: BaseException) -> int | None:
    return int(m.group(1)) if isinstance(exc, OSError) and (m := _ARROW_ERRNO.search(str(exc))) else None


@contextlib.contextmanager
def atomic_path(target: Path | str, is_dir: bool = False, mark: bool = True, inputs=()) -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it over `target` only if the block succeeds.

    Readers of `target` never see a half-written file, and a crash leaves the old one intact. A
    folder output gets the MARKER (unless mark=False) and never replaces a folder this pipeline did
    not write (check_replaceable); an output that is or holds one of
    `inputs` is refused, and so is one that is a link, a device or a FIFO (check_output_kind). One
    process writes a target at a time (output_lock). OSErrors (disk full, a file where a folder
    should be) become one-line DataErrors naming the path.
    """
    target = Path(target)
    if not is_dir:
        check_file_spelling(target)
    check_not_input(target, inputs)
    check_output_kind(target)
    if target.is_dir() and not is_dir:
        raise DataError(f"{target}: is a folder, expected a file path")
    if os.path.lexists(target) and is_dir and not target.is_dir():
        raise DataError(f"{target}: exists and is not a folder")
    for parent in target.parents:  # a file where a folder must be: name it (mkdir would say only ENOTDIR)
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise DataError(f"{parent}: is a file, so {target} cannot be written under it")
            break
    with output_lock(target):
        tmp = _sibling(target, TMP_NEW)
        try:
            if is_dir:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            mark_temp(tmp)  # removed again below: the output it becomes is no temp
            _open_outputs().append(entry := (target, tmp))
            try:
                yield tmp
            finally:
                _open_outputs().remove(entry)
            if is_dir and mark:
                mark_folder(tmp)
            os.chmod(tmp, (0o777 if is_dir else 0o666) & ~UMASK)  # in case the block re-created it
            with contextlib.suppress(OSError, AttributeError):
                os.removexattr(tmp, TEMP_XATTR, follow_symlinks=False)
            if not is_dir:
                mark_file(tmp)
            if (finished := getattr(_OPEN, "finished", None)) is not None:
                finished.append((target, tmp))  # commit_together renames it in with the others
            else:
                replace_path(tmp, target, is_dir)
        except BaseException as exc:
            _remove(tmp)  # best effort: the error that stopped the run is the one to tell
            if isinstance(exc, OSError) and (code := _arrow_errno(exc)) is None:
                raise DataError(os_error_message(exc, target, tmp)) from None
            if isinstance(exc, Exception) and (code := _arrow_errno(exc) or os_error_code(exc)) is not None:
                raise DataError(f"{shown(target)}: cannot write ({os.strerror(code)})") from None
            if isinstance(exc, UnicodeEncodeError) and str(tmp) in str(exc.object):  # a name inside the temp
                raise DataError(
                    f"{shown(target)}: cannot be encoded as {exc.encoding} (not UTF-8?); rename it"
                ) from None
            if isinstance(exc, DataError) and str(tmp) in str(exc):  # a file written inside this folder
                raise DataError(str(exc).replace(str(tmp), str(target))) from None
            raise


@contextlib.contextmanager
def staging_dir(output: Path | str) -> Iterator[Path]:
    """A fresh folder beside `output` (.OUTPUT.staging-*) under the output's lock, removed at the end
    (a killed run's, tagged, by the next run; a user's of that name stays); OSErrors become one line."""
    output, real = Path(output), real_path(output)
    with output_lock(output):
        prefix = sibling_name(real.name, "staging-")  # shortened as every temp name (NAME_MAX)
        for stale in real.parent.glob(f"{glob.escape(prefix)}*"):
            with contextlib.suppress(DataError):
                remove_stale(stale, output)
        staging = None
        try:
            with held():  # a signal between mkdtemp and the tag left a folder no later run could prove its own
                staging = Path(tempfile.mkdtemp(prefix=prefix, dir=real.parent))
                mark_temp(staging)
            yield staging
        except OSError as exc:
            raise DataError(os_error_message(exc, output, staging)) from None
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


def write_json(obj: Any, path: Path | str) -> None:
    """Deterministic JSON (sorted keys, fixed indent), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj, path), encoding="utf-8")


@contextlib.contextmanager
def writing(target: Path | str) -> Iterator[None]:
    """An OSError inside (a full disk while `target`'s temp is written) is `target`'s one line: with several
    outputs' atomic_paths open at once, the innermost would name its own target, whichever file failed."""
    try:
        yield
    except OSError as exc:
        raise DataError(os_error_message(exc, target)) from None


def json_text(obj: Any, target: Path | str = "a JSON output") -> str:
    """write_json's text, for a file written inside a caller's atomic_path; NaN is a bug of ours, refused (nesting)."""
    return dumps_json(obj, target, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
