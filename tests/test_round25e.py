"""Round 25e: signals to stages and tools not tested before (split, compose, summary, plots, sample-data,
`dvc repro`), one table per class (every row failed before its fix), on real processes and files. Each
child is started as a terminal's job (helpers.children: a session of its own, stopping signals at their
defaults); where the moment matters, the signal is sent by the child itself at that moment.

1. A signal while the command's first modules import, before main() installs its handlers: SIGTERM,
   SIGHUP and SIGQUIT killed the process silently (exit -15, -1, -3, no line); a Ctrl-C while
   `scripts.lib.interrupts` imported was a KeyboardInterrupt traceback. `scripts/__main__.py` now installs
   `interrupts.exit_at_once_on_signals` first: the one line and 128 + signal (nothing is written yet).
2. `dvc repro` killed (SIGTERM from a CI's cancel or `kill PID`, SIGHUP, SIGKILL) dies at once and left the
   stage it ran going: the orphan finished and wrote its output, which dvc.lock never recorded. A stage
   under DVC (DVC_STAGE set) now asks the kernel for SIGTERM when its parent dies
   (`interrupts.stop_when_parent_dies`) and stops as its own SIGTERM stops it: 143, nothing left.
3. A signal while a folder output is renamed in waits for the last rename (interrupts.held), then was
   raised before the old copy was deleted: the command exited 130 with `.T.tmp-old` (the whole previous
   output) left beside the new one (recipes', sample-data's, split's and compose's folders). `io.replace_together`
   now deletes the old copies before it raises the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.children import scripts_env, start_child
from helpers.tiers import fast_first
from helpers.workspace import error_line, leftovers, make_splits, write_params
from scripts.lib.io import mark_folder, stable_id
from scripts.lib.marks import MARKER

NAME = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP", signal.SIGQUIT: "SIGQUIT"}


def run_wrapped(root: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """`python -c CODE ARGS` in `root` as a terminal's job: CODE runs `python -m scripts` itself (runpy)."""
    proc = start_child([sys.executable, "-c", code, *args], cwd=root, env=scripts_env())
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_interrupted(done: subprocess.CompletedProcess, signum: int) -> None:
    assert done.returncode == 128 + signum, (done.returncode, done.stderr[-2000:])
    assert error_line(done.stderr) == f"interrupted ({NAME[signum]})"


# ---------------------------------------------------------------- 1. a signal while the first modules import

# the signal comes as `module` starts importing (a finder ahead of Python's), then `python -m scripts ARGV`
SIGNAL_ON_IMPORT = """\
import os, runpy, sys
module, signum = sys.argv[1], int(sys.argv[2])
class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signum)
        return None
sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["scripts", *sys.argv[3:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""

STARTUP = {  # row: (the module importing when the signal comes, the signal, the command)
    "SIGTERM-split": ("scripts.cli", signal.SIGTERM, ["split", "s", "in.parquet", "out"]),
    "SIGHUP-compose": ("scripts.lib.errors", signal.SIGHUP, ["compose", "r", "data/splits", "data/compose/r"]),
    "SIGQUIT-summary": ("scripts.cli", signal.SIGQUIT, ["summary", "data/releases", "data/summary.json"]),
    "SIGINT-plots": ("scripts.lib.interrupts", signal.SIGINT, ["plots", "a", "b", "c", "out"]),
}


@pytest.mark.parametrize("row", fast_first(STARTUP, keep=2))
def test_a_signal_while_the_first_modules_import_is_one_line(tmp_path, row):
    module, signum, argv = STARTUP[row]
    done = run_wrapped(tmp_path, SIGNAL_ON_IMPORT, module, str(int(signum)), *argv)
    assert_interrupted(done, signum)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 2. the stage of a `dvc repro` that is killed

# a parent as `dvc repro` is to its stage (DVC_STAGE set, the stage its child): prints the stage's pid
STAGE_PARENT = """\
import subprocess, sys
with open("stage.err", "w") as err:
    stage = subprocess.Popen([sys.executable, "-m", "scripts", "clean-text", "in.txt", "out.jsonl"], stderr=err)
    print(stage.pid, flush=True)
    stage.wait()
