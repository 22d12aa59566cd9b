"""A signal between making an entry and recording it, or while a child starts: replay-history's failed run left
DEST behind (found as a flaky row of round 35a under load). Each row sends SIGTERM to the run itself at one exact
point, through a hook on the call that makes the entry or starts the child (4 of the 5 rows failed before; `git
init` ends before the failed run's removal here, so its row is a guard):

- MadeHere made an entry (os.mkdir, os.open) and recorded it in two steps: the signal between left an entry no
  record named, `remove` kept it, and DEST, no longer empty, stayed. Made and recorded is now one step
  (interrupts.held).
- child_group's Popen: the signal right after the child started, before child_group knew it, left the child
  (`dvc remote modify`) running unsupervised after the run had ended, writing into the DEST its failed run had
  just removed. The child is now known, and stopped, before the signal is raised.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from test_round35a import source_repo

from helpers.commands import cli
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")


@pytest.fixture(autouse=True)
def _signal_forgotten():
    """The SIGTERM a row sends is noted by the command's handler (interrupts.note): forgotten after the row, or the
    next test of this process that holds signals (interrupts.held) raised it as its own."""
    yield
    from scripts.lib.interrupts import forget

    forget()


def signalled_after(real, when):
    """`real`, then, the first time `when(args, kwargs)` holds, SIGTERM to this process: the handler raises at the
    next step (a second signal would end the process at once, as a second Ctrl-C does)."""
    sent: list[bool] = []

    def call(*args, **kwargs):
        result = real(*args, **kwargs)
        if isinstance(result, POPEN):
            STARTED.append(result)
        if not sent and when(args, kwargs):
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    return call


def made_in_dest(name: str):
    """The call that makes `name` inside a folder opened without following links (MadeHere's, dir_fd)."""
    return lambda args, kwargs: "dir_fd" in kwargs and os.fsdecode(args[0]) == name


STARTED: list[subprocess.Popen] = []  # the children the run started
POPEN = subprocess.Popen  # the class itself, while a row hooks the name


HOOKS = {  # the call hooked: (module attribute, the call that sends the signal)
    "the .git folder made": ("os.mkdir", made_in_dest(".git")),
    "the data folder made": ("os.mkdir", made_in_dest("data")),
    "a tracked file made": ("os.open", made_in_dest("params.yaml")),
    "git init started": ("subprocess.Popen", lambda args, kwargs: args[0][:2] == ["git", "init"]),
    "dvc remote modify started": ("subprocess.Popen", lambda args, kwargs: args[0][1:4] == ["-m", "dvc", "remote"]),
}


@pytest.mark.parametrize("point", list(HOOKS))
def test_a_signal_between_making_and_recording_leaves_no_replay_behind(tmp_path, monkeypatch, capfd, point):
    src = source_repo(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    attribute, when = HOOKS[point]
    module, name = attribute.split(".")
    target = {"os": os, "subprocess": subprocess}[module]
    monkeypatch.setattr(target, name, signalled_after(getattr(target, name), when))
    STARTED.clear()
    done = cli(["replay-history", str(out / "dest"), "--remote", str(tmp_path / "remote")], src, monkeypatch, capfd)
    monkeypatch.undo()
    running = [proc.args for proc in STARTED if proc.poll() is None]
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert running == []  # each child the run started ended with it
    assert done.returncode == 143 and error_line(done.stderr) == "interrupted (SIGTERM)", done.stderr
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == [], left
