"""What a read that may block returned or raised, and the one-line refusal it must be (rounds 33b and 34b)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from scripts.lib.errors import DataError


def outcome(call: Callable[[], object]) -> object:
    """What `call` returned or raised, run in a thread: a FIFO opened by name blocked the read."""
    result: list = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the read blocked (a FIFO opened by name)"
    return result[0]


def assert_one_line(result: object, expected: str, named: str) -> None:
    """`result` is a one-line DataError saying `expected` and naming `named`."""
    assert isinstance(result, DataError), f"not refused: {result!r}"
    assert expected in str(result) and named in str(result) and "\n" not in str(result), str(result)
