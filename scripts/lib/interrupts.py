"""The signal a command received. SIGINT and SIGTERM raise `Interrupted` in the main thread, but a
library can swallow that exception: pyarrow imports pandas lazily inside `Array.to_numpy`, and a Ctrl-C
landing in that import is lost there, leaving a half-imported pandas behind. So the signal is also
remembered here: no output is committed after it (`io.replace_path` calls `stop_if_received`), and the
command exits as interrupted whatever the run does next."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

# Linux's catchable signals whose default action ends the process (signal(7): Term or Core), and whether a
# command stops on it with the one `interrupted (NAME)` line and exit 128 + its number. Left at its default,
# such a signal killed the command silently, leaving its temp files and lock until the next run (SIGUSR1: 138).
TERMINATING_BY_DEFAULT: tuple[tuple[str, bool, str], ...] = (
    ("SIGHUP", True, "the terminal or ssh session closed"),
    ("SIGINT", True, "Ctrl-C"),
    ("SIGQUIT", True, "Ctrl-backslash"),
    ("SIGILL", False, "a fault of the code running: a handler cannot resume it (faulthandler's to report)"),
    ("SIGTRAP", False, "a debugger's breakpoint"),
    ("SIGABRT", False, "abort() in a library: it ends the process whatever a handler does"),
    ("SIGBUS", False, "a fault of the code running"),
    ("SIGFPE", False, "a fault of the code running"),
    ("SIGUSR1", True, "`kill -USR1`: nothing of ours or of our libraries uses it"),
    ("SIGSEGV", False, "a fault of the code running"),
    ("SIGUSR2", True, "`kill -USR2`; ray_engine's ClusterWatch borrows it during a Ray run and passes others' on"),
    ("SIGPIPE", False, "Python ignores it: a closed reader is an EPIPE error, the command's one line"),
    ("SIGALRM", True, "an alarm nobody of ours armed; regex_deadline borrows it while it bounds the regexes"),
    ("SIGTERM", True, "`kill`, a CI's cancel"),
    ("SIGSTKFLT", True, "unused on Linux: only a `kill` sends it"),
    ("SIGXCPU", True, "a CPU-time limit (`ulimit -St`)"),
    ("SIGXFSZ", False, "Python ignores it: a write past `ulimit -f` is an EFBIG error, the command's one line"),
    ("SIGVTALRM", True, "a virtual-time alarm nobody of ours armed"),
    ("SIGPROF", True, "a profiling alarm nobody armed (a profiler that arms it installs its own handler)"),
    ("SIGIO", True, "async I/O readiness: nothing of ours asks for it (SIGPOLL is the same number)"),
    ("SIGPWR", True, "a power failure, as a UPS daemon announces it"),
    ("SIGSYS", False, "a bad system call (seccomp): a fault of the code running"),
)


def _stopping_signals() -> tuple[int, ...]:
    """The table's stops that this platform has, then every realtime signal (each ends the process by default;
    glibc keeps the two below Python's SIGRTMIN for its threads)."""
    named = tuple(
        getattr(signal, name) for name, stops, _why in TERMINATING_BY_DEFAULT if stops and hasattr(signal, name)
    )
    realtime = tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1)) if hasattr(signal, "SIGRTMIN") else ()
    return named + realtime


STOPPING_SIGNALS = _stopping_signals()


class Interrupted(BaseException):
    """A stopping signal (SIGINT, SIGTERM, ...: STOPPING_SIGNALS) arrived: unwinds like KeyboardInterrupt (every `finally` and atomic_path's
    cleanup run, no temp file stays), but is neither an Exception nor a KeyboardInterrupt, so no
    `except Exception` swallows it and typer does not turn it into an exit status of its own."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []
_holding: list[bool] = []


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A few steps that must not be split by a signal (an output renamed aside, the new one renamed in,
    the old one tagged): one arriving inside is noted, and raised when the block ends."""
    _holding.append(True)
    try:
        yield
    finally:
        _holding.pop()
    if not _holding:  # an enclosing held() block goes on to its end first
        stop_if_received()


def holding() -> bool:
    """Inside held(): the signal handler notes the signal and lets the block finish."""
    return bool(_holding)


def note(signum: int) -> None:
    _received.append(signum)


def received() -> int | None:
    """The first signal this command received, if any."""
    return _received[0] if _received else None


def forget() -> None:
    """A new command starts (tests run several in one process)."""
    _received.clear()
    _said.clear()


def stop_if_received() -> None:
    """Raise `Interrupted` again if a signal came, even one whose exception something swallowed."""
    if _received:
        raise Interrupted(_received[0])


def line(signum: int) -> str:
    """The one line a stopped command prints."""
    return f"interrupted ({name(signum)})"


def name(signum: int) -> str:
    """A signal's name; a realtime one between SIGRTMIN and SIGRTMAX has none of its own (`SIGRTMIN+3`)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


_said: list[bool] = []


def said() -> None:
    """The command printed its `interrupted` line."""
    _said.append(True)


def again_line(signum: int) -> str:
    """The line of a second signal that ends the command at once, during the first one's cleanup. It starts
    with the first signal's line while that was not written yet: SIGTERM right after a Ctrl-C printed only
    `interrupted again (SIGTERM): stopping now`, and the run's exit and reason are the first signal's."""
    first = received()
    if first is None or _said:
        return f"interrupted again ({name(signum)}): stopping now"
    return f"{line(first)}; again ({name(signum)}): stopping now"


def _exit_at_once(signum: int, frame: object) -> None:
    if (first := received()) is not None:  # the command's handlers just went back: it was interrupted, said so
        os._exit(128 + first)
    os.write(2, f"{line(signum)}\n".encode())
    os._exit(128 + signum)


def exit_at_once_on_signals() -> None:
    """Before the command's handlers: a stopping signal prints the one line and exits 128 + signal at once.
    Nothing has been written yet (and after the command returned, everything has), so there is nothing to
    unwind. Python's defaults there: SIGTERM, SIGHUP and SIGQUIT while `scripts.cli` imports killed the
    process silently (exit -15, no line), a Ctrl-C was a KeyboardInterrupt traceback. A signal the parent
    set to be ignored (a shell's background job, nohup) stays ignored."""
    for signum in STOPPING_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _exit_at_once)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_when_parent_dies(signum: int = signal.SIGTERM) -> None:
    """`signum` to this process when its parent dies (Linux). `dvc repro` killed by SIGTERM (a CI's cancel,
    `kill PID`) dies at once and leaves the stage it runs going: the orphan finished and replaced its output,
    one dvc.lock did not record. Now the stage stops with its parent, as its own SIGTERM stops it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != parent:  # it died before the request was made: no signal will come
        os.kill(os.getpid(), signum)
