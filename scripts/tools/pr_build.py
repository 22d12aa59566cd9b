"""pr-build: a pull request's data on a fresh runner (no DVC cache, maybe no remote), ready to diff.

    python -m scripts pr-build BASE_REV [--out DIR] [--base-dir DIR]

1. Nothing when `dvc status` reports only outputs that are not here (a docs-only PR). Else
   `dvc repro --pull --allow-missing`: what the PR changed is rebuilt, what it did not is pulled only
   where a changed stage reads it. When that fails (no remote holds the data, or a stage reads a folder
   that is only partly there, such as data/dedup or data/splits), `dvc repro --pull`: every stage is
   pulled, or rebuilt where no remote has it.
2. The releases whose outputs in dvc.lock differ from BASE_REV's need the base's data to be diffed. Where
   neither the cache nor a remote has it, those releases are built at BASE_REV in a git worktree
   (`--base-dir`) sharing this cache: DVC's run-cache restores every stage the two revisions share.
Writes DIR/build.json (what ran: `mode`, `changed`, `base_built`) and logs each step on stdout.
Runs the PR's own code with no credentials: .github/workflows/dataset-diff.yml's unprivileged job.
"""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import typer

from scripts.lib.errors import DataError, os_reason, shown
from scripts.tools.child_group import dvc_env, run_in_group, run_shown


def dvc(args: list[str], cwd: str | Path) -> int:
    """A DVC command with its output in this log (python -m dvc: the interpreter that runs this)."""
    return dvc_watched(args, cwd)[0]


# what a dvc child under a file size limit (`ulimit -f`) or on a full disk says: sqlite's words, the OS's
DISK_SIGNS = ("disk I/O error", "File too large", "No space left on device")


def dvc_watched(args: list[str], cwd: str | Path) -> tuple[int, str]:
    """dvc(args) and what its failure's line should add: the file size limit or a full disk when the child was
    killed by SIGXFSZ or said so, else "". pr-build said `dvc repro --pull failed (see the log above)`, and the
    log said `unexpected error - disk I/O error`: the limit, set where pr-build was started, was named nowhere."""
    print(shown(f"$ dvc {' '.join(args)}"), flush=True)
    signs: list[str] = []

    def watch(line: str) -> None:
        signs.extend(sign for sign in DISK_SIGNS if sign in line)

    # a signal to pr-build alone stops `dvc repro` and its stage too (subprocess.run SIGKILLed dvc only:
    # the stage went on in the worktree that the `finally` below removes); what dvc prints is redacted
    code = run_shown([sys.executable, "-m", "dvc", *args], watch, cwd=cwd, env=dvc_env())
    if code == 0 or not (code == -signal.SIGXFSZ or signs):
        return code, ""
    from scripts.lib.failure_lines import disk_hint

    said = "dvc was killed by SIGXFSZ" if code == -signal.SIGXFSZ else "dvc could not write a file"
    return code, f": {said}{disk_hint(OSError(errno.EFBIG, 'File too large'))}"


def only_data_missing(status: dict) -> bool:
    """`dvc status --json` reports nothing but outputs that are not here: a deleted output or dependency,
    or a folder dependency of pipeline outputs (data/dedup/) holding just its committed reports. Then
    the PR changes no data (a docs-only PR) and nothing needs building."""
    from scripts.tools.replay_history import built_by_the_pipeline

    for changes in status.values():
        for change in changes:
            if isinstance(change, str) or "changed params" in change or "changed command" in change:
                return False
            for dep, state in change.get("changed deps", {}).items():
                if not (state == "deleted" or (state == "modified" and built_by_the_pipeline(dep.rstrip("/") + "/"))):
                    return False
    return True


def dvc_status(text: str) -> dict:
    """`dvc status --json`'s output read as the bounded JSON of the shape only_data_missing reads (each stage's
    list of a text or an object, its "changed deps" an object of texts), else one line: json.loads took DVC's
    output as it came, and text that is not JSON, 100k nested brackets or a NaN was a traceback at exit 1."""
    from scripts.lib.nesting import loads_json

    try:
        status = loads_json(text or "{}")
    except ValueError as exc:
        raise DataError(f"dvc status --json: not the JSON DVC writes ({exc})".splitlines()[0]) from None
    odd = _odd_status(status)
    if odd is not None:
        raise DataError(f"dvc status --json: not the shape DVC writes ({odd})")
    return status


