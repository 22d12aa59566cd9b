"""replay-history: rebuild the published history v2 -> v3 -> v4 -> v4-a -> v4-b in a fresh git repo.

    python -m scripts replay-history DEST [--remote PATH]

Copies this repository's tracked files into DEST, then for each release in params.yaml order:
keeps only the releases up to it, `dvc repro`, commits, `dvc push`, and `python -m scripts tag`.
The result is the reference history: a commit and a tag per release (five: v4-a builds on v4), each
tag's dvc.lock pinning its data. It prints a line per release step and per stage DVC runs (the first
release builds nearly every stage: most of the time). A release's `base:` or a step's `reference:` must
come earlier in params.yaml (checked before anything runs): the commit of a release holds only the
releases up to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from scripts.lib.errors import DataError, os_error_message, os_reason, shown
from scripts.lib.safe_paths import FOLDER_FLAGS, MadeHere, identity, resolved
from scripts.lib.temps import TEMP_XATTR, flock_or_refuse, is_our_temp, mark_temp
from scripts.tools.child_group import child_group, dvc_env

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t2i-datasets",
    "GIT_AUTHOR_EMAIL": "t2i@example.invalid",
    "GIT_COMMITTER_NAME": "t2i-datasets",
    "GIT_COMMITTER_EMAIL": "t2i@example.invalid",
}


def release_names(params_text: str) -> list[str]:
    from ruamel.yaml import YAML

    return list((YAML().load(params_text).get("releases") or {}).keys())


def params_up_to(params_text: str, last: str) -> str:
    """params.yaml with the releases after `last` removed; comments and layout kept."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width = 100
    yaml.preserve_quotes = True  # regexes such as \d+:\d+ must stay quoted
    data = yaml.load(params_text)
    names = list(data["releases"].keys())
    for name in names[names.index(last) + 1 :]:
        del data["releases"][name]
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def check_order(params_text: str) -> None:
    """Each release's base and step references name releases listed before it (else the commit of that
    release could not build it)."""
    from ruamel.yaml import YAML

    releases = YAML(typ="safe").load(params_text).get("releases") or {}
    names = list(releases)
    for index, name in enumerate(names):
        spec = releases[name] or {}
        needed = [spec.get("base")] + [
            (step.get("dedup") or {}).get("reference")
            for component in spec.get("components") or []
            for step in (component or {}).get("steps") or []
        ]
        for other in filter(None, needed):
            if other in names and names.index(other) >= index:
                raise DataError(
                    f"params.yaml: releases.{name} needs {other!r}, which is listed after it "
                    "(replay-history commits releases in file order)"
                )


