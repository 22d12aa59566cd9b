"""Real git + DVC repositories for tests: a fresh copy of this tree, private work copies of a built one,
and subprocesses that use this venv."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def env() -> dict:
    """The test's interpreter first on PATH, so dvc.yaml's `python -m scripts` uses this venv."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **GIT_ENV,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
    }


_DVC_INIT: dict[bool, Path] = {}  # scm? -> a folder where a real `dvc init` ran, once per test process


def dvc_init(root: Path, scm: bool = True) -> None:
    """What `dvc init` (`--no-scm` when not `scm`) leaves in `root`, staged in git as it stages it: the files
    of one real `dvc init` a test process ran, copied. The command is two seconds of imports on two cores,
    and the suite makes dozens of repositories."""
    template = _DVC_INIT.get(scm)
    if template is None:
        template = Path(tempfile.mkdtemp(prefix="dvc-init-"))
        atexit.register(shutil.rmtree, template, True)
        if scm:
            subprocess.run(["git", "init", "-q"], cwd=template, check=True, capture_output=True)
        argv = [sys.executable, "-m", "dvc", "init", "-q", *([] if scm else ["--no-scm"])]
        subprocess.run(argv, cwd=template, check=True, capture_output=True, env=env())
        _DVC_INIT[scm] = template
    for path in sorted(template.rglob("*")):
        name = path.relative_to(template)
        if path.is_file() and name.parts[0] != ".git":  # .dvc/config, .dvc/.gitignore, .dvc/tmp/btime, .dvcignore
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / name)
    if scm:  # what dvc stages: .dvc/.gitignore leaves out its tmp/
        subprocess.run(["git", "add", ".dvc", ".dvcignore"], cwd=root, check=True, capture_output=True)


def run(cmd: list[str] | str, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """A subprocess with env(); `dvc ...` and `python ...` run with this interpreter."""
    if isinstance(cmd, str):
        cmd = cmd.split()
    if cmd[0] in ("dvc", "python"):
        cmd = [sys.executable, "-m", *cmd[1:]] if cmd[0] == "python" else [sys.executable, "-m", "dvc", *cmd[1:]]
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def repo_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore: the tree as a fresh clone would get it."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return sorted({f for f in out.decode().split("\0") if f and (REPO / f).is_file()})


def copy_repo(dest: Path) -> Path:
    """A fresh git repository holding this tree, committed, with no DVC outputs or cache (nor the lock,
    metrics and plot data main commits)."""
    from scripts.tools.replay_history import built_by_the_pipeline

    dest.mkdir(parents=True, exist_ok=True)
    for name in repo_files():
        if built_by_the_pipeline(name):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "test copy"], dest)
    return dest


def work_copy(src: Path, dest: Path, rev: str | None = None, checkout: bool = True) -> Path:
    """A private copy of a built repository that a test may change, without touching `src`: a git clone
    (at `rev`; objects copied, as git would freshen a hardlinked one in place), the DVC cache hardlinked
    file by file (cache objects are read-only and never rewritten; what DVC adds are new files), and,
    if asked, the workspace restored by `dvc checkout` (hardlinks into that cache: .dvc/config's cache.type
    is reflink,hardlink,copy, and every stage writes temp + rename, never in place)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "-q", "--no-hardlinks", *(["--branch", rev] if rev else []), str(src), str(dest)], dest.parent)
    shutil.copytree(src / ".dvc" / "cache", dest / ".dvc" / "cache", copy_function=os.link)
    if checkout:
        run(["dvc", "checkout", "-q"], dest)
    return dest


def fingerprint(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file of a repository with its size and mtime; not .dvc/tmp (DVC's locks and state), .git/index
    (git refreshes its stat cache on a read-only `git status`) nor __pycache__ (Python's bytecode cache of
    scripts/, written by any `python -m scripts` run there: gitignored, not data)."""
    skip = {repo / ".dvc" / "tmp"}
    files = {}
    for root, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if Path(root, d) not in skip and d != "__pycache__"]
        for name in names:
            if name == "index" and root == str(repo / ".git"):
                continue
            stat = os.lstat(os.path.join(root, name))
            files[os.path.relpath(os.path.join(root, name), repo)] = (stat.st_size, stat.st_mtime_ns)
    return files


def committed_dvc_repository(root: Path, dvc_yaml: str = "stages: {}\n", files: dict[str, str] | None = None) -> Path:
    """A git repository at `root` (made, parents too) with .dvc/ (an empty config), `dvc_yaml` and `files`
    (name -> text), all in one commit on `main`: what tag, pr-build and replay-history start in."""
    root.mkdir(parents=True)
    for name, text in {".dvc/config": "", "dvc.yaml": dvc_yaml, **(files or {})}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True, env=env())
    return root
