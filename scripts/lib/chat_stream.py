"""Requests answered in their order, streamed: each request is built, looked up in the cache and, when
missing, sent, one small window at a time, so a run of a million requests holds a few of them in memory,
not every body and every reply (synthesize@N built and kept them all: out of memory within seconds).

The rules are call_missing's (scripts/lib/chat_client.py): `concurrency` requests in flight, each success
cached at once, and after the first request that fails for good no new request starts.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from scripts.lib.chat_client import CallStats, RequestFailed, ResponseCache, call_with_retries
from scripts.lib.deadline_http import Cancelled, stop_calls

WINDOW_PER_WORKER = 4  # requests built ahead of the one awaited: enough to keep every worker busy


class OrderedCalls:
    """`run(requests)` yields (index, response) in the requests' order; afterwards `stats` holds the calls'
    summed stats, `failures` the (index, message) of each request that failed for good (nothing is yielded
    after the first), `called` the requests answered by the API."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        policy: Any,
        concurrency: int,
        cache: ResponseCache,
        calls: int,
        log: Callable[[str], None],
        desc: str = "requests",
    ):
        self.base_url, self.api_key, self.policy, self.cache = base_url, api_key, policy, cache
        self.concurrency, self.calls, self.log, self.desc = concurrency, calls, log, desc
        self.stats = CallStats()
        self.failures: list[tuple[int, str]] = []
        self.called = 0
        self._done = 0
        self._stop = threading.Event()  # set by the first request that fails for good
        self._cancel = threading.Event()  # set when the run stops (Ctrl-C): requests in flight are dropped

    def run(self, requests: Iterable[tuple[int, dict | Callable[[], dict], str]]) -> Iterator[tuple[int, dict]]:
        """`requests`: (index, body or a function building it, cache key), in order; a body is built only
        when it is not cached, and sent and cached as it is."""
        from scripts.lib.progress import Progress

        window: collections.deque[tuple[int, Any]] = collections.deque()  # (index, response or Future), in order
        limit = self.concurrency * WINDOW_PER_WORKER
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            with contextlib.ExitStack() as stack:  # the bar only when there are calls, as call_missing's
                progress = stack.enter_context(Progress(self.desc, self.calls, unit="requests")) if self.calls else None
                for index, body, key in requests:
                    if self._stop.is_set():
                        break
                    answer: Any = self.cache.get(key)
                    if answer is None:
                        answer = pool.submit(self._one, body() if callable(body) else body, key)
                    window.append((index, answer))
                    while len(window) > limit or (window and _ready(window[0][1])):
                        yield from self._settle(window.popleft(), progress)
                while window:
                    yield from self._settle(window.popleft(), progress)
        except BaseException:  # Ctrl-C, SIGTERM, the consumer's error: no new request; those in flight stop
            stop_calls(self._cancel, pool, self.cache)
            raise
        pool.shutdown(wait=True)

    def _one(self, body: dict, key: str) -> tuple[dict | None, CallStats, str | None] | None:
        if self._stop.is_set() or self._cancel.is_set():
            return None
        url = self.base_url.rstrip("/") + "/chat/completions"
        try:
            response, call_stats = call_with_retries(url, body, self.api_key, self.policy, self._cancel)
        except Cancelled:
            return None
        except RequestFailed as exc:
            self._stop.set()
            return None, exc.stats, str(exc)
        self.cache.put(key, self.base_url, body, response)
        return response, call_stats, None

    def _settle(self, entry: tuple[int, Any], progress) -> Iterator[tuple[int, dict]]:
        """Yield a cached response, or wait for a request's; count and log the calls as call_missing does."""
        index, answer = entry
        if isinstance(answer, concurrent.futures.Future):
            result = answer.result()
            if result is None:  # not started: an earlier request failed
                return
            answer, call_stats, error = result
            self.stats.add(call_stats)
            self._done += 1
            progress.advance()
            if error is not None:
                self.failures.append((index, error))
            else:
                self.called += 1
            if self._done % max(1, self.calls // 10) == 0 or self._done == self.calls:
                self.log(f"  {self._done}/{self.calls} requests done")
        if answer is not None and not self.failures:
            yield index, answer


def _ready(answer) -> bool:
    return not isinstance(answer, concurrent.futures.Future) or answer.done()
