"""Round 45a: every catchable signal whose default action ends the process stops a command with its one line,
exit 128 + its number and nothing left behind; a resource failure is not told as a Ctrl-C. Rows that failed
before their fix (the guards aside):

1. SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT and the realtime signals were not in
   `interrupts.STOPPING_SIGNALS`: each ended a command silently (SIGUSR1: exit 138, no line) and left its
   `.tmp-new` and `.tmp-lock` until the next run. The list is now derived from a named table
   (`interrupts.TERMINATING_BY_DEFAULT`) plus SIGRTMIN..SIGRTMAX; `interrupts.name` names a realtime signal
   (`SIGRTMIN+3`: Python's `signal.Signals` has no name for it, the line was a ValueError).
2. ray_engine's ClusterWatch borrows SIGUSR2 during a Ray run: someone else's SIGUSR2 there was swallowed; it is
   now passed to the command's stop handler (the watch's own still raises its line).
3. OpenBLAS (numpy's) raise(SIGINT)s on itself when it cannot start a thread (`ulimit -v`, `ulimit -s`): the command
   said `interrupted (SIGINT)`, exit 130. `scripts/__init__.py` sets OPENBLAS_NUM_THREADS=1 unless the user set it.

Guards: SIGINT and SIGTERM are unchanged; a signal the parent set to be ignored stays ignored (the command
finishes, exit 0); the table classifies every catchable signal the platform has.
The command rows start `python -m scripts` (about a second each): slow tier.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.children import scripts_env, start_scripts
from helpers.workspace import PARAMS, error_line, leftovers, write_params
from scripts.cli import main
from scripts.lib import interrupts
from scripts.lib.ray_engine import ClusterWatch

# signal(7): the signals whose default action is to ignore, stop or continue, and SIGKILL no one can catch
NOT_ENDING_BY_DEFAULT = {"SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH"} | {
    "SIGKILL"
}

# --- 1. the list itself (default tier) -------------------------------------------------------------------------
NEW_STOPS = {
    "SIGUSR1": signal.SIGUSR1,
    "SIGUSR2": signal.SIGUSR2,
    "SIGALRM": signal.SIGALRM,
    "SIGVTALRM": signal.SIGVTALRM,
    "SIGPROF": signal.SIGPROF,
    "SIGIO": signal.SIGIO,
    "SIGPWR": signal.SIGPWR,
    "SIGSTKFLT": signal.SIGSTKFLT,
    "SIGRTMIN": signal.SIGRTMIN,
    "SIGRTMAX": signal.SIGRTMAX,
}


@pytest.mark.parametrize("signum", list(NEW_STOPS.values()), ids=list(NEW_STOPS))
def test_a_signal_that_ends_the_process_by_default_is_a_stop(signum):
    assert signum in interrupts.STOPPING_SIGNALS


KEPT_OUT = {
    "SIGPIPE guard": signal.SIGPIPE,  # Python ignores it: EPIPE is the command's one line
    "SIGXFSZ guard": signal.SIGXFSZ,  # Python ignores it: EFBIG is the command's one line
    "SIGSEGV guard": signal.SIGSEGV,  # faults are faulthandler's
    "SIGABRT guard": signal.SIGABRT,
}


@pytest.mark.parametrize("signum", list(KEPT_OUT.values()), ids=list(KEPT_OUT))
def test_a_signal_python_or_a_fault_owns_is_not_a_stop(signum):
    assert signum not in interrupts.STOPPING_SIGNALS


def test_the_table_classifies_every_catchable_signal_that_ends_the_process():
    """No signal of the platform is forgotten: each is in the table, realtime, or does not end the process."""
    named = {name for name, _stops, _why in interrupts.TERMINATING_BY_DEFAULT}
    realtime = set(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
    names = {signal.Signals(signum).name for signum in signal.valid_signals() - realtime}  # each number's own name
    missing = names - named - NOT_ENDING_BY_DEFAULT
    assert missing == set()


LINES = {
    "SIGRTMIN+3": (signal.SIGRTMIN + 3, "interrupted (SIGRTMIN+3)"),
    "SIGRTMAX-1": (signal.SIGRTMAX - 1, f"interrupted (SIGRTMIN+{signal.SIGRTMAX - 1 - signal.SIGRTMIN})"),
    "SIGRTMIN+1 again": (signal.SIGRTMIN + 1, "interrupted again (SIGRTMIN+1): stopping now"),
    "SIGUSR1 guard": (signal.SIGUSR1, "interrupted (SIGUSR1)"),
}


@pytest.mark.parametrize("signum, said", list(LINES.values()), ids=list(LINES))
def test_every_stop_has_a_named_line(signum, said):
    interrupts.forget()
    assert (interrupts.again_line(signum) if "again" in said else interrupts.line(signum)) == said


# --- 2. ClusterWatch's borrowed SIGUSR2 (default tier) -----------------------------------------------------------
def test_someone_elses_sigusr2_during_a_ray_watch_reaches_the_stop_handler():
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with ClusterWatch(None, {}, 5):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.01)  # the handler runs between bytecodes
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [signal.SIGUSR2]


# --- 3. OpenBLAS's threads (default tier: a bare `python -c`) -----------------------------------------------------
def _openblas_threads(env: dict[str, str]) -> str:
    code = "import os, scripts; print(os.environ['OPENBLAS_NUM_THREADS'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


# what OpenBLAS reads for its thread count, in this order: this process's `import scripts` set the first,
# conftest the last
OPENBLAS_COUNTS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def _without_openblas_setting() -> dict[str, str]:
    """The test's environment with OpenBLAS's thread count unset, as a user's shell has it."""
    return {k: v for k, v in scripts_env().items() if k not in OPENBLAS_COUNTS}


