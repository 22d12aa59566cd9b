"""Functions tests/test_workers.py maps in worker processes (a module that imports nothing heavy:
each worker imports it)."""

import os
import signal


def square(n: int) -> int:
    return n * n


def fail_on_seven(n: int) -> int:
    if n == 7:
        raise ValueError("seven")
    return n


def die_on_seven(n: int) -> int:
    if n == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


def refuse_to_start() -> None:
    raise ValueError("bad rules")


def killed_while_replying(n: int) -> bytes:
    """A 64 MB reply, with SIGTERM (default action: die) arriving 50 ms in, while the pipe carries it."""
    import threading

    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
    return bytes(64 << 20)
