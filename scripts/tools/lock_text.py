"""dvc.lock's text at a git revision or in the workspace, for pr-comment and pr-build, read bounded.

A revision's lock was read whole (`git show`, then YAML): a dvc.lock of hundreds of megabytes at a
revision of a pull request took minutes and gigabytes before anything was checked. Its size is now asked
of git first (`git cat-file --batch-check`) and a lock over MAX_LOCK_BYTES is one line; the blob is then
read through a pipe up to the cap, never more. The workspace's lock is read within the
repository, checked again once open (safe_paths.read_within).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from scripts.lib.errors import DataError, shown
from scripts.lib.io import MAX_CONFIG_BYTES
from scripts.lib.safe_paths import read_within
from scripts.tools.side_inputs import IN_REPOSITORY, WORKSPACE, check_regular, commit_of

# DVC writes a few KB a stage (this repository's 58 stages: 220 KB), so 64 MiB is some 18,000 stages; YAML
# parses about 1.4 s a MB here, a minute and a half at the cap, and a larger lock is no pipeline's.
MAX_LOCK_BYTES = MAX_CONFIG_BYTES
GIT_TIMEOUT_S = 120


def lock_at(repo: str, rev: str) -> str | None:
    """dvc.lock's text at a git revision or in the workspace (None when there is none); an unknown
    revision, a lock over MAX_LOCK_BYTES, one that is no file (a folder, a submodule) or not UTF-8, or a
    workspace dvc.lock that is not a regular file, is one line."""
    if rev == WORKSPACE:
        lock = Path(repo) / "dvc.lock"
        if not check_regular(lock, "dvc.lock"):
            return None
        try:  # read_within: checked again once open (replaced by a link out of the repository since?)
            data = read_within(lock, repo, cap=MAX_LOCK_BYTES, where="dvc.lock", root_name=IN_REPOSITORY)
            return data.decode("utf-8").replace("\r\n", "\n")  # as read_text read it
        except UnicodeDecodeError:
            raise DataError("dvc.lock: not UTF-8 text") from None
    spec = f"{commit_of(repo, rev)}:dvc.lock"  # a hex id: never read as an option
    where = f"{shown(rev)}:dvc.lock"
    size = _blob_size(repo, spec, where)
    if size is None:
        return None
    if size > MAX_LOCK_BYTES:
        raise DataError(
            f"{where}: {size:,} bytes, over the {MAX_LOCK_BYTES:,} a dvc.lock may have; refusing to read it"
        )
    try:
        return _blob_bytes(repo, spec, where).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None


def _blob_size(repo: str, spec: str, where: str) -> int | None:
    """The size of the file `spec` names (None when the revision has none), its kind checked: a folder or a
    submodule named dvc.lock is one line (`git show` printed a folder's listing as the lock's text)."""
    try:
        found = subprocess.run(
            ["git", "cat-file", "--batch-check=%(objecttype) %(objectsize)"],
            cwd=repo,
            input=f"{spec}\n".encode(),
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{where}: git cat-file failed ({type(exc).__name__})") from None
    fields = found.stdout.decode("ascii", "replace").split()
    if found.returncode != 0 or fields[-1:] == ["missing"] or len(fields) != 2:
        return None
    kind, size = fields
    if kind != "blob" or not size.isdigit():
        raise DataError(f"{where}: is a git {kind}, not a file; refusing to read it")
    return int(size)


def _blob_bytes(repo: str, spec: str, where: str) -> bytes:
    """The blob's bytes, read through a pipe up to MAX_LOCK_BYTES + 1 (its size was checked, and a commit's
    blob does not change, but the read itself never holds more than the cap)."""
    try:
        with subprocess.Popen(
            ["git", "cat-file", "blob", spec], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as git:
            assert git.stdout is not None
            try:
                data = git.stdout.read(MAX_LOCK_BYTES + 1)
                if len(data) > MAX_LOCK_BYTES:
                    raise DataError(
                        f"{where}: over the {MAX_LOCK_BYTES:,} bytes a dvc.lock may have; refusing to read it"
                    )
                code = git.wait(timeout=GIT_TIMEOUT_S)
            except BaseException:
                git.kill()  # never left running, nor waited on for good when the block leaves
                raise
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{where}: git cat-file failed ({type(exc).__name__})") from None
    if code != 0:
        raise DataError(f"{where}: git cat-file failed (exit {code})")
    return data
