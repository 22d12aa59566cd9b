"""Revisions and files the side tools (diff, pr-build, pr-comment, publish) take from a user, checked
before use.

A revision is verified as a commit (`git rev-parse --verify --end-of-options`) and passed on as its
hex id, so `--output=FILE` can never reach git or DVC as an option; a file read in the workspace must
be a regular file (a FIFO would block the read, and every DVC subprocess that opens it, forever); a
file publish reads stays in the release, with one link or being DVC's cache copy; the release's card is
read bounded and decoded, one line otherwise.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import BinaryIO

from scripts.lib.errors import DataError, os_reason, shown

WORKSPACE = "workspace"  # a revision name meaning the working tree
# The release's own card, pasted under "Release card": release@V writes a few KB. A larger or undecodable
# file is not that card (a 50 MB README.md went into the Hub card whole; bytes not UTF-8 were a traceback).
MAX_RELEASE_CARD_BYTES = 1_000_000


def commit_of(repo: str | Path, rev: str) -> str:
    """The commit `rev` names in `repo` (its full hex id), else one line."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:  # the OS's reason: at `ulimit -n` 8 git's pipes fail
        reason = os_reason(exc)
        raise DataError(
            f"{shown(repo)}: cannot start `git rev-parse` to look up {shown(repr(rev))} ({reason})"
        ) from None
    if result.returncode != 0 or not result.stdout.strip():
        raise DataError(f"{shown(rev)}: not a git revision in {shown(repo)}")
    return result.stdout.strip()


def check_regular(path: Path, where: str, *, dangling_absent: bool = False) -> bool:
    """True when `path` is a regular file (after links), False when nothing is there; else one line: the
    stages' rule (side_files.present_file), a link to nothing an error unless `dangling_absent`. A workspace
    dvc.lock linked to nothing read as "no lock" here, and as an error in the stages."""
    from scripts.lib.side_files import present_file

    return present_file(path, shown(where), dangling_absent=dangling_absent)


def check_inside(path: Path, roots: tuple, use: str) -> None:
    """Refuse `path` when its real path (through every link on the way, a linked release folder's
    too) is outside all of `roots`, or when it is not a regular file (a FIFO blocks `dvc plots diff`)."""
    from scripts.lib.safe_paths import leads_out

    if os.path.lexists(path) and all(leads_out(path, root) for root in roots):
        raise DataError(f"{shown(path)}: leads out of the repository; refusing to {use}")
    check_regular(path, str(path), dangling_absent=True)  # a sheet only shown when there: a gc'd checkout has none


def release_file(root: Path, name: str, where: str) -> Path | None:
    """`root / name` (None when nothing is there) if it stays in `root` after every link, is a regular
    file, and has one link or is DVC's own cache copy of its bytes (a checkout hard-links those): a hard
    link to a file elsewhere keeps its name and passes every path check, and would be published."""
    if not os.path.lexists(Path(root) / name):
        return None
    from scripts.lib.dvc_cache import is_cache_copy
    from scripts.lib.safe_paths import confined_file

    path = confined_file(root, name, where)
    status = os.stat(path)
    if status.st_nlink > 1 and not is_cache_copy(path):
        raise DataError(
            f"{where}: file {shown(repr(name))} has {status.st_nlink} links and is not DVC's cache copy "
            "(a hard link to another file?); refusing to publish it"
        )
    return path


# What a side tool reads in the repository and never writes into: every stage's outputs (data/), DVC's
# store (.dvc/: its cache, config and state) and git's. `pr-comment --out data/releases/r1` wrote comment.md,
# plots/ and sheets/ into the release it compared (`dvc status`: modified; `dvc commit` would take them in).
REPOSITORY_STORES = ("data", ".dvc", ".git")


def check_outside_stores(repo: str | Path, *outputs: Path) -> None:
    """Refuse, in one line before any work, an output that is, holds, or lies inside the repository's data,
    DVC's folder or git's (REPOSITORY_STORES, through links)."""
    from scripts.lib.io import check_not_input

    for output in outputs:
        check_not_input(output, [Path(repo) / name for name in REPOSITORY_STORES])


# The repository's own files a side tool reads in the workspace: git's, never a DVC link into a cache, so
# they stay in the repository after every link (`params.yaml -> ~/elsewhere.yaml` was read, and a key of it
# quoted in the error line).
REPOSITORY_FILES = ("params.yaml", "dvc.lock")
IN_REPOSITORY = "the repository"  # the folder a repository file's one line names


def check_repository_file(repo: str | Path, name: str, where: str) -> None:
    """Refuse the workspace's `name` (one of REPOSITORY_FILES) when a link takes it out of `repo`."""
    from scripts.lib.safe_paths import check_stays_in

    if os.path.lexists(Path(repo) / name):
        check_stays_in(Path(repo) / name, repo, where=shown(where), root_name=IN_REPOSITORY)


def workspace_file(root: Path, path: str, where: str) -> BinaryIO:
    """The workspace's `path` opened for reading (binary) when it is a regular file (a FIFO blocks the read);
    the repository's own files (REPOSITORY_FILES) also stay in the repository once open (open_within). The
    checks and the read are of one open: a link swapped in after a check by name was followed."""
    from scripts.lib.safe_paths import open_regular, open_within

    try:
        if path in REPOSITORY_FILES:
            return open_within(root / path, root, where=shown(where), root_name=IN_REPOSITORY)
        return open_regular(root / path)
    except (FileNotFoundError, DataError):
        raise
    except OSError as exc:
        raise DataError(f"{shown(where)}: {exc.strerror}") from None


def release_card_body(release_dir: Path) -> str:
    """The release's own README.md (release@V's card) without its YAML front matter."""
    from scripts.lib.dvc_cache import is_cache_copy
    from scripts.lib.safe_paths import open_within, read_capped

    path = release_file(release_dir, "README.md", str(release_dir))  # never a file linked in from elsewhere
    if path is None:
        return ""
    try:
        # read from the one open, checked again there: a link or hard link swapped in after release_file's
        # check was read and published as the card
        with open_within(path, release_dir, one_name=True, links_ok=is_cache_copy) as file:
            data = read_capped(file, MAX_RELEASE_CARD_BYTES, path)
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()  # newlines as open() reads them
    except FileNotFoundError:
        raise DataError(f"{shown(release_dir)}/README.md: removed while read") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{shown(release_dir)}/README.md: byte {exc.start}: not UTF-8 text, not a release card"
        ) from None
    # a byte-order mark before the front matter hid it, and the card showed it as text
    return without_front_matter(text.removeprefix("\ufeff")).strip()


def without_front_matter(text: str) -> str:
    """A card's text after its YAML front matter, found as the Hub finds it (huggingface_hub's
    REGEX_YAML_BLOCK: a `---` line first, up to the next `---` line). A `---` rule in the body (a recipe
    description's) is the body's: splitting at the second `---` dropped the card's title and all before
    the rule from the Hub card."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    found = REGEX_YAML_BLOCK.search(text)
    return text[found.end() :] if found else text
