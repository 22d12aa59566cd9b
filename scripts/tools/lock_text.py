"""dvc.lock's text at a git revision or in the workspace, for pr-comment and pr-build, read bounded.

A revision's lock was read whole (`git show`, then YAML): a dvc.lock of hundreds of megabytes at a
revision of a pull request took minutes and gigabytes before anything was checked. Its entry is now asked
of git first (`git ls-tree -l`): a lock over MAX_LOCK_BYTES is one line, and so is one git stores as a
symbolic link (git_entry, which diff and pr-comment ask of every file they read at a revision); the blob
is then read through a pipe up to the cap, never more. The workspace's lock is read within the
repository, checked again once open (safe_paths.read_within).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

from scripts.lib.errors import DataError, os_reason, shown
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
    """The size of the file `spec` (COMMIT:PATH) names (None when the revision has none), its kind checked: a
    folder or a submodule named dvc.lock is one line (`git show` printed a folder's listing as the lock's
    text), and so is a symbolic link (its blob is the link's target path, read as a lock of no stages)."""
    commit, _, path = spec.partition(":")
    entry = git_entry(repo, commit, path, where)
    if entry is None:
        return None
    _mode, kind, size = entry
    if kind != "blob" or not size.isdigit():
        raise DataError(f"{where}: is a git {kind}, not a file; refusing to read it")
    return int(size)


GIT_LINK_MODE = "120000"  # a symbolic link's entry in a git tree: its blob is the target's path, not a file's bytes


def git_entry(repo: str, commit: str, path: str, where: str) -> tuple[str, str, str] | None:
    """(mode, kind, size) of `path`'s entry in `commit`'s tree, None when there is none (a DVC output is no
    git entry); a symbolic link is one line: git stores it as its target's text, which DVC's filesystem and
    `git cat-file` read as the file (a params.yaml "expected a mapping", a dvc.lock of no stages at exit 0),
    where the workspace's link out of the repository is refused. So is a folder on the way stored as a
    link (`data/releases -> /elsewhere`): its files were "not found", the link never named."""
    folders = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."]
    entries = tree_listing(repo, commit, where)
    for folder in folders:
        if entries.get(folder.encode("utf-8", "surrogateescape"), [""])[0] == GIT_LINK_MODE:
            raise DataError(
                f"{where}: a folder on its way ({shown(folder)}) is a symbolic link in git; refusing to read it"
            )
    parts = entries.get(path.encode("utf-8", "surrogateescape"), [])
    if len(parts) != 4:
        return None
    if parts[0] == GIT_LINK_MODE:
        raise DataError(f"{where}: is a symbolic link in git; refusing to read it")
    return parts[0], parts[1], parts[3]


_LISTINGS: dict[tuple[str, str], dict[bytes, list[str]]] = {}
LISTINGS_KEPT = 8  # diff and pr-comment read two revisions, history-table one per release
_FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def tree_listing(repo: str, commit: str, where: str) -> dict[bytes, list[str]]:
    """name -> [mode, kind, object, size] of every entry (folders included) of `commit`'s tree, from ONE
    `git ls-tree -r -t` (a git process per file read was most of diff's time at a revision); kept for the
    process per (repo, commit) when `commit` is a full id (a commit's tree never changes; a name may move).
    An unknown revision lists nothing (each of its paths: no entry)."""
    key = (str(Path(repo).resolve()), commit)
    if key in _LISTINGS:
        return _LISTINGS[key]
    if commit.startswith("-"):  # never read as an option (callers pass commit ids)
        return {}
    try:  # --full-tree: from the top, whatever the cwd; -t: folders listed too (a link on the way is refused)
        found = subprocess.run(
            ["git", "ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit],
            cwd=repo,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(git_failure_line(where, "ls-tree", exc)) from None
    entries = {}
    for record in found.stdout.split(b"\0") if found.returncode == 0 else []:
        fields, _, name = record.partition(b"\t")
        entries[name] = fields.decode("ascii", "replace").split()
    if _FULL_ID.fullmatch(commit):
        if len(_LISTINGS) >= LISTINGS_KEPT:  # the oldest goes: a listing is ~100 bytes an entry of the tree
            _LISTINGS.pop(next(iter(_LISTINGS)))
        _LISTINGS[key] = entries
    return entries


def git_failure_line(where: str, command: str, exc: OSError | subprocess.TimeoutExpired) -> str:
    """`git COMMAND` not started or not answering, with the reason: `git ls-tree failed (OSError)` named no limit
    at `ulimit -n 8` (cli adds the limit's value to a "Too many open files" line: failure_lines.with_limit_hint)."""
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"{where}: `git {command}` did not answer in {GIT_TIMEOUT_S} s"
    return f"{where}: cannot run `git {command}` ({os_reason(exc)})"


def refuse_git_links(repo: str, revs, paths, labels: dict[str, str]) -> None:
    """Each of `paths` at each commit of `revs` (the workspace's are checked as read) that git stores as a
    link, or under a folder it stores as one, is one line: `dvc metrics diff` and `dvc plots diff` read the
    link's target text as the file (a plot of no points at that revision, at exit 0)."""
    for rev in (r for r in revs if r != WORKSPACE):
        for path in paths:
            git_entry(repo, rev, path, f"{shown(labels.get(rev, rev))}:{path}")


def plot_files(plots: dict) -> list[str]:
    """The files `dvc plots diff --json` names: its plot ids (a plot file's path) and its points' `filename`s."""
    from scripts.tools.plot_points import _plot_points

    data = plots.get("data") if isinstance(plots.get("data"), dict) else {}
    named = set(data)
    for entries in data.values():
        for entry in [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []:
            named |= {p["filename"] for p in _plot_points(entry) if isinstance(p.get("filename"), str)}
    return sorted(n for n in named if isinstance(n, str) and n and not n.startswith("/"))


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
        raise DataError(git_failure_line(where, "cat-file", exc)) from None
    if code != 0:
        raise DataError(f"{where}: git cat-file failed (exit {code})")
    return data
