"""Progress for long loops: a live bar on a terminal, one summary line in logs and CI.

    from scripts.lib.progress import track
    for row in track(rows, desc=f"clean@{source}", unit="prompts"):
        ...

On a terminal (stderr is a TTY) a rich bar shows done/total, rate and ETA while the loop runs and
disappears at the end. Off a terminal (a CI log, `dvc repro > log`) a line every LOG_EVERY_S seconds
(T2I_PROGRESS_EVERY_S overrides it) says the same, so a long stage is not silent until it ends:

    generate@diffusiondb: 1,200/4,800 images (25%), 30 s, 40 images/s, ETA 1 min 30 s

Everywhere, exactly one line is printed to stderr when the loop finishes:

    clean@diffusiondb: 1,234 prompts in 0.8 s (1,500 prompts/s)

stderr, never stdout: commands such as `diff` print their result on stdout. A loop that does not
finish prints nothing: when the input or the loop's body raises, the error is the stage's one line
(a generator cannot tell `break` from an error in the body, so neither gets a summary).
For work that is not one Python loop (a process pool, batches), use `Progress` and `advance(n)`; a stage
whose loop ends before its outputs are committed passes `summary=False` and prints its own last line, so
a failure after the loop is still the only line.
The log lines are ours: rich renders nothing live off a terminal, and tqdm's `\r` redraws make one
endless line in a log file.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO, TypeVar

from scripts.lib.errors import shown

if TYPE_CHECKING:  # rich loads only when a bar is drawn
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

T = TypeVar("T")
REFRESH_S = 0.1  # the live bar is redrawn at most this often
LOG_EVERY_S = 30.0  # off a terminal, one progress line this often


def log_interval() -> float:
    """Seconds between log lines: T2I_PROGRESS_EVERY_S when set to a number, else LOG_EVERY_S."""
    try:
        return max(0.0, float(os.environ["T2I_PROGRESS_EVERY_S"]))
    except (KeyError, ValueError):
        return LOG_EVERY_S


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min': an ETA a person reads at a glance."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(desc: str, done: int, total: int | None, seconds: float, unit: str = "rows") -> str:
    """'desc: 1,200/4,800 images (25%), 30 s, 40 images/s, ETA 1 min 30 s': a log's periodic line
    (without a total: done, elapsed and rate only)."""
    rate = done / seconds if seconds > 0 else 0.0
    parts = [
        f"{desc}: {done:,}/{total:,} {unit} ({done / total:.0%})" if total else f"{desc}: {done:,} {unit}",
        duration(seconds),
        f"{rate:,.0f} {unit}/s",
    ]
    if total and rate > 0:
        parts.append(f"ETA {duration(max(0, total - done) / rate)}")
    return ", ".join(parts)


def summary_line(desc: str, done: int, seconds: float, unit: str = "rows") -> str:
    """'desc: 1,234 rows in 0.8 s (1,500 rows/s)': the one line a finished loop leaves in a log."""
    rate = f"{done / seconds:,.0f} {unit}/s" if seconds > 0 else f"- {unit}/s"
    return f"{desc}: {done:,} {unit} in {seconds:.1f} s ({rate})"


class Progress:
    """Counts work done; a rich bar when `stream` is a terminal, else a line every `log_every` seconds
    (default: log_interval()); the summary line on a clean exit only.

    `force_terminal` overrides the TTY check (tests; None = ask the stream)."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "rows",
        stream: TextIO | None = None,
        force_terminal: bool | None = None,
        log_every: float | None = None,
        summary: bool = True,
    ):
        self.desc, self.total, self.unit, self.summary = shown(desc), total, unit, summary  # names from the user
        self.stream = stream if stream is not None else sys.stderr
        is_tty = getattr(self.stream, "isatty", lambda: False)()
        self.live = is_tty if force_terminal is None else force_terminal
        self.log_every = log_interval() if log_every is None else log_every
        self.done = 0
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._start = self._shown_at = 0.0

    def __enter__(self) -> Progress:
        self._start = self._shown_at = time.perf_counter()
        if self.live:
            self._start_bar()
        return self

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream, force_terminal=True)
        self._bar = RichProgress(
            TextColumn("{task.description}", markup=False),  # a file name's `[red]` is text
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.desc, total=self.total, rate=f"- {self.unit}/s")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is None:
            now = time.perf_counter()
            if now - self._shown_at >= self.log_every and self.done != self.total:  # the summary says the end
                self._shown_at = now
                print(
                    progress_line(self.desc, self.done, self.total, now - self._start, self.unit),
                    file=self.stream,
                    flush=True,
                )
        else:
            now = time.perf_counter()
            if now - self._shown_at >= REFRESH_S or self.done == self.total:  # a bar update costs microseconds
                self._shown_at = now
                seconds = now - self._start
                rate = f"{self.done / seconds:,.0f} {self.unit}/s" if seconds > 0 else f"- {self.unit}/s"
                assert self._task is not None  # set with the bar
                self._bar.update(self._task, completed=self.done, rate=rate)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is not None:
            self._bar.stop()
        if exc_type is None and self.summary:  # summary=False: the caller's own line says the end
            seconds = time.perf_counter() - self._start
            print(summary_line(self.desc, self.done, seconds, self.unit), file=self.stream, flush=True)


def track(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "working",
    unit: str = "rows",
    stream: TextIO | None = None,
    force_terminal: bool | None = None,
    log_every: float | None = None,
) -> Iterator[T]:
    """Yield every item of `iterable` while showing progress (see the module doc)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(desc, total, unit, stream, force_terminal, log_every) as progress:
        for item in iterable:
            yield item
            progress.advance()