def _run(cmd: list[str], cwd: Path, say: str | None = None) -> None:
    """Run cmd quietly; with `say`, print `say: stage NAME` for each stage DVC starts (the long part)."""
    # dvc.yaml runs `python -m scripts`: put this interpreter first on PATH so it is the one used
    bin_dir = str(Path(sys.executable).parent)
    env = dvc_env(**GIT_ENV, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    # whatever stops this command (a signal, a print that fails) stops dvc and the stage it runs: Popen's
    # exit only waited for them, minutes, while they went on writing the replay
    with contextlib.ExitStack() as stack:
        try:
            proc = stack.enter_context(
                child_group(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        except OSError as exc:  # its pipes not made (`ulimit -n` 10-12): was `DEST: cannot write`, no step named
            raise DataError(shown(f"{cwd}: cannot start `{step_of(cmd)}` there ({os_reason(exc)})")) from None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            stage = STAGE_LINE.match(line)
            if say and stage:
                print(shown(f"{say}: stage {stage.group(1)}"), flush=True)
    if proc.returncode != 0:
        tail = "".join(lines).strip().splitlines()[-1:] or [ended_silently(proc.returncode)]
        raise DataError(f"{' '.join(cmd)} failed in {cwd}: {tail[0]}")


def step_of(cmd: list[str]) -> str:
    """`git init`, `dvc repro`: the command's name and its first argument (python's path and `-m` left out)."""
    return " ".join(cmd[2:4] if cmd[0] == sys.executable else cmd[:2])


def ended_silently(returncode: int) -> str:
    """What a child that printed nothing ended by: git killed by SIGXFSZ under `ulimit -f` was `(no output)`."""
    if returncode >= 0:
        return f"(no output, exit status {returncode})"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (a file size limit: raise `ulimit -f`)" if name == "SIGXFSZ" else ""
    return f"(no output: killed by {name}){hint}"


def built_by_the_pipeline(name: str) -> bool:
    """dvc.lock and what the stages write (main commits the lock, the `cache: false` metrics and plot
    data, and DVC's .gitignore files beside outputs): a replay starts from the tree without them."""
    return name == "dvc.lock" or (name.startswith(("data/", "models/")) and not name.startswith("data/raw/"))


def tracked_files(src: Path) -> list[str]:
    """The files git tracks in `src`, less what the pipeline builds (the replay writes its own)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=src, capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise DataError("git is not installed (replay-history needs it)") from None
    except OSError as exc:  # git not started (`ulimit -n`, memory): it was told as "not a git repository"
        raise DataError(shown(f"{src}: cannot run `git ls-files` there ({os_reason(exc)})")) from None
    except subprocess.CalledProcessError:
        raise DataError(f"{src}: not a git repository (replay-history copies its tracked files)") from None
    names = (os.fsdecode(name) for name in listed.split(b"\0") if name)
    return [name for name in names if not built_by_the_pipeline(name)]


def copy_tracked(src: Path, made: MadeHere, names: list[str]) -> None:
    """The tracked files as git sees them: a tracked link is copied as the same link (copying what it
    points at would put a file from anywhere, a secret, into DEST and its commits). Each is a new entry made
    through `made` (no link or FIFO planted in DEST meanwhile is followed, nor written through)."""
    for name in names:
        if (src / name).is_symlink():
            made.new_link(name, os.readlink(src / name))
        else:
            made.new_file(name, (src / name).read_bytes(), stat.S_IMODE((src / name).stat().st_mode))


def read_params(src: Path) -> str:
    """params.yaml's text, checked as every stage reads it (nesting bounded, aliases refused, the models')
    before ruamel's round trip sees it: it recurses once per level (100k levels were a segfault)."""
    from scripts.lib.io import config_text
    from scripts.lib.params import load_params

    load_params(path=src / "params.yaml")
    return config_text(src / "params.yaml")


def cli(
    dest: Path = typer.Argument(..., help="new directory for the replayed repository"),
    remote: Path = typer.Option(None, "--remote", help="DVC remote folder (default: DEST/.dvc-storage)"),
) -> None:
    """Replay the release history as commits and tags in a fresh repository."""
    from scripts.lib.io import check_output_kind
    from scripts.tools.side_inputs import check_outside_stores

    src = Path.cwd()
    check_dest_kind(dest)
    # DEST itself a link (dangling, or to an empty folder): realpath followed it and the replay went wherever it
    # points; a link on the way to DEST is followed, as the system does
    check_output_kind(dest)
    # as the system will resolve it once its missing folders are made: `nothere/../../mine` is ../mine
    dest = Path(os.path.realpath(dest))
    check_outside_stores(src, dest)  # `.git/replay`: a whole repository and its DVC cache written into git's folder
    with locked_dest(dest) as made:
        try:
            replay_into(src, made, remote)
        except OSError as exc:
            raise DataError(in_dest(exc, dest)) from None


def in_dest(exc: OSError, dest: Path) -> str:
    """One line for an OSError met writing inside DEST: a name made relative to DEST's open folder (`.git`, as
    MadeHere makes it) was printed alone, `.git: Operation not permitted` for an immutable DEST, DEST unnamed."""
    name = exc.filename
    if name is None or os.path.isabs(os.fsdecode(name)):
        return os_error_message(exc, dest)
    detail = os_reason(exc)
    return f"{shown(dest)}: cannot write {shown(name)} there ({detail})"


def check_dest_kind(dest: Path) -> None:
    """DEST is a folder, a link (check_output_kind's to judge) or missing: a FIFO or device was refused as "not a
    regular file", a file as `File exists`, though DEST must be a folder."""
    from scripts.lib.side_files import file_kind

    try:
        mode = os.lstat(dest).st_mode
    except OSError:  # missing (made), or unreadable: the checks after name it
        return
    if not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise DataError(shown(f"{dest}: is {kind}, not a folder; replay-history replays into a new or empty folder"))


@contextlib.contextmanager
def locked_dest(dest: Path) -> Iterator[MadeHere]:
    """DEST, made if missing, locked for the run and checked empty; on any failure after (Ctrl-C too) what the
    run made goes, by identity: its entries (MadeHere.remove), then DEST and the parents it made if empty.
    The lock is a flock of DEST itself, before its emptiness check (two runs into one empty DEST both passed
    it): no file beside it, so DEST in a read-only parent replays (a lock file there refused it), and the
    kernel drops a flock with its holder, so a run killed (kill -9) blocks no later one."""
    missing = [folder for folder in (dest, *dest.parents) if not os.path.lexists(folder)]  # deepest first
    try:
        dest.mkdir(parents=True, exist_ok=True)
        folders = [(folder, identity(folder.lstat())) for folder in missing]
        for folder in missing:  # tagged as a run's: the run that holds the lock may be another, and its failure
            mark_temp(folder)  # removes them (a run that made DEST and lost the lock left it, empty, for good)
        fd = os.open(dest, FOLDER_FLAGS)
    except OSError as exc:
        raise DataError(os_error_message(exc, dest)) from None
    made = MadeHere(dest, pin=True)
    try:
        # refused, a run removes nothing: DEST and the folders above it are the holder's to use, and to remove
        flock_or_refuse(fd, shown(f"{dest}: another run is writing it (lock: {dest} itself); wait for it to end"))
        if os.listdir(fd):
            raise DataError(f"{shown(dest)}: exists and is not empty")
        try:
            yield made
        except BaseException:
            made.remove()
            remove_run_folders(dest, folders)
            raise
        with contextlib.suppress(OSError):  # replayed: DEST is the user's now
            os.removexattr(fd, TEMP_XATTR)
    finally:
        made.close()
        os.close(fd)


def remove_run_folders(dest: Path, folders: list[tuple[Path, tuple[int, int]]]) -> None:
    """DEST and the folders above it that a run made (this one: `folders`, as made; any run: tagged), deepest
    first, while each is empty: a user's entry put in one meanwhile keeps it and those above it."""
    for folder in (dest, *dest.parents):
        try:
            ours = (folder, identity(folder.lstat())) in folders or is_our_temp(folder)
            if not ours:
                return
            folder.rmdir()
        except OSError:
            return


def replay_into(src: Path, made: MadeHere, remote: Path | None) -> None:
    """cli's work once DEST is locked and checked empty: each top-level name it writes is made by this run
    first (recorded as made, so a failure deletes it, and only it), then git and DVC write inside them."""
    dest = made.base
    params_text = read_params(src)
    check_order(params_text)
    names = release_names(params_text)
    tracked = tracked_files(src)
    remote_url = None if remote is None else str(resolved(remote))  # a loop of links: one line
    made.new_folder(".git")
    _run(["git", "init", "-q", "-b", "main"], dest)
    copy_tracked(src, made, tracked)
    for name in ["data", "models"] + ([".dvc-storage"] if remote_url is None else []):
        if name not in made.entries:  # what the stages and `dvc push` write: a user's `data` is never taken
            made.new_folder(name)
    if remote_url is not None:
        _run([sys.executable, "-m", "dvc", "remote", "modify", "local", "url", remote_url], dest)
    replay(params_text, names, made)


def replay(params_text: str, names: list[str], made: MadeHere) -> None:
    """Per release, in order: its params, `dvc repro`, a commit, `dvc push` and its tag."""
    from scripts.lib.progress import duration

    dest = made.base
    python = [sys.executable, "-m"]
    start = time.perf_counter()
    for number, name in enumerate(names, start=1):
        say = f"replay-history: {name} ({number}/{len(names)})"
        print(f"{say}: dvc repro", flush=True)
        # the file copied, never a link or FIFO put in its place since
        made.rewrite("params.yaml", params_up_to(params_text, name).encode("utf-8"))
        _run(python + ["dvc", "repro"], dest, say=say)
        print(f"{say}: commit, dvc push, tag", flush=True)
        _run(["git", "add", "-A"], dest)
        _run(["git", "commit", "-q", "-m", f"Release {name}"], dest)
        _run(python + ["dvc", "push", "-q"], dest)
        _run(python + ["scripts", "tag", name], dest)
        print(shown(f"replayed {name} ({duration(time.perf_counter() - start)} so far)"), flush=True)
