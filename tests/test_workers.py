"""scripts/lib/workers.py: the ordered process map runtime.workers > 1 runs on."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from worker_functions import die_on_seven, fail_on_seven, killed_while_replying, refuse_to_start, square

from scripts.lib.workers import forked_map, ordered_map


@pytest.mark.parametrize("workers, chunksize", [(1, 3), (2, 1), (2, 4), (3, 50)])
def test_results_come_back_in_input_order(workers, chunksize):
    items = list(range(23))
    assert list(ordered_map(square, items, workers, chunksize)) == [n * n for n in items]


def test_no_items_starts_no_worker():
    assert list(ordered_map(square, [], 2, 4)) == []


def test_an_exception_in_a_worker_is_one_line_and_stops_every_worker():
    children_before = set(_children())
    with pytest.raises(RuntimeError, match=r"^worker process failed: ValueError: seven$"):
        list(ordered_map(fail_on_seven, list(range(20)), 2, 2))
    assert set(_children()) <= children_before  # reaped, none left running


def test_a_worker_that_dies_is_reported_not_waited_for():
    with pytest.raises(RuntimeError, match=r"^worker process \d+ died \(exit code -9\)$"):
        list(ordered_map(die_on_seven, list(range(20)), 2, 2))


def test_an_initializer_error_is_reported():
    with pytest.raises(RuntimeError, match="bad rules"):
        list(ordered_map(square, list(range(4)), 2, 2, initializer=refuse_to_start))


def test_workers_are_out_of_reach_of_the_terminals_ctrl_c():
    """Each worker leads its own process group: Ctrl-C (sent to the foreground group) reaches only the
    parent, which stops them; none prints a KeyboardInterrupt of its own, even while still importing."""
    before = set(_children())  # under xdist this process may have other children (the session build)
    results = ordered_map(square, list(range(100)), 2, 1)
    assert next(results) == 0
    try:
        workers = set(_children()) - before
        assert len(workers) == 2
        assert all(os.getpgid(pid) == pid != os.getpgid(0) for pid in workers)
    finally:
        results.close()


def test_closing_early_stops_the_workers():
    before = set(_children())
    results = ordered_map(square, list(range(1000)), 2, 1)
    assert next(results) == 0
    results.close()
    assert set(_children()) - before == set()


# --- forked_map: forks that inherit the parent's arrays -------------------------------------------------


def _row_sum(table: np.ndarray, offset: int, row: int) -> int:
    return int(table[row].sum()) + offset


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_forks_see_the_shared_arrays_and_answer_in_order(workers):
    table = np.arange(60).reshape(20, 3)
    rows = (r for r in range(20))  # a generator: items are taken as workers free up
    assert list(forked_map(_row_sum, rows, workers, (table, 100))) == [int(r.sum()) + 100 for r in table]


def test_a_fork_that_fails_or_dies_is_reported_and_every_fork_is_reaped():
    before = set(_children())
    with pytest.raises(RuntimeError, match=r"^worker process failed: ValueError: seven$"):
        list(forked_map(fail_on_seven, range(20), 2))
    with pytest.raises(RuntimeError, match=r"^worker process \d+ died \(exit code -9\)$"):
        list(forked_map(die_on_seven, range(20), 2))
    assert set(_children()) <= before


def test_a_fork_killed_in_the_middle_of_a_long_reply_does_not_hang_the_parent():
    """SIGTERM killed a ProcessPoolExecutor worker while it sent a result: the executor's reader thread
    waited for the rest for ever, and so did the stage. Here the parent reads EOF and reports it."""
    started = time.monotonic()
    # the forks die by SIGTERM's default action: a handler another test left in this process (ray.init leaves
    # its sys.exit one) would make them exit 1 instead
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(RuntimeError, match=r"^worker process \d+ died \(exit code -15\)$"):
            list(forked_map(killed_while_replying, range(4), 2))
    finally:
        signal.signal(signal.SIGTERM, before)
    assert time.monotonic() - started < 20


def test_closing_forked_map_early_stops_the_forks():
    before = set(_children())
    results = forked_map(square, range(1000), 2)
    assert next(results) == 0
    assert len(set(_children()) - before) == 2
    results.close()
    assert set(_children()) - before == set()


def _children() -> list[int]:
    path = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    with open(path) as handle:
        return [int(pid) for pid in handle.read().split()]
