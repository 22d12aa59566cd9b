"""scripts/lib/workers.py: the ordered process map runtime.workers > 1 runs on."""

from __future__ import annotations

import os

import pytest
from worker_functions import die_on_seven, fail_on_seven, refuse_to_start, square

from scripts.lib.workers import ordered_map


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


def _children() -> list[int]:
    path = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    with open(path) as handle:
        return [int(pid) for pid in handle.read().split()]