"""


def write_prompts(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(f"a red fox number {i} jumping over the lazy dog {i * 7919 % 100003}\n")


def ended(pid: int) -> bool:
    """The process is gone or a zombie (an orphan whose new parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


PARENT_KILLS = [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP]


@pytest.mark.parametrize("signum", fast_first(PARENT_KILLS), ids=lambda s: signal.Signals(s).name)
def test_a_stage_stops_when_the_dvc_that_runs_it_is_killed(tmp_path, signum):
    write_params(tmp_path)
    write_prompts(tmp_path / "in.txt", 100_000)  # seconds of cleaning: the stage is mid-work when dvc dies
    parent = start_child([sys.executable, "-c", STAGE_PARENT], cwd=tmp_path, env=scripts_env(DVC_STAGE="c"))
    stage = 0
    try:
        assert parent.stdout is not None
        stage = int(parent.stdout.readline())
        wait_until(lambda: leftovers(tmp_path) or ended(stage), 60, "the stage never opened its output")
        assert not ended(stage), "the stage ended before its parent was killed"
        os.kill(parent.pid, signum)  # the parent alone, as `kill PID` of dvc does
        parent.wait(timeout=60)
        wait_until(lambda: ended(stage), 60, "the stage went on after its parent died")
    finally:
        for pid in (parent.pid, stage):
            if pid and not ended(pid):
                os.kill(pid, signal.SIGKILL)
        parent.communicate()
    assert error_line((tmp_path / "stage.err").read_text()) == "interrupted (SIGTERM)"
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.jsonl").exists()


def dvc(repo: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *argv], cwd=repo, env=scripts_env(), capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_sigterm_to_dvc_repro_stops_its_stage_and_records_nothing(tmp_path):
    """The real thing: a one-stage repository, its stage run once, its input grown, `dvc repro` SIGTERMed
    mid-stage. The orphan stage used to finish and write an output dvc.lock does not describe."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert dvc(repo, "init", "-q").returncode == 0
    write_params(repo)
    stage = "stages:\n  c:\n    cmd: python -m scripts clean-text in.txt out.jsonl\n    deps: [in.txt]\n    outs: [out.jsonl]\n"
    (repo / "dvc.yaml").write_text(stage, encoding="utf-8")
    (repo / "in.txt").write_text("a red fox\n", encoding="utf-8")
    assert dvc(repo, "repro", "-q").returncode == 0
    lock, first = (repo / "dvc.lock").read_bytes(), (repo / "out.jsonl").read_bytes()
    write_prompts(repo / "in.txt", 200_000)
    proc = start_child([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=scripts_env())
    try:
        wait_until(lambda: leftovers(repo) or proc.poll() is not None, 120, "the stage never opened its output")
        assert proc.poll() is None, "dvc repro finished before the signal"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # ends when the stage, holding its stderr, ends too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "interrupted (SIGTERM)" in err, err[-2000:]
    assert (repo / "dvc.lock").read_bytes() == lock
    output = repo / "out.jsonl"  # dvc removes a stage's outputs before it runs it: gone, or the recorded one
    assert not output.exists() or output.read_bytes() == first
    assert leftovers(repo) == []


# ---------------------------------------------------------------- 3. a signal while a folder output is renamed in

# `python -m scripts ARGV`, the signal sent right after the previous output is renamed aside (and tagged)
SIGNAL_WHILE_RENAMED_IN = """\
import os, runpy, sys
from scripts.lib import io
signum = int(sys.argv[1])
real = io.mark_temp
def mark_temp(path, *args, **kwargs):
    real(path, *args, **kwargs)
    if str(path).endswith(".tmp-old"):
        os.kill(os.getpid(), signum)
io.mark_temp = mark_temp
sys.argv = ["scripts", *sys.argv[2:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""


def split_ws(root: Path) -> None:
    write_params(root, split={"method": "hash", "validation_fraction": 0.2, "seed": 7})
    ids = [stable_id("s", i) for i in range(50)]
    pd.DataFrame({"id": ids, "split": [None] * 50, "text": ["a prompt"] * 50}).to_parquet(root / "in.parquet")


def compose_ws(root: Path) -> None:
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_params(root, releases={"r": {"components": components, "export": "imagefolder"}})
    make_splits(root, n=8)


RENAMED_IN = {  # row: (the signal, the command, what makes its inputs, its folder output)
    "SIGTERM-recipes": (signal.SIGTERM, ["recipes", "data/recipes"], write_params, "data/recipes"),
    "SIGINT-split": (signal.SIGINT, ["split", "s", "in.parquet", "out"], split_ws, "out"),
    "SIGHUP-compose": (signal.SIGHUP, ["compose", "r", "data/splits", "data/compose/r"], compose_ws, "data/compose/r"),
    "SIGINT-sample-data": (signal.SIGINT, ["sample-data", "raw"], write_params, "raw"),
}


@pytest.mark.parametrize("row", fast_first(RENAMED_IN))
def test_a_signal_while_a_folder_output_is_renamed_in_leaves_no_old_copy(tmp_path, row):
    signum, argv, make_inputs, output = RENAMED_IN[row]
    make_inputs(tmp_path)
    previous = tmp_path / output  # a previous run's output (empty), as that run marked it
    previous.mkdir(parents=True)
    mark_folder(previous)
    done = run_wrapped(tmp_path, SIGNAL_WHILE_RENAMED_IN, str(int(signum)), *argv)
    assert_interrupted(done, signum)
    assert leftovers(tmp_path) == []
    assert (previous / MARKER).is_file() and len(list(previous.iterdir())) > 1  # the renames it waited for: done
