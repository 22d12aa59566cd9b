"""How a command proves an output its own: the mark on a file it wrote (an extended attribute holding the
command's name and the file's identity) and the marker in a folder it wrote (marked with a digest of
everything written beside it). io.py's checks use these proofs before any output is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

# A folder a command wrote holds this file, so a later run may replace it whole. A folder without it
# is replaced only when every file in it would be written again with the same bytes (nothing of anyone
# else's is lost): file names alone prove nothing, nor does git holding them.
# Fixed content: the marker is part of DVC-tracked folder outputs, so its bytes never vary.
MARKER = ".t2i-output"
MARKER_TEXT = "Written by t2i-datasets (python -m scripts): the command that wrote this folder replaces it whole.\n"
# A file a command wrote carries this extended attribute (metadata, not bytes: DVC's md5s stay), holding
# the command's name and the file's identity, so a later run of that command may replace it while
# unchanged (file_is_ours has the other proofs); another command's output stays that command's.
OWNER_XATTR = "user.t2i-datasets.output"
# The command this process runs (`clean`, `params-doc`), set by scripts.cli; children inherit it.
COMMAND_ENV = "T2I_DATASETS_COMMAND"


def note_command(name: str) -> None:
    """Name the command this process runs: what it writes is that command's, what it replaces must be."""
    os.environ[COMMAND_ENV] = name


def current_command() -> str:
    return os.environ.get(COMMAND_ENV, "")


def _owner_mark(identity: bytes) -> bytes:
    """The attribute a command writes: its name, then what it wrote (an output of `clean` is not `params-doc`'s)."""
    return current_command().encode("utf-8", "surrogateescape") + b"\0" + identity


def files_under(folder: Path) -> list[str]:
    """Relative paths of the files and links under `folder`, and of its empty folders (ending in `/`): a
    user's empty folder, made to keep a place, is theirs as much as a file is."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            found.append((base / name).relative_to(folder).as_posix())
        if not dirs and not files and base != folder:
            found.append(base.relative_to(folder).as_posix() + "/")
    return sorted(found)


def is_real_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def same_bytes(a: Path, b: Path) -> bool:
    try:
        if os.path.islink(a) or os.path.islink(b) or os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                chunk = fa.read(1 << 20)
                if chunk != fb.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


def _identity(path: Path | str) -> bytes:
    """What the mark holds: inode, size, mtime. A copy that kept the attribute (`cp -a`, `rsync -X`) is
    another inode; an edit in place changes the size or the time: neither is what the command wrote."""
    return "{0.st_ino}:{0.st_size}:{0.st_mtime_ns}".format(os.lstat(path)).encode()


def mark_file(path: Path | str) -> None:
    """Tag a file this command wrote (content final) with its _identity. Without user attributes (the
    file system, or no os.setxattr) it stays untagged: a later run proves it ours another way or refuses."""
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(path, OWNER_XATTR, _owner_mark(_identity(path)), follow_symlinks=False)


def tagged_as_written(path: Path) -> bool:
    """The mark is there and still describes this file: this command wrote it and no one changed it since."""
    try:
        return os.getxattr(path, OWNER_XATTR, follow_symlinks=False) == _owner_mark(_identity(path))
    except (OSError, AttributeError):
        return False


def mark_folder(folder: Path | str) -> None:
    """Write the MARKER into a finished folder output (atomic_path, a staging folder), marked with its own
    identity and its folder's (_folder_identity): its bytes are fixed, so only the mark tells ours from a
    copy of an output folder or a user's hand-made one, and the folder's identity from one a user added
    to or edited since."""
    for rel in files_under(Path(folder)):
        _mark_own(Path(folder) / rel)  # each file too: a folder changed since names the file (first_unproven)
    marker = Path(folder) / MARKER
    marker.write_text(MARKER_TEXT, encoding="utf-8")
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(marker, OWNER_XATTR, _owner_mark(_marker_mark(Path(folder))), follow_symlinks=False)


def holds_marker(folder: Path | str) -> bool:
    """`folder` holds the MARKER we wrote there, and every file in it is as we wrote it: a folder output
    of ours, replaced whole. A file added, removed, replaced or edited since makes it the user's."""
    try:
        mark = os.getxattr(Path(folder) / MARKER, OWNER_XATTR, follow_symlinks=False)
    except (OSError, AttributeError):
        return False
    return mark == _owner_mark(_marker_mark(Path(folder)))