OPENBLAS = {
    "unset: one thread": ({}, "1\n"),
    "the user's 4 kept guard": ({"OPENBLAS_NUM_THREADS": "4"}, "4\n"),
}


@pytest.mark.parametrize("extra, threads", list(OPENBLAS.values()), ids=list(OPENBLAS))
def test_openblas_starts_no_thread_unless_the_user_asks(extra, threads):
    assert _openblas_threads({**_without_openblas_setting(), **extra}) == threads


def _ingested(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A text source ingested and the clean rules written (in this process): the `clean` argv that reads them."""
    (root / "data/raw/small").mkdir(parents=True)
    (root / "data/raw/small/prompts.txt").write_text("a red fox jumping over a sleeping dog\n", encoding="utf-8")
    small = {"kind": "text", "path": "data/raw/small", "images": "data/images/small", "on_error": "fail", "clean": True}
    write_params(root, sources={**PARAMS["sources"], "small": small})
    monkeypatch.chdir(root)
    assert main(["ingest", "small", "data/prompts/small.parquet"]) == 0
    assert main(["clean-rules", "data/clean/rules.json"]) == 0
    return [
        "clean",
        "small",
        "data/prompts/small.parquet",
        "data/clean/small.parquet",
        "--rules",
        "data/clean/rules.json",
    ]


# a 1 GB stack for each thread in a 2.2 GB address space: the first thread OpenBLAS starts does not fit
def _tight_threads() -> None:
    resource.setrlimit(resource.RLIMIT_STACK, (1_000_000 * 1024, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_AS, (2_200_000 * 1024, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_a_thread_openblas_cannot_start_is_not_a_ctrl_c(tmp_path, monkeypatch):
    env = _without_openblas_setting()
    probe = subprocess.run(
        [sys.executable, "-c", "import pyarrow, numpy"],
        env=env,
        capture_output=True,
        preexec_fn=_tight_threads,
        timeout=120,
    )
    if probe.returncode != -signal.SIGINT:
        pytest.skip(f"OpenBLAS starts its threads under these limits here (import pyarrow, numpy: {probe.returncode})")
    clean = _ingested(tmp_path, monkeypatch)
    proc = start_scripts(tmp_path, *clean, env=env, preexec=_tight_threads)  # its parquet reader imports numpy
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 2), (proc.returncode, err[-2000:])
    assert "interrupted" not in err and "OpenBLAS" not in err and "Traceback" not in err, err[-2000:]
    assert leftovers(tmp_path) == []


# --- 1. the signals sent to a real command mid-run (slow tier) ---------------------------------------------------
def _waiting_command(root: Path, preexec: Callable[[], None] | None = None) -> tuple[subprocess.Popen, int]:
    """`clean-text` reading a FIFO that gives one line and then waits: its temp output and lock are there."""
    write_params(root)
    os.mkfifo(root / "in.txt")
    proc = start_scripts(root, "clean-text", "in.txt", "out.jsonl", preexec=preexec)
    deadline = time.monotonic() + 120
    while True:  # the FIFO opens for writing once the command has opened it for reading
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        try:
            writer = os.open(root / "in.txt", os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            time.sleep(0.02)
    os.write(writer, b"a red fox jumping over a sleeping dog\n")
    while not leftovers(root):  # mid-run: its temp output is open
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    return proc, writer


def _stopped_by(root: Path, signum: int) -> tuple[int, str]:
    proc, writer = _waiting_command(root)
    try:
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


SENT = {
    "SIGUSR1": signal.SIGUSR1,
    "SIGUSR2": signal.SIGUSR2,
    "SIGALRM": signal.SIGALRM,
    "SIGVTALRM": signal.SIGVTALRM,
    "SIGPWR": signal.SIGPWR,
    "SIGRTMIN+3": signal.SIGRTMIN + 3,
    "SIGINT guard": signal.SIGINT,
    "SIGTERM guard": signal.SIGTERM,
}


@pytest.mark.slow
@pytest.mark.parametrize("signum", list(SENT.values()), ids=list(SENT))
def test_a_signal_mid_run_is_one_line_its_code_and_nothing_left(tmp_path, signum):
    code, err = _stopped_by(tmp_path, signum)
    assert code == 128 + signum, (code, err[-2000:])
    assert error_line(err) == interrupts.line(signum)
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.jsonl").exists()


def _ignore_sigusr1() -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # as nohup ignores SIGHUP: inherited across exec


@pytest.mark.slow
def test_a_signal_the_parent_ignored_stays_ignored_guard(tmp_path):
    proc, writer = _waiting_command(tmp_path, preexec=_ignore_sigusr1)
    try:
        proc.send_signal(signal.SIGUSR1)
        threading.Event().wait(0.3)  # time for it to act, had it not been ignored
    finally:
        os.close(writer)  # end of input: the command finishes
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8").count("\n") == 1
    assert leftovers(tmp_path) == []
