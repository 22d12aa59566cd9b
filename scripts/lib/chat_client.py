"""An OpenAI-compatible chat-completions client for stages that call a model: synthesize@N, caption@S.

- Requests: one POST to {base_url}/chat/completions (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp
  server), the API key only in that request's Authorization header (redirects are refused), and
  `timeout_s` a deadline for the whole request (connect, send, headers, body).
- Retries: timeouts, 429, 5xx, dropped connections and replies that are not a chat completion are
  retried with exponential backoff (at least the server's Retry-After); other statuses are not.
- The key never reaches a file or a message: any run of text from which it could be read back (any 8+ character
  piece of it in any case, reversed, escaped or encoded: scripts/lib/key_redaction.py; a key under 16 characters
  only as a whole token) is removed from replies (a server echoing the header) and error messages; a reply that
  still holds it is refused, not cached, and so is one whose usage is not an object or whose text is not Unicode.
- Cache: one JSON file per request under cache/<sha256>.json, keyed by (base_url, request body) and read
  only under that key (a renamed entry is refused), written atomically only after the request succeeded,
  so a killed run (even kill -9) keeps every finished request and the next run resumes; with the cache,
  a run replays without network or key.
- `call_missing` runs the uncached requests `concurrency` at a time and stops starting new ones
  after the first request that fails for good.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import hashlib
import http.client
import json
import os
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from scripts.lib import deadline_http
from scripts.lib.deadline_http import Cancelled, DeadlineHTTPHandler, DeadlineHTTPSHandler, stop_calls
from scripts.lib.dvc_cache import is_cache_copy
from scripts.lib.errors import DataError, shown
from scripts.lib.import_env import redact_known as redact_secrets  # the API key, and every other secret known
from scripts.lib.io import file_kind, write_json
from scripts.lib.key_redaction import holds_key
from scripts.lib.nesting import loads_json
from scripts.lib.safe_paths import open_regular, read_capped
from scripts.lib.temps import is_our_temp, remove_stale


def cache_key(base_url: str, body: dict) -> str:
    """sha256 of the endpoint and the whole body (model, messages, sampling params).

    The format is fixed: existing caches (synthesize@N's since its first release) replay only while
    this stays byte for byte the same."""
    canonical = json.dumps(
        {"base_url": base_url.rstrip("/"), "body": body}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_completion(response: Any) -> tuple[str, bool]:
    """(content, truncated) of a chat-completions response; ValueError if it is not one."""
    try:
        choice = response["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("no choices[0].message.content in the response") from None
    if content is not None and not isinstance(content, str):
        raise ValueError("choices[0].message.content is not a string")
    return content or "", choice.get("finish_reason") == "length"


def check_reply(response: Any) -> None:
    """ValueError unless `response` is a chat completion whose parts the stages read have their types
    and whose text is Unicode: checked before a reply is cached, so a bad one is retried, never stored
    (a cached `"usage": [1]` failed every later run, offline ones too)."""
    read_completion(response)
    usage = response.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise ValueError("usage is not an object")
    try:
        json.dumps(response, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON "\\ud800"): no file can hold it as UTF-8
        raise ValueError("the reply holds text that is not Unicode (a lone surrogate)") from None


# ---------------------------------------------------------------- HTTP with retries


class TransientError(Exception):
    """Worth retrying: timeout, 429, 5xx, dropped connection, unreadable body."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class FatalError(Exception):
    """Not worth retrying (400, 401, 404, ...)."""


class RequestFailed(Exception):
    """A request that gave up (fatal error or attempts spent), with what it cost."""

    def __init__(self, message: str, stats: CallStats):
        super().__init__(message)
        self.stats = stats


RETRY_KINDS = ("timeout", "http_429", "http_5xx", "connection", "invalid_response")


@dataclass
class CallStats:
    attempts: int = 0
    retries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RETRY_KINDS, 0))

    def add(self, other: CallStats) -> None:
        self.attempts += other.attempts
        for kind, n in other.retries.items():
            self.retries[kind] += n


