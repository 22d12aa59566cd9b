"""What a Ray session of ours gives its worker processes, its own lines once Ray's own go nowhere, and a local Ray's
folder of its own (ray_engine).

A worker is a fresh import: a `load_params` there (import_env.redact_line asks it for the `*_env` names of the
secrets it redacts) read params.yaml by name again, where the driver's command run parses one text of it
(params.base.read_once): an edit, a rename over or a removal mid-run gave the workers another version, or none.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable

import psutil

from scripts.lib.import_env import checked_line
from scripts.lib.params import PARAMS_FILE


def driver_reads() -> dict[str, str]:
    """The texts this command run has read so far (params.base.read_once: params.yaml's), by absolute path."""
    from scripts.lib.params.base import run_reads

    return run_reads()


def worker_setup(reads: dict[str, str]) -> Callable[[], None]:
    """Ray's `worker_process_setup_hook` (runtime_env): each worker starts as one run of the driver's, reading
    `reads` (driver_reads) and nothing by name again. A worker whose folder is not the driver's (a cluster's node)
    finds params.yaml, the file the stages load, at its own path. The hook is a closure: Ray exports it by value."""
    params_text = reads.get(os.path.abspath(PARAMS_FILE))

    def read_as_the_driver() -> None:
        from scripts.lib.params.base import seed_run_reads

        texts = dict(reads)
        if params_text is not None:
            texts[os.path.abspath(PARAMS_FILE)] = params_text
        seed_run_reads(texts)

    return read_as_the_driver


class RedactedLines:
    """A text stream whose writes go through import_env.redact_line, as the command's standard error does (cli):
    the copy of descriptor 2 ClusterWatch writes the command's lines to once Ray's C++ threads have it. A line that
    cannot be checked is left out, never written as it came."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(checked_line(text) if text.strip() else text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


# a local Ray's folder of ours (`ray-` and mkdtemp's 8 characters) holds OWNER_FILE: `PID START` of the command
# that made it. A command killed (SIGKILL, a second signal's exit at once) left it, logs and all; the next local
# start removes those whose command is gone, and nothing else (a folder of Ray's own, another user's, a live run's).
# It is made under STAGING's name first (the command's pid and start time in it), its marker written there, then
# renamed into place: a SIGKILL between mkdtemp and the marker's write left a folder no later run could prove its own
OWNER_FILE = ".t2i-datasets-owner"
OUR_FOLDER = re.compile(r"ray-[A-Za-z0-9_]{8}")
STAGING = re.compile(r"\.t2i-ray-(?P<pid>[0-9]+)-(?P<start>[0-9]+(?:\.[0-9]+)?)-[A-Za-z0-9_]{8}")
NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # mkdtemp's


def own_folder(parent: str) -> str:
    """A new folder for a local Ray under `parent`, provably ours from the moment it exists; the stale ones of ours
    there removed first. Its final name is short: Ray's socket paths under it must fit 107 bytes."""
    remove_stale_folders(parent)
    pid, start = os.getpid(), psutil.Process().create_time()
    staging = tempfile.mkdtemp(prefix=f".t2i-ray-{pid}-{start!r}-", dir=parent)
    with open(os.path.join(staging, OWNER_FILE), "x", encoding="utf-8") as marker:
        marker.write(f"{pid} {start!r}\n")
    while True:
        folder = os.path.join(parent, "ray-" + "".join(secrets.choice(NAME_CHARACTERS) for _ in range(8)))
        if _renamed_new(staging, folder):
            return folder


AT_FDCWD, RENAME_NOREPLACE = -100, 1


def _renamed_new(source: str, target: str) -> bool:
    """rename(2) of `source` to `target` that replaces nothing (renameat2's RENAME_NOREPLACE: a plain rename
    replaces an empty folder); False where `target` exists. Where the system lacks it, a look, then rename."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is not None:
        if rename(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
            return True
        failure = ctypes.get_errno()
        if failure == errno.EEXIST:
            return False
        if failure not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: a file system without the flag
            raise OSError(failure, os.strerror(failure), target)
    if os.path.lexists(target):
        return False
    os.rename(source, target)
    return True


def remove_stale_folders(parent: str) -> None:
    """Remove each folder of `parent` a local Ray of ours had (or was making) and whose command is gone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            staged = STAGING.fullmatch(entry.name)
            if not (staged or OUR_FOLDER.fullmatch(entry.name)) or not entry.is_dir(follow_symlinks=False):
                continue
            owner = _named_owner(entry.path, staged) if staged else _marked_owner(entry.path)
            if owner is not None and _command_gone(*owner):
                remove_folder(entry.path)


def _named_owner(folder: str, name: re.Match[str]) -> tuple[int, float] | None:
    """The command a staging folder's name says made it (pid, start time): this user's folder only."""
    if os.lstat(folder).st_uid != os.getuid():
        return None
    return int(name["pid"]), float(name["start"])


def _marked_owner(folder: str) -> tuple[int, float] | None:
    """The command `folder`'s OWNER_FILE names, where the folder is this user's and the marker a plain file of
    this user's; None: not a folder of ours."""
    marker = os.path.join(folder, OWNER_FILE)
    try:
        if os.lstat(folder).st_uid != os.getuid():
            return None
        descriptor = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as opened:
            info = os.fstat(opened.fileno())
            text = opened.read(100)
        pid_text, start_text = text.decode("ascii").split()
        owner = int(pid_text), float(start_text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # no marker of ours: not a folder of ours
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_nlink != 1:
        return None
    return owner


def _command_gone(pid: int, start: float) -> bool:
    """No process has that pid and start time (a pid the system gave to another process since is not it)."""
    try:
        return psutil.Process(pid).create_time() != start
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # there, not ours to ask about: kept


def remove_folder(folder: str | None) -> None:
    """A local Ray's session folder, gone once its processes are: its logs hold whatever the workers printed."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
