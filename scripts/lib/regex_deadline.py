"""A time bound on every regex call the cleaner makes: a user's regex that backtracks without end
(`(a+)+$`, `((a*)*)\\1$`) fails in one line instead of hanging the command.

Why at run time and not by refusing such patterns when rules load: which regexes backtrack
super-linearly is not decidable by a short syntactic test (nested repeats are fine in the shipped
`(\\w+)(\\s+\\1\\b)+`; `.*.*.*.*x` has no nesting and is quintic), so a static check would both refuse
good rules and let bad ones through. A bound changes no output: a call either finishes exactly as
Python's `re` would, or the command stops.

How, at no cost per call: Python's `re` checks for signals while it matches, so a periodic SIGALRM
(every TICK_S) lets a handler look at the frame the regex was called from. When it finds the same
call of the regex engine (the same frame, at the same instruction, with the same objects in its
locals) still running after LIMIT_S, it raises `RegexTooSlow`. Signals reach only the main thread:
`bounded_regexes` arms the timer there and does nothing elsewhere (Ray's actors clean in a child
process for that reason: scripts/lib/cleaning/on_ray.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

LIMIT_S = 10.0  # a regex call on one text may run this long; shipped rules take microseconds
LIMIT_ENV = "T2I_REGEX_SECONDS"  # overrides LIMIT_S (the tests use a fraction of a second)
MIN_LIMIT_S = 0.05  # a smaller bound made the timer fire so often that the process could not run, nor stop


class RegexTooSlow(Exception):
    """A regex call ran past the limit. `patterns`: the regexes in the calling frame (one of them
    was running); `prompt`: the text being cleaned, once the batch loop knows it."""

    def __init__(self, patterns: tuple[str, ...], seconds: float, prompt: str | None = None):
        super().__init__(patterns, seconds, prompt)  # as args: it pickles (from a worker process)
        self.patterns, self.seconds, self.prompt = patterns, seconds, prompt

    def for_prompt(self, prompt: str | None) -> RegexTooSlow:
        return RegexTooSlow(self.patterns, self.seconds, prompt)

    def __str__(self) -> str:
        return f"a regex ran over {self.seconds:g} s on one prompt"


def limit_s() -> float:
    """Seconds a regex call may run: T2I_REGEX_SECONDS when set to a positive number, else LIMIT_S."""
    try:
        value = float(os.environ[LIMIT_ENV])
    except (KeyError, ValueError):
        return LIMIT_S
    return max(value, MIN_LIMIT_S) if value > 0 else LIMIT_S


@contextlib.contextmanager
def bounded_regexes() -> Iterator[None]:
    """Inside: a regex-engine call that runs past `limit_s()` raises `RegexTooSlow`. Off the main
    thread (where no signal handler can run) and when already armed, it does nothing."""
    if threading.current_thread() is not threading.main_thread() or _Watch.armed:
        yield
        return
    watch = _Watch(limit_s())
    previous = signal.signal(signal.SIGALRM, watch.on_tick)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, watch.tick_s, watch.tick_s)
    _Watch.armed = True
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)  # None: set in C
        _Watch.armed = False


_WATCHED_FILES = frozenset({os.path.join(os.path.dirname(__file__), "regex_engine.py")})


class _Watch:
    """The SIGALRM handler's memory: which call it saw last, and since when."""

    armed = False

    def __init__(self, limit: float):
        self.limit = limit
        self.tick_s = min(1.0, limit / 4)  # detection lands within a tick past the limit
        self.seen: tuple | None = None  # (frame, instruction, its locals' values): kept alive, so `is` holds
        self.since = 0.0

    def on_tick(self, signum: int, frame: FrameType | None) -> None:
        if frame is None or os.path.abspath(frame.f_code.co_filename) not in _WATCHED_FILES:
            self.seen = None  # not inside a regex call of the engine
            return
        now, call = time.monotonic(), (frame, frame.f_lasti, tuple(frame.f_locals.values()))
        if not self._same_call(call):
            self.seen, self.since = call, now
            return
        if now - self.since >= self.limit:
            self.seen = None
            raise RegexTooSlow(_patterns(call[2]), self.limit)

    def _same_call(self, call: tuple) -> bool:
        seen = self.seen
        return (
            seen is not None
            and seen[0] is call[0]
            and seen[1] == call[1]
            and len(seen[2]) == len(call[2])
            and all(a is b for a, b in zip(seen[2], call[2]))
        )


def _patterns(values: tuple) -> tuple[str, ...]:
    """The regexes among a frame's locals (a compiled pattern, or a bound method of one: `regex.sub`)."""
    found = []
    for value in values:
        regex = getattr(value, "__self__", value)
        if isinstance(regex, re.Pattern) and isinstance(regex.pattern, str):
            found.append(regex.pattern)
    return tuple(dict.fromkeys(found))