def _marker_mark(folder: Path) -> bytes:
    return _identity(folder / MARKER) + b" " + _folder_identity(folder)


def _folder_identity(folder: Path) -> bytes:
    """A digest of the _identity (inode, size, mtime) and name of every file, link and empty folder under
    `folder` but the MARKER: one stat a file, no read (a release of 100k images: well under a second)."""
    digest = hashlib.sha256()
    for rel in files_under(folder):
        if rel != MARKER:
            digest.update(rel.encode("utf-8", "surrogateescape") + b"\0" + _identity(folder / rel) + b"\n")
    return digest.hexdigest().encode()


def _mark_own(path: Path) -> None:
    """mark_file a file of a finished folder output, unless another name shares it (an image linked in from
    the generation store or DVC's cache): its mark is that name's, and this command's would overwrite it."""
    try:
        status = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(status.st_mode) and status.st_nlink == 1:
        mark_file(path)


def unproven_rank(folder: Path, rel: str) -> int:
    """How surely the entry `rel` of a folder output is not as this command wrote it, to name the user's first
    when the folder is refused: 0 a file whose mark is another file's or stale, or a lone file with none (added
    since: mark_folder marked every lone file it wrote), 1 what no mark tells (a link, an empty folder, a file
    sharing its inode), 2 a file this command wrote, unchanged since, 3 the MARKER. The MARKER was named: a
    `notes.txt` added to a release's `train/` was told as "holds '.t2i-output', which this command did not write"."""
    path = folder / rel
    if rel == MARKER:
        return 3  # named last: it changed with the folder, whatever changed
    if rel.endswith("/"):
        return 1
    if tagged_as_written(path):
        return 2
    try:
        status = os.lstat(path)
    except OSError:
        return 1
    try:
        os.getxattr(path, OWNER_XATTR, follow_symlinks=False)
        return 0  # marked, but not as this file now is
    except (OSError, AttributeError):
        return 0 if stat.S_ISREG(status.st_mode) and status.st_nlink == 1 else 1


def edited_since(path: Path) -> bool:
    """`path` carries this command's mark for this very inode, but its size or time is no longer the mark's:
    a file this command wrote, edited in place since (a copy, or one saved over it, is another inode)."""
    if path.name == MARKER:  # its mark changes with anything beside it: the folder's change, not the marker's
        return False
    try:
        mark = os.getxattr(path, OWNER_XATTR, follow_symlinks=False)
        inode = os.lstat(path).st_ino
    except (OSError, AttributeError):
        return False
    return mark.startswith(_owner_mark(f"{inode}:".encode())) and not tagged_as_written(path)


def ours_file_by_file(folder: Path) -> bool:
    """`folder` holds the MARKER this command wrote (the marker itself unchanged) and, though no longer all it
    wrote, nothing a user added or edited: each lone file marked and unchanged (mark_folder), each other one a
    file sharing its inode (an image linked in) or an empty folder, proved by the new output's bytes when
    replaced (io.check_replaceable). A
    user who deleted a file of a release's split folder had it refused at every later run, naming the marker."""
    marker = folder / MARKER
    try:
        mark = os.getxattr(marker, OWNER_XATTR, follow_symlinks=False)
        if not mark.startswith(_owner_mark(_identity(marker) + b" ")):
            return False
    except (OSError, AttributeError):
        return False
    return all(
        unproven_rank(folder, rel) >= 2 or rel.endswith("/") or shared_unmarked(folder / rel)
        for rel in files_under(folder)
    )


def shared_unmarked(path: Path) -> bool:
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(status.st_mode) and status.st_nlink > 1 and unproven_rank(path.parent, path.name) == 1