def _odd_status(status) -> str | None:
    """What in a parsed `dvc status --json` is not of DVC's shape, else None."""
    from scripts.lib.nesting import json_found

    if not isinstance(status, dict):
        return f"not an object of stages: found {json_found(status)}"
    for changes in status.values():
        if not isinstance(changes, list):
            return "a stage's changes not a list"
        for change in changes:
            if isinstance(change, str):
                continue
            if not isinstance(change, dict):
                return "a change neither text nor an object"
            deps = change.get("changed deps", {})
            if not isinstance(deps, dict) or not all(map(_dep_state, deps.values())):
                return "a stage's changed deps not an object of texts"
    return None


def _dep_state(state) -> bool:
    """A changed dep's state as DVC writes it: a text (`modified`), or a params file's changed keys, each a text
    (`{"params.yaml": {"dedup.threshold": "modified"}}`: refused as odd, every params PR stopped pr-build)."""
    if isinstance(state, dict):
        return all(isinstance(key, str) and isinstance(value, str) for key, value in state.items())
    return isinstance(state, str)


def readable(repo: str, rev: str, path: str, where: str = "") -> bool:
    """`path` at commit `rev` from the cache or a remote (DVCFileSystem fetches it). One git stores as a link,
    or under a folder it stores as one, is one line (git_entry, as diff asks): its target's text was read as
    the file, "readable", and the base's release was never built."""
    from scripts.tools import diff
    from scripts.tools.lock_text import git_entry

    git_entry(repo, rev, path, where or f"{rev}:{path}")
    try:
        with diff.open_fs(repo, rev).open(path, "rb") as f:
            f.read(1)
        return True
    except FileNotFoundError:  # not in the cache, no remote has it: the base's release is built
        return False
    except OSError as exc:
        if not _on_this_machine(exc):  # a remote not reached or refusing (ConnectionError, no credentials): built too
            return False
        # this machine's own failure (the open-file limit, a cache folder denied or not a folder) was taken as
        # "missing": the base was built in a worktree, to fail the same way there or hide the cause
        said = os_reason(exc)
        raise DataError(shown(f"{where or f'{rev}:{path}'}: cannot read it from DVC's cache ({said})")) from None
    except Exception:  # DVC's own errors (no remote configured, a remote refusing): not there to read
        return False


# what reading from the local cache can fail with that is not "absent": one line, not a base build
LOCAL_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ELOOP}


def _on_this_machine(exc: OSError) -> bool:
    """One of LOCAL_ERRNOS on a file here (the cache's copy): a remote's refusal is a PermissionError too (s3fs's
    403), named by its URL, and stays "not readable" (the unprivileged job has no credentials)."""
    import os

    return exc.errno in LOCAL_ERRNOS and isinstance(exc.filename, str) and os.path.lexists(exc.filename)


def _rows(release: str) -> str:
    return f"data/releases/{release}/rows.parquet"


def build_base(repo: Path, base_rev: str, releases: list[str], base_dir: Path) -> None:
    """`dvc repro --pull release@R...` at base_rev in a worktree that uses this repository's cache."""
    if base_dir.exists():
        raise DataError(f"{base_dir}: exists (pr-build makes the base's worktree there)")
    add = ["git", "worktree", "add", "-q", "--detach", "--end-of-options", str(base_dir), base_rev]
    try:
        added = subprocess.run(add, cwd=repo, capture_output=True, text=True)
    except OSError as exc:  # git not started (its pipes, at the open-file limit): it was a bare "Too many open files"
        raise DataError(shown(f"{base_dir}: cannot start `git worktree add` ({exc.strerror})")) from None
    if added.returncode != 0:  # a folder that cannot be made, a stale worktree registered there
        detail = [line for line in added.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise DataError(shown(f"{base_dir}: git worktree add failed ({detail[0].strip()})"))
    try:
        local = repo / ".dvc" / "config.local"  # a remote set with `dvc remote add --local`
        if local.exists():
            shutil.copyfile(local, base_dir / ".dvc" / "config.local")
        code, hint = dvc_watched(["config", "--local", "cache.dir", str((repo / ".dvc" / "cache").resolve())], base_dir)
        if code == 0:
            code, hint = dvc_watched(["repro", "--pull", *[f"release@{r}" for r in releases]], base_dir)
        if code != 0:
            raise DataError(f"building {', '.join(releases)} at {base_rev} failed (see the log above{hint})")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=repo, capture_output=True)


