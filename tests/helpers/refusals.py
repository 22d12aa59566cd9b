"""What a read that may block returned or raised, and the one-line refusal it must be (rounds 33b and 34b)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

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


def caption_reads(images) -> tuple[list[str], Counter]:
    """What caption._caption does with a folder: list it, inspect (read) each image, count each refusal (rounds
    43e and 44c): the ids it would send, and the skips by reason."""
    from scripts.lib.archive import UnsafeArchive
    from scripts.lib.caption_images import inspect_image, list_images

    params = SimpleNamespace(images=str(images), max_image_bytes=1 << 20, max_image_pixels=1 << 24)
    listed, skipped = list_images(images)
    sent = []
    for image in listed:
        try:
            sent.append(inspect_image(image, params).id)
        except UnsafeArchive as exc:
            skipped[exc.reason] += 1
    return sent, skipped
