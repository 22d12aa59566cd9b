"""tag: publish a release as an annotated git tag, only when it is reproducible and stored.

    python -m scripts tag V

Refuses unless (1) params.yaml, dvc.yaml and dvc.lock are committed, (2) `release@V` and every
stage it depends on are up to date in dvc.lock (`dvc status` clean), and (3) every output of that
pipeline is in the default remote (`dvc status -c` clean). Then `git tag -a V` with the row counts
from stats.json in the message, so `git show V` tells what the version holds.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer

from scripts.lib.errors import DataError, exception_line, os_reason, quoted, redact_url_userinfo, shown
from scripts.lib.failure_lines import disk_hint, what_failed
from scripts.lib.nesting import loads_json
from scripts.lib.safe_paths import read_within
from scripts.lib.temps import flock_or_refuse
from scripts.summary import stats_path
from scripts.tools.child_group import run_in_group
from scripts.tools.replay_history import ended_silently

TRACKED = ["params.yaml", "dvc.yaml", "dvc.lock"]
MAX_STATS_BYTES = 16 << 20  # a release's stats.json is a few KiB
MAX_TAG_CHARS = 128  # a tag is a file under .git/refs/tags and a release a folder: 255 bytes at most, in UTF-8
# what git check-ref-format refuses in a tag, and '/' (a release name is one folder, data/releases/NAME)
GIT_REFUSES = ("..", "@{", "/", "\\", "~", "^", ":", "?", "*", "[")


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """git ARGS; with `check`, a failure is one line (git's own first line), never a traceback. git runs in a
    group of its own, ended by SIGTERM when tag stops: subprocess.run SIGKILLed it, and a `git tag` killed
    holding `.git/refs/tags/NAME.lock` left it there, refusing every later tag of that name."""
    try:
        result = run_in_group(["git", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise DataError("git is not installed (tag needs it)") from None
    except OSError as exc:  # git not started: at the open-file limit its pipes could not be made
        raise DataError(f"cannot start `git {args[0]}` ({os_reason(exc)})") from None
    if check and result.returncode != 0:
        said = (result.stderr.strip().splitlines() or [ended_silently(result.returncode)])[0]
        raise DataError(f"git {args[0]} failed: {said}")
    return result


def tag_name_problem(name: str) -> str | None:
    """Why git (or a terminal) cannot take `name` as a tag, or None. Checked before any git command: `-x` was an
    option to `git tag`, `a..b` or `a.lock` was refused by git only after the whole DVC check, and a control or
    bidi character (U+202E) put in a tag is shown reversed or as an escape by every `git tag` listing after."""
    if not name or len(name) > MAX_TAG_CHARS:
        return f"1 to {MAX_TAG_CHARS} characters"
    if any(unicodedata.category(c)[0] in "CZ" for c in name):  # controls, format (bidi), spaces, line separators
        return "a control, format or space character"
    if name.startswith(("-", ".")) or name.endswith((".", ".lock")) or name == "@":
        return "a leading '-' or '.', or a trailing '.' or '.lock'"
    said = next((part for part in GIT_REFUSES if part in name), None)
    return f"{said!r} in it" if said else None


def check_tag_name(name: str, what: str = "tag") -> None:
    problem = tag_name_problem(name)
    if problem:
        raise DataError(f"{what} {quoted(name)}: not a valid git tag name ({problem})")


def check_repository() -> None:
    if _git("rev-parse", "--is-inside-work-tree", check=False).stdout.strip() != "true":
        raise DataError(f"{Path.cwd()}: not inside a git repository (run tag from the repository root)")
    if not Path(".dvc").is_dir() or not Path("dvc.yaml").is_file():
        raise DataError(f"{Path.cwd()}: not a DVC project root (no .dvc/ or dvc.yaml here)")


def check_committed() -> None:
    dirty = _git("status", "--porcelain", "--", *TRACKED).stdout.strip()
    if dirty:
        raise DataError(
            f"uncommitted changes in {', '.join(TRACKED)}: commit them first ({dirty.splitlines()[0].strip()})"
        )


def check_up_to_date(repo, stage: str) -> None:
    status = repo.status(targets=[stage], with_deps=True)
    if status:
        raise DataError(
            f"{stage} is not up to date in dvc.lock ({', '.join(sorted(status))} changed): run `dvc repro {stage}`"
        )


def check_pushed(repo, stage: str) -> None:
    """Every output of `stage` is in the default remote; a remote that cannot answer is one line (its
    client raises whatever it meets: an HTML reply, a 403, a bad endpoint), without the URL's user part."""
    try:
        status = repo.status(targets=[stage], with_deps=True, cloud=True)
    except Exception as exc:  # DVC, botocore, aiohttp, fsspec: any of them, one line
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise DataError(
            shown(
                f"the default remote: cannot check {stage}'s outputs there ({type(exc).__name__}: "
                f"{redact_url_userinfo(first)[:300]})"
            )
        ) from None
    missing = sorted(path for path, state in status.items() if state != "deleted")
    if missing:
        raise DataError(
            f"{len(missing)} outputs of {stage} are not in the default remote (e.g. {missing[0]}): run `dvc push`"
        )


def tag_message(name: str, stats: dict) -> str:
    rows = stats["rows"]
    lines = [f"release {name}: train {rows['train']}, validation {rows['validation']}"]
    for split, per_source in stats.get("by_source", {}).items():
        lines.append(f"{split}: " + ", ".join(f"{s} {n}" for s, n in per_source.items()))
    return "\n".join(lines)


def cli(name: str = typer.Argument(..., help="release name in params.yaml: releases")) -> None:
    """Create the annotated git tag NAME for a built, pushed release."""
    # an S3 client that failed mid-call leaves coroutines Python warns about at exit: lines after our one
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)

    check_tag_name(name, "release name")  # before git runs: `-x` was an option to it
    stage = f"release@{name}"
    check_repository()
    with tag_lock():
        tag_release(name, stage)


