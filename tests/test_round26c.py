"""Round 26c: signals mid-work to plots and tag (prefilter, summary and diff probed too: no break), one
table per class (every row failed before its fix), real processes sent real signals as a terminal's job
(helpers.children); where the moment matters, the child signals itself at that moment.

1. plots wrote its four CSV files one after another, each renamed in as it was done: a signal between two
   exited 130/143/129 with the first files of this run beside the others of the previous run (a
   prompt_lengths.csv that no source_mix.csv matches). They are now written whole, then renamed in together
   (io.commit_together): none changes.
2. tag's `git tag -a` ran under subprocess.run, which SIGKILLs its child when tag is stopped (`kill PID`, a
   CI's cancel): git killed holding `.git/refs/tags/NAME.lock` left it there (every later `git tag NAME`
   refused: "File exists"), and what git ran went on. git now leads a group of its own, ended with SIGTERM
   (child_group.run_in_group): it removes its lock, nothing of it is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.children import scripts_env, start_child
from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line, leftovers, write_params
from scripts.lib.interrupts import forget
from scripts.lib.marks import COMMAND_ENV, mark_file
from scripts.lib.tables import write_parquet
from scripts.plots import PLOT_FILES

NAME = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def assert_interrupted(proc: subprocess.Popen, err: str, signum: int) -> None:
    assert proc.returncode == 128 + signum, (proc.returncode, err[-2000:])
    assert error_line(err) == f"interrupted ({NAME[signum]})"


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# ---------------------------------------------------------------- 1. plots: a signal between two of its files

# `python -m scripts ARGV`, the signal sent by the process itself as its NTH CSV starts to be written
SIGNAL_AT_CSV = """\
import os, runpy, sys
import pandas as pd
signum, nth = int(sys.argv[1]), int(sys.argv[2])
real, calls = pd.DataFrame.to_csv, []
def to_csv(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
        os.kill(os.getpid(), signum)
    return real(self, *args, **kwargs)
pd.DataFrame.to_csv = to_csv
sys.argv = ["scripts", *sys.argv[3:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""

PLOTS = ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"]
BETWEEN_FILES = {  # row: (the signal, the CSV file being written when it comes: 2nd, 3rd or 4th)
    "SIGTERM-second": (signal.SIGTERM, 2),
    "SIGINT-third": (signal.SIGINT, 3),
    "SIGHUP-fourth": (signal.SIGHUP, 4),
    "SIGINT-fourth": (signal.SIGINT, 4),
}


def plots_inputs(root: Path) -> None:
    """Two releases of a few rows, each source's clean report and clusters table (tests/test_plots.py's
    shapes, without its real cleaning run: seconds less)."""
    from scripts.lib.cleaning import report

    for release in ("r1", "r2"):
        for split in ("train", "validation"):
            folder = root / "data" / "releases" / release / split
            folder.mkdir(parents=True)
            rows = [
                {"file_name": f"images/{i}.jpg", "text": f"a red fox {i}", "source": "gpt4", "id": f"{split}{i}"}
                for i in range(9)
            ]
            (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "data" / "clean").mkdir(parents=True)
    (root / "data" / "dedup").mkdir(parents=True)
    for source in ("gpt4", "openprompts"):
        text = json.dumps(report(source, 9, Counter({"too_short": 2}), True))
        (root / "data" / "clean" / f"{source}.report.json").write_text(text, encoding="utf-8")
        clusters = pd.DataFrame({"id": ["a", "b"], "duplicate_of": ["k", "k"], "jaccard": [0.9, 0.8]})
        write_parquet(clusters, root / "data" / "dedup" / f"{source}.clusters.parquet")
    params = {
        "sources": {"gpt4": {"kind": "text", "path": "x"}, "openprompts": {"kind": "openprompts", "path": "y"}},
        "releases": {"r1": {"components": [{"source": "gpt4"}]}, "r2": {"components": [{"source": "gpt4"}]}},
        "preview": {"length_bin": 32},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def plot_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "data" / "plots").iterdir())}


def previous_plots(root: Path, monkeypatch) -> dict[str, bytes]:
    """plots' inputs and a previous run's files (their header only: every file of a new run differs)."""
    plots_inputs(root)
    monkeypatch.setenv(COMMAND_ENV, "plots")  # the files below marked as plots marks its own
    (root / "data" / "plots").mkdir()
    for name in PLOT_FILES:
        (root / "data" / "plots" / name).write_text(",".join(PLOT_FILES[name]) + "\n", encoding="utf-8")
        mark_file(root / "data" / "plots" / name)
    return plot_files(root)


def test_a_signal_between_two_plot_files_changes_none_in_process(tmp_path, monkeypatch, capfd):
    """The fast row: scripts.cli.main in this process (its handlers), SIGINT as the third file starts."""
    previous = previous_plots(tmp_path, monkeypatch)
    real, calls = pd.DataFrame.to_csv, []

    def to_csv(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    try:
        done = cli(PLOTS, tmp_path, monkeypatch, capfd)
    finally:
        forget()  # the signal this process noted is the command's, not the next test's
    assert done.returncode == 130 and error_line(done.stderr) == "interrupted (SIGINT)", done.stderr
    assert plot_files(tmp_path) == previous and leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("row", BETWEEN_FILES)
def test_a_signal_between_two_plot_files_changes_none(tmp_path, monkeypatch, row):
    signum, nth = BETWEEN_FILES[row]
    previous = previous_plots(tmp_path, monkeypatch)
    argv = [sys.executable, "-c", SIGNAL_AT_CSV, str(int(signum)), str(nth), *PLOTS]
    proc = start_child(argv, cwd=tmp_path, env=scripts_env())
    _, err = proc.communicate(timeout=120)
    assert_interrupted(proc, err, signum)
    assert plot_files(tmp_path) == previous and leftovers(tmp_path) == []


# ---------------------------------------------------------------- 2. tag: git stopped with tag

# `git`, except `git tag -a NAME`: it takes git's lock on the tag (removed on SIGTERM, SIGINT, SIGHUP, as
# git removes it), writes its pid, runs a child of its own (git's hooks, a gpg) and waits
GIT_SHIM = """#!/bin/bash
if [ "$1" = tag ] && [ "$2" = -a ]; then
  lock=.git/refs/tags/$3.lock
  : > "$lock"
  trap 'rm -f "$lock"; exit 143' TERM INT HUP
  sleep 30 & echo $! > grandchild
  echo $$ > git.pid
  wait
  exit 1
fi
exec {git} "$@"
"""

# `python -m scripts tag ARGV` with DVC's checks passing (a stub Repo: up to date, pushed)
STUB_DVC = """\
import runpy, sys, types
class Repo:
    def __init__(self, *args): self.stage = self
    def __enter__(self): return self
    def __exit__(self, *args): return False
    def collect(self, *args): return []
    def status(self, **kwargs): return {}
dvc, repo = types.ModuleType("dvc"), types.ModuleType("dvc.repo")
repo.Repo, dvc.repo = Repo, repo
sys.modules.update({"dvc": dvc, "dvc.repo": repo})
sys.argv = ["scripts", *sys.argv[1:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""


def tag_repo(root: Path) -> dict[str, str]:
    """A committed repository tag accepts (DVC stubbed), with a `git` shim first on PATH; its environment."""
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    env = scripts_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    (root / ".dvc").mkdir()
    for name in ("params.yaml", "dvc.yaml", "dvc.lock"):
        (root / name).write_text("{}\n", encoding="utf-8")
    stats = root / "data" / "releases" / "v1" / "stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text('{"rows": {"train": 3, "validation": 1, "total": 4}}', encoding="utf-8")
    for argv in (["init", "-q"], ["add", "params.yaml", "dvc.yaml", "dvc.lock"], ["commit", "-qm", "base"]):
        subprocess.run([real_git, *argv], cwd=root, env=env, check=True, capture_output=True)
    shim = root / "bin" / "git"
    shim.parent.mkdir()
    shim.write_text(GIT_SHIM.format(git=real_git), encoding="utf-8")
    shim.chmod(0o755)
    return {**env, "PATH": f"{shim.parent}{os.pathsep}{env['PATH']}"}


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


TAG_SIGNALS = {  # row: the signals sent to tag alone (`kill PID`) while its `git tag` runs
    "SIGTERM": [signal.SIGTERM],
    "SIGINT": [signal.SIGINT],
    "SIGHUP": [signal.SIGHUP],
}


@pytest.mark.parametrize("row", fast_first(TAG_SIGNALS))
def test_a_signal_to_tag_while_git_tags_ends_git_and_leaves_its_lock_removed(tmp_path, row):
    env = tag_repo(tmp_path)
    proc = start_child([sys.executable, "-c", STUB_DVC, "tag", "v1"], cwd=tmp_path, env=env)
    try:
        wait_until(lambda: (tmp_path / "git.pid").is_file() or proc.poll() is not None, 60, "git tag never ran")
        assert proc.poll() is None, proc.communicate()
        for signum in TAG_SIGNALS[row]:
            os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert_interrupted(proc, err, TAG_SIGNALS[row][0])
    grandchild = int((tmp_path / "grandchild").read_text())
    wait_until(lambda: gone(grandchild), 5, "what git ran went on after tag stopped")
    assert not (tmp_path / ".git" / "refs" / "tags" / "v1.lock").exists()
    assert not (tmp_path / ".git" / "refs" / "tags" / "v1").exists()


# ---------------------------------------------------------------- regression: summary and diff (no break found)

# `python -m scripts ARGV`, the signal sent by the process itself as MODULE.ATTR is first called
SIGNAL_ON_CALL = """\
import importlib, os, runpy, sys
module, attr, signum = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = importlib.import_module(module)
real = getattr(owner, attr)
def signalled(*args, **kwargs):
    setattr(owner, attr, real)
    os.kill(os.getpid(), signum)
    return real(*args, **kwargs)
setattr(owner, attr, signalled)
sys.argv = ["scripts", *sys.argv[4:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""


def summary_ws(root: Path) -> list[str]:
    releases = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["releases"]
    for name in releases:
        (root / "data" / "releases" / name).mkdir(parents=True, exist_ok=True)
        (root / "data" / "releases" / name / "stats.json").write_text('{"rows": {"total": 7}}', encoding="utf-8")
    return ["summary", "data/releases", "data/summary.json"]


def diff_ws(root: Path) -> list[str]:
    (root / "data" / "releases" / "r1").mkdir(parents=True)
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    rows = pd.DataFrame({"id": ["a", "b"], "source": "s1", "split": ["train", "validation"], "text": ["x", "y"]})
    rows.assign(image=None).to_parquet(root / "data" / "releases" / "r1" / "rows.parquet")
    return ["diff", "workspace", "workspace"]


NO_BREAK = {  # row: (the signal, the call it comes at: the final rename, the comparison; the command's inputs)
    "summary-SIGTERM-rename": (signal.SIGTERM, "os", "replace", summary_ws),
    "diff-SIGHUP-compare": (signal.SIGHUP, "scripts.tools.diff", "compare", diff_ws),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", NO_BREAK)
def test_a_signal_mid_work_to_summary_or_diff_is_one_line_and_changes_nothing(tmp_path, row):
    signum, module, attr, make = NO_BREAK[row]
    write_params(tmp_path)
    argv = make(tmp_path)
    before = sorted((p, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    proc = start_child(
        [sys.executable, "-c", SIGNAL_ON_CALL, module, attr, str(int(signum)), *argv], cwd=tmp_path, env=scripts_env()
    )
    out, err = proc.communicate(timeout=120)
    assert_interrupted(proc, err, signum)
    assert out == "" and leftovers(tmp_path) == []
    assert sorted((p, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()) == before