def backoff_delay(failures: int, base: float, cap: float, retry_after: float | None) -> float:
    """Wait before the next attempt: base * 2^(failures-1), at least Retry-After, at most cap."""
    delay = base * 2 ** (failures - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (RFC 9110 10.2.3: ASCII digits or an HTTP date), None when absent or unreadable:
    float() took `1e1`, `1_000`, full-width digits, `inf` (each a wait of backoff_cap_s) and `nan`."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)  # float, not int: 5,000 digits are inf, not int's ValueError
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


MAX_REPLY_BYTES = 4 << 20  # a chat completion is kilobytes; redacting a reply costs a few times its size
MAX_ERROR_BYTES = 64 << 10
# A cache entry holds the request as sent (images by their sha256) and a reply under MAX_REPLY_BYTES: far less
MAX_ENTRY_BYTES = 64 << 20


def _read_capped(stream, cap: int, what: str) -> bytes:
    """At most `cap` bytes of a body; TransientError beyond (a reply with no end must not fill memory)."""
    data = deadline_http.read_promised(stream, cap + 1)  # IncompleteRead (a connection error) for a body cut short
    if len(data) > cap:
        raise TransientError("invalid_response", f"{what} larger than {cap} bytes")
    return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would resend the Authorization header to the new address,
    whatever its origin. The 3xx arrives as an HTTPError and fails the request (post_chat)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _origin(url: str) -> str:
    """scheme://host:port of a redirect's target; "elsewhere" for one that is no URL (a port out of
    range, a broken [IPv6]): its text may hold the key, and urllib's ValueError printed it whole."""
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "elsewhere"


def post_chat(url: str, body: dict, api_key: str | None, timeout: float, cancel: threading.Event | None = None) -> dict:
    """One POST to /chat/completions; raises TransientError or FatalError (key never in messages).
    The key goes in the Authorization header of this request only (redirects are refused), and what could give
    it back, or a proxy's password, is removed from the reply (a server echoing the header must not put it into
    the cache or prompts.txt) and from error messages (redact_secrets); a reply that still holds the key as
    stored (holds_key on its JSON text) is a FatalError, never cached."""
    if api_key and holds_key(json.dumps(body, ensure_ascii=False), api_key):  # the body is cached as sent
        raise FatalError("the request would carry the API key in its body (the key pasted into params?); not sent")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    except ValueError:  # a base_url urllib cannot split (http://[::1/v1): checked in params, and here
        raise FatalError("base_url is not a URL urllib can read") from None
    # per call: proxy settings are read from the env now, and `timeout` is a deadline for the whole
    # request (connect, send, headers, body), not for each read
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(
        _NoRedirect(), DeadlineHTTPHandler(deadline, cancel), DeadlineHTTPSHandler(deadline, cancel)
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            if (encoding := deadline_http.unasked_encoding(response.headers)) is not None:
                raise deadline_http.MalformedReply(f"a reply encoded as {encoding}, never asked for")
            raw = _read_capped(response, MAX_REPLY_BYTES, "reply")
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location")
            where = _origin(urllib.parse.urljoin(url, where)) if where else "elsewhere"
            message = f"HTTP {exc.code}: the server redirects to {where}; redirects are not followed"
            message += " (the API key is sent to base_url only): set base_url to the final address"
            raise FatalError(redact_secrets(message, api_key)) from None
        detail = redact_secrets(_error_detail(exc, api_key), api_key)
        if exc.code == 429 or exc.code >= 500:
            kind, wait = "http_429" if exc.code == 429 else "http_5xx", exc.headers.get("Retry-After")
            raise TransientError(kind, f"HTTP {exc.code}{detail}", parse_retry_after(wait)) from None
        raise FatalError(f"HTTP {exc.code}{detail}") from None
    except TimeoutError:
        raise TransientError("timeout", f"no response within {timeout:g}s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TransientError("timeout", f"no response within {timeout:g}s") from None
        raise TransientError("connection", redact_secrets(f"connection failed ({exc.reason})", api_key)) from None
    except deadline_http.MalformedReply as exc:  # no HTTP server answers so: not retried, its origin named
        raise FatalError(redact_secrets(f"{_origin(url)} sent {exc}", api_key)) from None
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        raise TransientError(
            "connection", redact_secrets(f"connection failed ({type(exc).__name__})", api_key)
        ) from None
    except (Cancelled, TransientError):  # the reply cap's own
        raise
    except Exception as exc:  # urllib's own (a redirect to http://[::1/x, a host idna refuses):
        # its text holds what the server sent, so only its type is named
        raise FatalError(f"the request failed ({type(exc).__name__}: an address or reply urllib cannot read)") from None
    try:
        response = redact_secrets(loads_json(raw), api_key)
    except ValueError:  # TooDeep too: nested thousands deep
        raise TransientError("invalid_response", "response is not JSON") from None
    if api_key and _stored_holds_key(response, api_key):
        raise FatalError("the reply holds the API key in a form that could not be removed; not stored")
    return response


def _stored_holds_key(response: dict, api_key: str) -> bool:
    """Whether the reply's JSON, as stored (UTF-8) or \\u-escaped, holds the key; an ASCII one is both."""
    text = json.dumps(response, ensure_ascii=False)
    if holds_key(text, api_key):
        return True
    return not text.isascii() and holds_key(json.dumps(response), api_key)


def _error_detail(exc: urllib.error.HTTPError, api_key: str | None) -> str:
    """The server's own error message, short, on one line. OpenAI, vLLM, llama.cpp: {"error": {"message": ...}};
    Ollama: {"error": "..."}; FastAPI servers (transformers serve): {"detail": "..."}; vLLM also {"message": ...}."""
    if (encoding := deadline_http.unasked_encoding(exc.headers)) is not None:  # not decoded: no bomb, no garbage
        return f" (its body encoded as {encoding}, never asked for; not shown)"
    raw, whole = deadline_http.read_error_start(exc, MAX_ERROR_BYTES)  # a few seconds; read errors are its own
    if not whole:  # stalled or broken: the part received (redacted by post_chat, cut here)
        return deadline_http.received_part(raw, api_key)
    try:
        payload = loads_json(raw or b"null")
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or payload.get("detail") or payload.get("message")
    except Exception:  # any body shape: the status code alone is still a clear error
        return ""
    return f": {' '.join(str(message).split())[:200]}" if message else ""


class RetryPolicy(NamedTuple):
    """How long one try may take and how often to try; any params model with these four keys."""

    timeout_s: float
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float

    @classmethod
    def of(cls, params: Any) -> RetryPolicy:
        return cls(params.timeout_s, params.max_attempts, params.backoff_base_s, params.backoff_cap_s)


def call_with_retries(
    url: str, body: dict, api_key: str | None, policy: Any, cancel: threading.Event | None = None
) -> tuple[dict, CallStats]:
    """POST until a valid chat completion arrives; RequestFailed on a fatal error or attempts spent,
    Cancelled as soon as `cancel` is set (no new attempt, no backoff wait, the request in flight dropped).
    `policy`: a RetryPolicy or any object with its four attributes (a params entry)."""
    stats = CallStats()
    cancel = cancel or threading.Event()
    for attempt in range(1, policy.max_attempts + 1):
        if cancel.is_set():
            raise Cancelled()
        stats.attempts += 1
        try:
            response = post_chat(url, body, api_key, policy.timeout_s, cancel)
            try:
                check_reply(response)
            except ValueError as exc:
                raise TransientError("invalid_response", str(exc)) from None
            return response, stats
        except FatalError as exc:
            raise RequestFailed(str(exc), stats) from None
        except TransientError as exc:
            if attempt == policy.max_attempts:
                raise RequestFailed(f"{exc} (after {attempt} attempts)", stats) from None
            stats.retries[exc.kind] += 1
            if cancel.wait(backoff_delay(attempt, policy.backoff_base_s, policy.backoff_cap_s, exc.retry_after)):
                raise Cancelled() from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the response cache


class ResponseCache:
    """One JSON file per request: {"base_url", "request", "response"}; never the API key."""

    def __init__(self, directory: Path):
        self.directory = directory
        # a lock: atomic_path's umask read is not thread-safe; closed (deadline_http.stop_calls): no entry after
        self.write_lock, self.closed = threading.Lock(), False

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached response of `key`, None when there is none. An entry is read only when it is a regular
        file with one name in this folder (a FIFO hung the run, a link to /dev/zero filled memory, a link to a
        file elsewhere became the reply), at most MAX_ENTRY_BYTES of it, and only when the request it stores
        hashes to `key`."""
        path = self.path(key)
        try:
            with open_regular(path, follow=False, one_link=True, links_ok=_dvc_checkout) as file:
                raw = read_capped(file, MAX_ENTRY_BYTES, path)
        except FileNotFoundError:
            return None
        except DataError as exc:
            raise DataError(f"{exc} (a cache entry; delete it to request it again)") from None
        except OSError as exc:
            raise DataError(f"{shown(path)}: cannot read cache entry ({exc.strerror or exc})") from None
        try:
            entry = loads_json(raw.decode("utf-8"))
            response, theirs = entry["response"], cache_key(entry["base_url"], entry["request"])
            check_reply(response)
        except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
            raise DataError(f"{shown(path)}: corrupt cache entry (delete it to request it again)") from None
        if theirs != key:  # keyed as put() keys it: a swapped or copied entry gave each image another's caption
            raise DataError(f"{shown(path)}: cache entry of another request (its request hashes to another name)")
        return response

    def lookup(self, keys: list[str]) -> tuple[dict[int, dict], list[int]]:
        """The cached responses by position in `keys`, and the positions still to request."""
        responses = {index: cached for index, key in enumerate(keys) if (cached := self.get(key)) is not None}
        return responses, [index for index in range(len(keys)) if index not in responses]

    def put(self, key: str, base_url: str, body: dict, response: dict) -> None:
        try:
            with self.write_lock:
                if not self.closed:
                    write_json({"base_url": base_url, "request": body, "response": response}, self.path(key))
        except OSError as exc:  # disk full, read-only checkout: one line, not a thread traceback
            raise DataError(f"{shown(self.path(key))}: cannot write cache entry ({exc.strerror or exc})") from None
        except UnicodeEncodeError:  # check_reply refuses such a reply; the entry itself is never printed
            raise DataError(f"{shown(self.path(key))}: cannot write cache entry (text that is not Unicode)") from None

    def check_folder(self) -> None:
        try:
            mode = os.lstat(self.directory).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise DataError(
                f"{shown(self.directory)}: the response cache is a symbolic link; refusing to read or write "
                "entries through it (make it a folder of its own)"
            )
        if not stat.S_ISDIR(mode):
            raise DataError(f"{shown(self.directory)}: the response cache is {file_kind(mode)}, not a folder")

    def remove_stale_temp_files(self) -> int:
        """Temp files of a killed run (atomic_path names them .<name>.tmp-* and tags them, temps.mark_temp);
        DVC must not track them. Only tagged ones go: a user's `.notes.tmp-draft`, a link or a folder stays."""
        stale = [path for path in self.directory.glob(".*.tmp-*") if is_our_temp(path)]
        for path in stale:
            remove_stale(path, path)
        return len(stale)

    def open(self) -> ResponseCache:
        """Create the folder and drop a killed run's temp files; returns self. A folder that is a link (or
        not a folder) is refused: new entries were written wherever it pointed."""
        self.check_folder()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.check_folder()  # made by another process since
        self.remove_stale_temp_files()
        return self


def _dvc_checkout(path: Path) -> bool:
    """An entry with a second name that is DVC's own (a checkout with cache.type hardlink), under the size
    cap: is_cache_copy hashes it."""
    return os.lstat(path).st_size <= MAX_ENTRY_BYTES and is_cache_copy(path)


class Job(NamedTuple):
    """One request to make: `body` is sent, `stored` (the same request, possibly with large parts such
    as images replaced by their sha256) is what the cache file records under `key`. `body` may be a
    function returning it, called when the request starts: large payloads are built one at a time."""

    index: int  # type: ignore[assignment]  # a field named like tuple.index: the stubs see a clash
    body: dict | Callable[[], dict]
    stored: dict
    key: str


def call_missing(
    jobs: list[Job],
    *,
    base_url: str,
    api_key: str | None,
    policy: Any,
    concurrency: int,
    cache: ResponseCache,
    responses: dict[int, dict],
    log: Callable[[str], None],
    desc: str = "requests",
) -> tuple[CallStats, list[tuple[int, str]]]:
    """Make `jobs`, `concurrency` at a time; cache each success at once and put it in `responses`.

    After the first request that fails for good, no new request starts (the ones in flight finish
    and are cached): a broken key or an outage costs one request's retries, not thousands.
    Returns the summed call stats and the (index, message) of each request that failed for good.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    stats = CallStats()
    failures: list[tuple[int, str]] = []
    if not jobs:
        return stats, failures

    stop = threading.Event()  # set by the first request that fails for good
    cancel = threading.Event()  # set when the run stops (Ctrl-C): requests in flight are dropped

    def one(job: Job) -> tuple[int, dict | None, CallStats, str | None] | None:
        if stop.is_set() or cancel.is_set():
            return None
        try:
            body = job.body() if callable(job.body) else job.body
            response, call_stats = call_with_retries(url, body, api_key, policy, cancel)
        except Cancelled:
            return None
        except RequestFailed as exc:
            stop.set()
            return job.index, None, exc.stats, str(exc)
        cache.put(job.key, base_url, job.stored, response)
        return job.index, response, call_stats, None

    every = max(1, len(jobs) // 10)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = [pool.submit(one, job) for job in jobs]
        done = 0
        from scripts.lib.progress import track

        for future in track(concurrent.futures.as_completed(futures), total=len(futures), desc=desc, unit="requests"):
            result = future.result()
            if result is None:  # not started: an earlier request failed
                continue
            index, response, call_stats, error = result
            stats.add(call_stats)
            done += 1
            if error is None:
                assert response is not None  # `one` returns a response exactly when there is no error
                responses[index] = response
            else:
                failures.append((index, error))
            if done % every == 0 or done == len(jobs):
                log(f"  {done}/{len(jobs)} requests done")
    except BaseException:  # Ctrl-C, SIGTERM: no new request nor cache entry; those in flight stop within POLL_S
        stop_calls(cancel, pool, cache)
        raise
    pool.shutdown(wait=True)
    return stats, failures


# ---------------------------------------------------------------- the API key


def api_key_from_env(env_name: str | None) -> str | None:
    """The key from the environment variable `env_name` (None: no key), refused without printing it when it
    cannot be a header value (a control character such as a trailing \\r, a space, non-ASCII) or is wrapped in
    quotes: `Bearer "sk-..."` fails, and a server naming the key echoes it bare, where a short one went unfound."""
    key = os.environ.get(env_name) if env_name else None
    if key and not all(0x21 <= ord(char) <= 0x7E for char in key):
        raise DataError(
            f"${env_name}: the API key holds a control character, space or non-ASCII character (a trailing "
            "newline or \\r from the file it was read from?); fix the variable"
        )
    if key and len(key) >= 2 and key[0] == key[-1] in "'\"":  # `docker run --env-file` keeps an env file's quotes
        raise DataError(f"${env_name}: the API key is wrapped in quotes (kept from an env file?); remove them")
    return key