def tag_release(name: str, stage: str) -> None:
    """cli's work once this repository's tag lock is held."""
    from dvc.repo import Repo

    if _git("rev-parse", "-q", "--verify", f"refs/tags/{name}", check=False).returncode == 0:
        raise DataError(f"tag {name} already exists")
    check_committed()
    try:
        with Repo(".") as repo:
            collect_stage(repo, name, stage)
            check_up_to_date(repo, stage)
            check_pushed(repo, stage)
    except (OSError, sqlite3.Error) as exc:  # DVC's own files: its state database under a full disk or `ulimit -f`
        raise DataError(dvc_failure_line(exc)) from None
    releases = Path("data/releases")
    message = release_message(name, stats_path(releases, name), stage, releases)
    _git("tag", "-a", name, "-m", message)
    print(shown(f"tagged {name}: {message.splitlines()[0]}"))


def collect_stage(repo, name: str, stage: str) -> None:
    """`stage` found in dvc.yaml; only DVC's StageNotFound is "no stage": a dvc.yaml DVC cannot parse (a YAML
    error, a bad `foreach`) was told as `no stage release@V (is V in params.yaml: releases?)`."""
    try:
        repo.stage.collect(stage)
    except (OSError, sqlite3.Error):
        raise  # DVC's own files: dvc_failure_line's
    except Exception as exc:  # DVC's parse and schema errors: whichever, one line with DVC's reason
        from dvc.stage.exceptions import StageNotFound  # imported on a failure only: a found stage needs none

        if isinstance(exc, StageNotFound):
            raise DataError(f"dvc.yaml: no stage {stage} (is {name} in params.yaml: releases?)") from None
        raise DataError(shown(f"dvc.yaml: DVC cannot read {stage} there ({exception_line(exc)})")) from None


def dvc_failure_line(exc: OSError | sqlite3.Error) -> str:
    """The line for DVC failing on its own files in .dvc/ (its state and site-cache databases): under a full disk or
    a file size limit (`ulimit -f`) sqlite's `disk I/O error` was an internal error at exit 1."""
    where = Path.cwd() / ".dvc"
    return shown(f"{where}: DVC cannot read or write its own files there ({what_failed(exc)})") + disk_hint(exc)


LOCK_NAME = "t2i-tag.lock"  # in git's common folder, beside its own refs' locks


@contextlib.contextmanager
def tag_lock() -> Iterator[None]:
    """This repository's tag lock held for the run: two runs at once both passed the "already exists" check
    and both ran `dvc status`, the second refused only at `git tag`. It is a flock of a file in git's own
    folder (`git rev-parse --git-common-dir`, shared by worktrees): temps.output_lock refuses to write under
    .git, and a lock beside an output there is none. The kernel drops a flock with its holder, so a run killed
    (Ctrl-C, kill -9) blocks no later one; the file stays, empty, for the next run to lock."""
    common = _git("rev-parse", "--git-common-dir").stdout.strip()
    lock = Path(common) / LOCK_NAME
    try:
        # read-only: a flock needs no write access, and the file is never written (empty, made once)
        fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DataError(shown(f"{lock}: cannot open tag's lock ({os_reason(exc)})")) from None
    try:
        flock_or_refuse(fd, shown(f"another tag run is at work in this repository (lock {lock}); wait for it to end"))
        yield
    finally:
        os.close(fd)


def release_message(name: str, stats_file: Path, stage: str, releases: Path | None = None) -> str:
    """The tag's message from the release's stats.json, read once as a regular file with one name that stays
    in `releases` (default: its own folder) once open (safe_paths.read_within, as summary reads it: a FIFO
    there hung tag; a hard link or a link swapped in after stats_path's check put another file's row counts
    in the message); a file of another shape is one line naming it."""
    try:
        data = read_within(stats_file, releases or stats_file.parent, cap=MAX_STATS_BYTES, one_name=True)
        return tag_message(name, loads_json(data.decode("utf-8")))
    except FileNotFoundError:
        raise DataError(f"{stats_file}: not found (run `dvc repro {stage}`, or `dvc pull {stage}`)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{stats_file}: not the stats release writes ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
