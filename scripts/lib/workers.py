"""Worker processes that a Ctrl-C can always stop: an ordered map over chunks, one pipe pair per worker.

multiprocessing.Pool hung now and then when SIGINT landed while it started or tore down (its handler
threads wait on queues whose feeder thread or lock a dead worker left behind), and a spawned child hit
by Ctrl-C while still importing printed a traceback. Here each worker is a plain `python -c` process
in its own process group, so a Ctrl-C (sent to the terminal's foreground group) reaches only this
process, which then kills the workers; there are no threads and no shared queues, and the parent only
ever waits in `connection.wait`. A worker whose parent died sees its pipe close and exits.

`forked_map` is the same over forks of this process, for work on arrays the parent already holds (dedup's
signatures, buckets and exact check): a fork inherits them instead of receiving them pickled.
ProcessPoolExecutor hung there too: a worker that SIGTERM killed mid-reply left its reader thread
waiting for the rest of the message, and the executor's shutdown waited for that thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn, cast

# The worker's first message is the parent's sys.path, so it imports our modules from wherever the
# parent did (a stage runs from the repository root, a test from anywhere).
# A parent interrupted before it sent that closes the pipe: the worker just exits.
_BOOT = """\
import sys
from multiprocessing.connection import Connection
inbox, outbox = Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
try:
    sys.path[:] = inbox.recv()
except (EOFError, OSError):
    sys.exit(0)
from scripts.lib.workers import serve
serve(inbox, outbox)
"""


class Worker:
    def __init__(self, function: Callable, initializer: Callable | None, initargs: tuple):
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(to_child), str(from_child)],
            pass_fds=(to_child, from_child),
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
        os.close(to_child)
        os.close(from_child)
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(to_parent, writable=False)
        self.setup = (function, initializer, initargs)

    def start(self) -> None:
        self.outbox.send(list(sys.path))
        self.outbox.send(self.setup)

    def stop(self) -> None:
        self.outbox.close()
        self.inbox.close()
        if self.process.poll() is None:  # idle, or inside a chunk whose result is not wanted any more
            self.process.kill()
        self.process.wait()


def ordered_map(
    function: Callable[[Any], Any],
    items: Sequence,
    workers: int,
    chunksize: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Generator[Any, None, None]:
    """`map(function, items)` in `workers` processes, yielding results in input order as they come.
    `function` and `initializer` must be module-level functions of an importable module."""
    chunks = [items[start : start + chunksize] for start in range(0, len(items), chunksize)]
    pool: list[Worker] = []
    try:
        for _ in range(min(workers, len(chunks))):
            pool.append(Worker(function, initializer, initargs))
            pool[-1].start()  # once in `pool`: an interrupt from here on stops it
        yield from _dispatch(chunks, pool)
    finally:
        for worker in pool:
            worker.stop()


def forked_map(function: Callable[..., Any], items: Iterable, workers: int, shared: tuple = ()) -> Iterator[Any]:
    """`function(*shared, item)` for each item in `workers` forks of this process, yielding results in
    input order as they come. `shared` is inherited, never pickled; items and results are, and are taken
    from `items` one at a time as workers free up (a generator of batches is never all in memory)."""
    pool: list[Worker] = []
    try:
        for _ in range(workers):
            pool.append(ForkedWorker(function, shared, pool))
        yield from _dispatch(([item] for item in items), pool)
    finally:
        for worker in pool:
            worker.stop()


class ForkedWorker(Worker):
    """A Worker that is a fork of this process, in its process group: it ignores Ctrl-C (the parent
    stops it) and ends at once on SIGTERM (scripts/cli.py's at-fork hook)."""

    def __init__(self, function: Callable, shared: tuple, siblings: list[Worker]):
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        pid = os.fork()
        if pid == 0:
            _forked_child(function, shared, to_child, from_child, [from_parent, to_parent], siblings)
        os.close(to_child)
        os.close(from_child)
        self.process = _Fork(pid)  # type: ignore[assignment]
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(to_parent, writable=False)


def _forked_child(
    function: Callable, shared: tuple, inbox: int, outbox: int, parent_ends: list[int], siblings: list[Worker]
) -> NoReturn:
    """A forked worker's life: answer chunks until the parent closes the pipe, then leave without
    running the parent's exit handlers."""
    code = 0
    try:
        for fd in parent_ends:
            os.close(fd)
        for sibling in siblings:  # its pipes' parent ends: a sibling must see EOF when the parent goes
            sibling.outbox.close()
            sibling.inbox.close()
        _answer(Connection(inbox, writable=False), Connection(outbox, readable=False), function, shared)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


class _Fork:
    """The few Popen methods Worker uses, for a forked child."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _dispatch(chunks: Iterable, pool: list[Worker]) -> Iterator:
    """One chunk per worker at a time (a second one could deadlock both ends on full pipe buffers)."""
    pending = enumerate(chunks)
    holding: dict[Connection, tuple[Worker, int]] = {}
    done: dict[int, list] = {}
    next_index = 0

    def hand_out(worker: Worker) -> None:
        for index, chunk in pending:
            worker.outbox.send(chunk)
            holding[worker.inbox] = (worker, index)
            return

    for worker in pool:
        hand_out(worker)
    while holding:
        for inbox in cast("list[Connection]", wait(list(holding))):  # wait returns what it was given
            worker, index = holding.pop(inbox)
            try:
                ok, value = inbox.recv()
            except (
                EOFError,
                OSError,
            ):  # EOF before a reply, or in the middle of one ("got end of file during message")
                raise RuntimeError(
                    f"worker process {worker.process.pid} died (exit code {worker.process.wait()})"
                ) from None
            if not ok:
                raise RuntimeError(f"worker process failed: {value}")
            done[index] = value
            hand_out(worker)
        while next_index in done:
            yield from done.pop(next_index)
            next_index += 1


def serve(inbox: Connection, outbox: Connection) -> None:
    """The worker's loop: set up, then answer each chunk with (True, results) or (False, error)."""
    try:
        function, initializer, initargs = inbox.recv()
        if initializer is not None:
            initializer(*initargs)
    except Exception as exc:  # e.g. rules that fail to build: the parent hears it as the chunk's answer
        failure = (False, f"{type(exc).__name__}: {exc}")
        while _next_chunk(inbox) is not None and _reply(outbox, failure):
            pass
        return
    _answer(inbox, outbox, function)


def _answer(inbox: Connection, outbox: Connection, function: Callable, shared: tuple = ()) -> None:
    """Answer each chunk with (True, [function(*shared, item) ...]) or (False, error) until the pipe closes."""
    while (chunk := _next_chunk(inbox)) is not None:
        result: tuple[bool, Any]
        try:
            result = (True, [function(*shared, item) for item in chunk])
        except Exception as exc:  # sent back: the parent reports it as one line
            result = (False, f"{type(exc).__name__}: {exc}")
        if not _reply(outbox, result):
            return


def _next_chunk(inbox: Connection):
    try:
        return inbox.recv()
    except (EOFError, OSError):  # the parent is done with us (or gone)
        return None


def _reply(outbox: Connection, result) -> bool:
    try:
        outbox.send(result)
        return True
    except OSError:  # the parent stopped listening (interrupted or gone): nothing to report
        return False
