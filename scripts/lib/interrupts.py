"""The signal a command received. SIGINT and SIGTERM raise `Interrupted` in the main thread, but a
library can swallow that exception: pyarrow imports pandas lazily inside `Array.to_numpy`, and a Ctrl-C
landing in that import is lost there, leaving a half-imported pandas behind. So the signal is also
remembered here: no output is committed after it (`io.replace_path` calls `stop_if_received`), and the
command exits as interrupted whatever the run does next."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# Every signal that ends a command: the two asked for (Ctrl-C, `kill`) and those whose default action
# would kill the process silently, leaving its temp files, lock and workers behind: SIGHUP (the terminal
# or ssh session closed), SIGQUIT (Ctrl-backslash) and SIGXCPU (a CPU-time limit, `ulimit -St`). Each exits 128 +
# its number with the one `interrupted (NAME)` line, like SIGINT and SIGTERM.
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU)


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


def stop_if_received() -> None:
    """Raise `Interrupted` again if a signal came, even one whose exception something swallowed."""
    if _received:
        raise Interrupted(_received[0])