def cli(
    base_rev: str = typer.Argument(..., help="the base revision (e.g. origin/main)"),
    out: Path = typer.Option(Path("dataset-diff"), "--out", help="folder for build.json"),
    base_dir: Path = typer.Option(
        Path("../dataset-diff-base"), "--base-dir", help="worktree for building the base, if needed"
    ),
) -> None:
    """Rebuild what a pull request changed and make the base's data readable for `pr-comment`."""
    from scripts.lib.io import check_files_ours
    from scripts.lib.temps import output_lock
    from scripts.tools.side_inputs import check_outside_stores

    repo = Path.cwd()
    # never into the data it builds, DVC's cache or .git: the base's worktree neither (`--base-dir .git/base`)
    check_outside_stores(repo, out / "build.json", base_dir)
    check_files_ours(out / "build.json")  # before any work: a user's build.json, or a link there, stays
    with output_lock(
        out / "build.json", whole_run=True
    ):  # a second run at once is refused before its dvc repro, not after
        _build(repo, base_rev, out, base_dir)


def _build(repo: Path, base_rev: str, out: Path, base_dir: Path) -> None:
    """pr-build's work, its output locked: dvc repro (or pull), the base's missing releases, build.json."""
    from scripts.lib.io import atomic_path
    from scripts.lib.nesting import dumps_json
    from scripts.tools.diff import open_fs, releases_at
    from scripts.tools.lock_text import git_entry
    from scripts.tools.pr_comment import release_pairs, unchanged_releases
    from scripts.tools.side_inputs import commit_of

    base_name, base_rev = base_rev, commit_of(repo, base_rev)  # an unknown revision, or an option: one line
    status = run_in_group(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, env=dvc_env()
    )
    mode = "pulled"
    if status.returncode == 0 and only_data_missing(dvc_status(status.stdout)):
        mode = "unchanged"  # --allow-missing would still rerun a stage whose folder dependency is only partly here
        print("pr-build: dvc status reports only outputs that are not here: nothing to build", flush=True)
    else:
        # what stages read as whole folders first (recipe plans, dedup, prefilter and split tables, images):
        # `repro --pull --allow-missing` skips an unchanged stage and leaves its share of such a folder
        # missing. Without a remote this pull fails, and the repro below rebuilds them.
        dvc(["pull", "--allow-missing", "recipes", "dedup", "prefilter", "generate", "split"], repo)
        if dvc(["repro", "--pull", "--allow-missing"], repo) != 0:
            print(
                "pr-build: not everything a changed stage reads could be pulled; pulling or rebuilding every stage",
                flush=True,
            )
            mode = "rebuilt"
            code, hint = dvc_watched(["repro", "--pull"], repo)
            if code != 0:
                raise DataError(f"dvc repro --pull failed (see the log above{hint})")
    unchanged = unchanged_releases(str(repo), base_rev, "workspace")
    try:  # a base with no params.yaml: all is new; one there but unreadable (a link in git) is its one line
        at_base = releases_at(open_fs(str(repo), base_rev), base_name)
    except (DataError, FileNotFoundError):  # (DVC's exists() is False for a link git stores: git is asked)
        if git_entry(str(repo), base_rev, "params.yaml", shown(f"{base_name}:params.yaml")) is not None:
            raise
        at_base = {}
    pairs = release_pairs(at_base, releases_at(open_fs(str(repo), "workspace")))
    changed = [(a, b) for a, b in pairs if not (a == b and b in unchanged)]
    missing = sorted(
        {a for a, _ in changed if a and not readable(str(repo), base_rev, _rows(a), shown(f"{base_name}:{_rows(a)}"))}
    )
    if missing:
        print(
            shown(f"pr-build: no cache or remote has {', '.join(missing)} at {base_name}: building them there"),
            flush=True,
        )
        build_base(repo, base_rev, missing, base_dir)
    report = {"mode": mode, "changed": [b for _, b in changed], "base_built": missing}
    with atomic_path(out / "build.json") as tmp:  # makes `out`; replaces only a build.json of ours
        tmp.write_text(
            dumps_json(report, out / "build.json", indent=2) + "\n", encoding="utf-8"
        )  # release names: no NaN
    print(shown(f"pr-build: {mode}; changed releases: {', '.join(report['changed']) or 'none'}"), flush=True)
