"""synthesize@N: new prompts from a chat model, the reference team's ChatGPT/GPT-4 augmentation.

Each request shows the model example prompts (drawn with a seeded RNG from example files, plus fixed
examples), asks for more "in the similar style" and lists topics to avoid. The endpoint is any
OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp server, Ollama).

Reproducibility: every response is cached under OUT/cache/<sha256>.json, keyed by (base_url, request
body). The cache is a DVC output with `persist: true`, so `dvc repro` on a clone with the cache
pulled replays without network and only requests that are not cached yet reach the API. A request is
written to the cache only after it succeeded, one file per request, atomically: a failed or killed
run leaves every finished request cached, and the next run resumes from there.

Outputs in OUT/: prompts.txt (one prompt per line, a normal `kind: text` source), cache/, report.json.
Pure parts (params -> request bodies, completion text -> prompts) come first; HTTP and files last.
"""
from __future__ import annotations

import concurrent.futures
import email.utils
import functools
import hashlib
import http.client
import io
import json
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from scripts.lib.errors import DataError
from scripts.lib.params import ExampleSource, SynthesizeEntry, load_section, parse
from scripts.lib.io import atomic_path, write_json


# ---------------------------------------------------------------- params


def parse_params(name: str, raw: Any) -> SynthesizeEntry:
    """One entry of params.yaml `synthesize` (a plain mapping) as its model (scripts/lib/params.py); a bad
    key or value is one line naming `synthesize.<name>.<key>`."""
    if not isinstance(raw, dict):
        raise DataError(f"params.yaml: synthesize.{name}: expected a mapping, got {type(raw).__name__}")
    return parse(SynthesizeEntry, raw, at=("synthesize", name))


# ---------------------------------------------------------------- requests (pure)


def request_seed(seed: int, index: int) -> int:
    """Seed of request `index`: depends only on (seed, index), so adding requests keeps the old ones."""
    digest = hashlib.sha256(f"synthesize\x00{seed}\x00{index}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def render_user_message(params: SynthesizeEntry, examples: list[str]) -> str:
    lines = [f"- {example}" for example in [*examples, *params.fixed_examples]]
    return params.template.format(examples="\n".join(lines), avoid_topics=", ".join(params.avoid_topics))


def build_request(params: SynthesizeEntry, pools: list[list[str]], index: int) -> dict:
    """The chat-completions body of request `index` (examples drawn with its own seeded RNG)."""
    seed = request_seed(params.seed, index)
    rng = random.Random(seed)
    examples: list[str] = []
    for source, pool in zip(params.examples, pools):
        examples.extend(rng.sample(pool, source.count))
    messages = [{"role": "user", "content": render_user_message(params, examples)}]
    if params.system is not None:
        messages.insert(0, {"role": "system", "content": params.system})
    # `seed` makes two requests with the same examples distinct (and servers that honour it, repeatable)
    body = {**params.extra_body, "model": params.model, "messages": messages, "seed": seed}
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    return body


def build_requests(params: SynthesizeEntry, pools: list[list[str]]) -> list[dict]:
    for source, pool in zip(params.examples, pools):
        if source.count > len(pool):
            raise DataError(f"{source.path}: {len(pool)} example prompts, fewer than count={source.count}")
    return [build_request(params, pools, index) for index in range(params.requests)]


def cache_key(base_url: str, body: dict) -> str:
    """sha256 of the endpoint and the whole body (model, messages, sampling params)."""
    canonical = json.dumps({"base_url": base_url.rstrip("/"), "body": body},
                           sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- parsing (pure)

_BULLET = re.compile(r"^(?:[-*•–—]\s+|\d{1,4}[.)]\s+|\(\d{1,4}\)\s+)")
_QUOTE_PAIRS = {'"': '"', "“": "”", "„": "“", "'": "'", "‘": "’", "`": "`"}
_ALNUM = re.compile(r"\w")
LINE_COUNTS = ("total", "kept", "dropped_empty", "dropped_header", "dropped_too_long", "dropped_truncated")


def clean_line(line: str) -> str:
    """Strip bullets/numbering ("- ", "* ", "1. ", "1)", "(1)"), wrapping quotes and markdown bold."""
    text = line.replace("**", "").strip()
    while True:
        stripped = _strip_quotes(_BULLET.sub("", text, count=1).strip())
        if stripped == text:
            return text
        text = stripped


def _strip_quotes(text: str) -> str:
    """'"a red kite",' -> 'a red kite'; left alone when the quotes do not pair or recur inside."""
    body = text[:-1] if text.endswith(",") else text
    close = _QUOTE_PAIRS.get(body[:1])
    if close is None or len(body) < 2 or body[-1] != close:
        return text
    inner = body[1:-1]
    if body[0] in inner or close in inner:  # '"a" and "b"' is not one quoted prompt
        return text
    return inner.strip()


def parse_completion(content: str, *, max_chars: int, drop_header_lines: bool,
                     truncated: bool = False) -> tuple[list[str], dict[str, int]]:
    """Completion text -> prompts, one per line, with a count per drop reason.

    `truncated` (finish_reason "length") drops the last non-blank line: the model stopped inside it.
    """
    lines = content.splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    counts = dict.fromkeys(LINE_COUNTS, 0)
    prompts = []
    for i, line in enumerate(lines):
        counts["total"] += 1
        text = clean_line(line)
        if not _ALNUM.search(text):  # "", "---", "```"
            counts["dropped_empty"] += 1
        elif truncated and i == last:
            counts["dropped_truncated"] += 1
        elif drop_header_lines and (text.endswith(":") or text.startswith("#")):
            counts["dropped_header"] += 1
        elif len(text) > max_chars:
            counts["dropped_too_long"] += 1
        else:
            prompts.append(text)
    counts["kept"] = len(prompts)
    return prompts, counts


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


# ---------------------------------------------------------------- example files


def read_example_pool(source: ExampleSource) -> list[str]:
    """Prompts of one example source, in file order (bullets stripped, blank lines skipped)."""
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"{path}: example source not found (run its upstream stage first)")
    files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".parquet")) if path.is_dir() else [path]
    pool: list[str] = []
    for file in files:
        if file.suffix == ".parquet":
            pool.extend(_read_parquet_prompts(file, source.column))
        else:
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{file}: not UTF-8 text (byte {exc.start})") from None
            pool.extend(clean_line(line) for line in text.splitlines() if line.strip())
    pool = [prompt for prompt in pool if prompt]
    if not pool:
        raise DataError(f"{path}: no example prompts")
    return pool


def _read_parquet_prompts(file: Path, column: str | None) -> list[str]:
    from scripts.lib.io import read_parquet

    if column is None:
        raise DataError(f"{file}: a parquet example source needs `column` (e.g. text)")
    frame = read_parquet(file)
    if column not in frame.columns:
        raise DataError(f"{file}: no column '{column}' (columns: {', '.join(map(str, frame.columns))})")
    return [str(value).strip() for value in frame[column].dropna()]


def file_sha256(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\x00")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


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
    """Retry-After in seconds (a number or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would resend the Authorization header to the new address,
    whatever its origin. The 3xx arrives as an HTTPError and fails the request (post_chat)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


class _DeadlineSocket:
    """A connected socket whose every send and receive must end before `deadline` (time.monotonic()):
    each operation gets the time left as its timeout, so a server trickling a byte a second cannot
    stretch one request past `timeout_s` (a plain socket timeout restarts at every byte)."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline
        self._readers, self._closing = 0, False  # as socket.socket: close() waits for makefile()'s readers

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(left)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, nbytes or len(buffer), flags)  # an SSL socket reads 0 bytes for 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        return self._sock.recv(bufsize, flags)

    def sendall(self, data, flags: int = 0) -> None:
        self._arm()
        self._sock.sendall(data, flags)

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs):
        if mode != "rb":
            raise ValueError(f"unsupported mode {mode!r}")
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:  # urllib closes the connection as soon as the headers are read
        self._closing = True
        if not self._readers:
            self._sock.close()

    def _reader_closed(self) -> None:
        self._readers -= 1
        if self._closing and not self._readers:
            self._sock.close()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    """The raw stream http.client reads a response from (as socket.makefile("rb"), with the deadline)."""

    def __init__(self, sock: _DeadlineSocket):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._sock._reader_closed()
        super().close()


def _deadline_connection(base: type, deadline: float):
    class Connection(base):
        def connect(self):
            self.timeout = max(0.001, deadline - time.monotonic())  # the TCP (and TLS, proxy) handshake too
            super().connect()
            self.sock = _DeadlineSocket(self.sock, deadline)

    return Connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._connection = _deadline_connection(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._connection = _deadline_connection(http.client.HTTPSConnection, deadline)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


def post_chat(url: str, body: dict, api_key: str | None, timeout: float) -> dict:
    """One POST to /chat/completions; raises TransientError or FatalError (key never in messages).

    The key goes in the Authorization header of this request only (redirects are refused), and any
    8+ character fragment of it is removed from the reply (a server echoing the header must not put
    it into the cache or prompts.txt) and from error messages."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    # per call: proxy settings are read from the env now, and `timeout` is a deadline for the whole
    # request (connect, send, headers, body), not for each read
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(_NoRedirect(), _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location")
            where = _origin(urllib.parse.urljoin(url, where)) if where else "elsewhere"
            raise FatalError(f"HTTP {exc.code}: the server redirects to {where}; redirects are not followed "
                             "(the API key is sent to base_url only): set base_url to the final address") from None
        detail = redact_key(_error_detail(exc), api_key)
        if exc.code == 429:
            raise TransientError("http_429", f"HTTP 429{detail}", parse_retry_after(exc.headers.get("Retry-After")))
        if exc.code >= 500:
            raise TransientError("http_5xx", f"HTTP {exc.code}{detail}", parse_retry_after(exc.headers.get("Retry-After")))
        raise FatalError(f"HTTP {exc.code}{detail}") from None
    except TimeoutError:
        raise TransientError("timeout", f"no response within {timeout:g}s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TransientError("timeout", f"no response within {timeout:g}s") from None
        raise TransientError("connection", f"connection failed ({exc.reason})") from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise TransientError("connection", f"connection failed ({type(exc).__name__})") from None
    try:
        return redact_key(json.loads(raw), api_key)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise TransientError("invalid_response", "response is not JSON") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own error message, short, on one line.

    OpenAI, vLLM, llama.cpp: {"error": {"message": ...}}; Ollama: {"error": "..."}; FastAPI servers
    (transformers serve): {"detail": "..."}; vLLM also {"message": ...}.
    """
    try:
        payload = json.loads(exc.read() or b"null")
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or payload.get("detail") or payload.get("message")
    except Exception:  # any body shape: the status code alone is still a clear error
        return ""
    return f": {' '.join(str(message).split())[:200]}" if message else ""


def call_with_retries(url: str, body: dict, api_key: str | None, params: SynthesizeEntry) -> tuple[dict, CallStats]:
    """POST until a valid chat completion arrives; RequestFailed on a fatal error or attempts spent."""
    stats = CallStats()
    for attempt in range(1, params.max_attempts + 1):
        stats.attempts += 1
        try:
            response = post_chat(url, body, api_key, params.timeout_s)
            try:
                read_completion(response)
            except ValueError as exc:
                raise TransientError("invalid_response", str(exc)) from None
            return response, stats
        except FatalError as exc:
            raise RequestFailed(str(exc), stats) from None
        except TransientError as exc:
            if attempt == params.max_attempts:
                raise RequestFailed(f"{exc} (after {attempt} attempts)", stats) from None
            stats.retries[exc.kind] += 1
            time.sleep(backoff_delay(attempt, params.backoff_base_s, params.backoff_cap_s, exc.retry_after))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the stage


class ResponseCache:
    """One JSON file per request: {"base_url", "request", "response"}; never the API key."""

    def __init__(self, directory: Path):
        self.directory = directory
        # atomic_path reads the umask with os.umask(0) + restore, which is not thread-safe
        self._write_lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            response = json.loads(path.read_text(encoding="utf-8"))["response"]
            read_completion(response)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise DataError(f"{path}: corrupt cache entry (delete it to request it again)") from None
        return response

    def put(self, key: str, base_url: str, body: dict, response: dict) -> None:
        try:
            with self._write_lock:
                write_json({"base_url": base_url, "request": body, "response": response}, self.path(key))
        except OSError as exc:  # disk full, read-only checkout: one line, not a thread traceback
            raise DataError(f"{self.path(key)}: cannot write cache entry ({exc.strerror or exc})") from None

    def remove_stale_temp_files(self) -> int:
        """Temp files of a killed run (atomic_path names them .<name>.tmp-*); DVC must not track them."""
        stale = list(self.directory.glob(".*.tmp-*"))
        for path in stale:
            path.unlink()
        return len(stale)


def synthesize(name: str, params: SynthesizeEntry, out_dir: Path, api_key: str | None,
               log=lambda message: print(message, file=sys.stderr)) -> dict:
    """Run entry `name`: replay cached requests, call the API for the rest, write OUT/prompts.txt.

    Returns the report (also written to OUT/report.json). A request that fails for good (fatal
    status, or max_attempts spent) stops new requests and fails the stage with a DataError; what
    finished stays cached, so the next run resumes.
    """
    cache = ResponseCache(out_dir / "cache")
    cache.directory.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_temp_files()

    pools = [read_example_pool(source) for source in params.examples] if params.requests else []
    bodies = build_requests(params, pools)
    keys = [cache_key(params.base_url, body) for body in bodies]
    responses: dict[int, dict] = {}
    for index, key in enumerate(keys):
        cached = cache.get(key)
        if cached is not None:
            responses[index] = cached
    missing = [index for index in range(len(bodies)) if index not in responses]
    log(f"synthesize {name}: {len(bodies)} requests, {len(responses)} cached, {len(missing)} to call")
    if missing and params.offline:
        raise DataError(f"synthesize {name}: {len(missing)} of {len(bodies)} requests not in "
                        f"{cache.directory} and offline is true (pull the cache or set offline: false)")

    stats, failures = _call_missing(params, bodies, keys, missing, cache, responses, api_key, log)
    if failures:
        index, message = min(failures)
        raise DataError(f"synthesize {name}: request {index} failed: {_redact(message, api_key)}; "
                        f"{len(responses)} of {len(bodies)} requests cached, re-run to resume")

    prompts, line_counts, usage = _collect_prompts(params, [responses[i] for i in range(len(bodies))])
    report = {
        "name": name,
        "base_url": params.base_url,
        "model": params.model,
        "requests": len(bodies),
        "cache_hits": len(bodies) - len(missing),
        "api_calls": len(missing),
        "attempts": stats.attempts,
        "retries": stats.retries,
        "lines": line_counts,
        "prompts": len(prompts),
        "usage": usage,
        "example_sources": [
            {"path": source.path, "sha256": file_sha256(Path(source.path)), "prompts": len(pool)}
            for source, pool in zip(params.examples, pools)
        ],
    }
    with atomic_path(out_dir / "prompts.txt") as tmp:
        tmp.write_text("".join(f"{prompt}\n" for prompt in prompts), encoding="utf-8")
    write_json(report, out_dir / "report.json")
    log(f"synthesize {name}: {len(prompts)} prompts -> {out_dir / 'prompts.txt'}")
    return report


def _call_missing(params, bodies, keys, missing, cache, responses, api_key, log):
    """Call the API for the missing requests, `concurrency` at a time; cache each success at once.

    After the first request that fails for good, no new request starts (the ones in flight finish
    and are cached): a broken key or an outage costs one request's retries, not thousands.
    """
    url = params.base_url.rstrip("/") + "/chat/completions"
    stats = CallStats()
    failures: list[tuple[int, str]] = []

    stop = threading.Event()  # set by the first request that fails for good

    def one(index: int) -> tuple[int, dict | None, CallStats, str | None] | None:
        if stop.is_set():
            return None
        try:
            response, call_stats = call_with_retries(url, bodies[index], api_key, params)
        except RequestFailed as exc:
            stop.set()
            return index, None, exc.stats, str(exc)
        cache.put(keys[index], params.base_url, bodies[index], response)
        return index, response, call_stats, None

    every = max(1, len(missing) // 10)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=params.concurrency)
    try:
        futures = [pool.submit(one, index) for index in missing]
        done = 0
        from scripts.lib.progress import track

        for future in track(concurrent.futures.as_completed(futures), total=len(futures), desc="synthesize", unit="requests"):
            result = future.result()
            if result is None:  # not started: an earlier request failed
                continue
            index, response, call_stats, error = result
            stats.add(call_stats)
            done += 1
            if error is None:
                responses[index] = response
            else:
                failures.append((index, error))
            if done % every == 0 or done == len(missing):
                log(f"  {done}/{len(missing)} requests done")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: in-flight requests finish and are cached
    return stats, failures


def _collect_prompts(params: SynthesizeEntry, responses: list[dict]):
    prompts: list[str] = []
    counts = dict.fromkeys(LINE_COUNTS, 0)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for response in responses:
        content, truncated = read_completion(response)
        kept, line_counts = parse_completion(content, max_chars=params.max_chars,
                                             drop_header_lines=params.drop_header_lines, truncated=truncated)
        prompts.extend(kept)
        for reason, n in line_counts.items():
            counts[reason] += n
        for kind in usage:
            value = (response.get("usage") or {}).get(kind)
            usage[kind] += value if isinstance(value, int) else 0
    return prompts, counts, usage


@functools.lru_cache(maxsize=4)
def _key_fragments(api_key: str) -> tuple[re.Pattern, int]:
    """A pattern matching, at every position, any 8-character piece of the key (the whole key if shorter)."""
    n = min(8, len(api_key))
    pieces = sorted({api_key[i : i + n] for i in range(len(api_key) - n + 1)})
    return re.compile("(?=(?:" + "|".join(map(re.escape, pieces)) + "))"), n


def redact_key(value: Any, api_key: str | None) -> Any:
    """`value` (a string, or JSON data) with every run of text holding an 8+ character fragment of
    the key replaced by ***; anything without one is returned as is."""
    if not api_key:
        return value
    if isinstance(value, str):
        pattern, n = _key_fragments(api_key)
        spans: list[list[int]] = []
        for match in pattern.finditer(value):
            start = match.start()
            if spans and start <= spans[-1][1]:
                spans[-1][1] = start + n
            else:
                spans.append([start, start + n])
        for start, end in reversed(spans):
            value = value[:start] + "***" + value[end:]
        return value
    if isinstance(value, dict):
        return {redact_key(k, api_key): redact_key(v, api_key) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_key(v, api_key) for v in value]
    return value


def _redact(message: str, api_key: str | None) -> str:
    return redact_key(message, api_key)


def api_key_from_env(params: SynthesizeEntry) -> str | None:
    """The key from the environment; one that cannot be sent as a header value (a control character
    such as a trailing \\r or newline, a space, non-ASCII) is refused without printing it."""
    key = os.environ.get(params.api_key_env) if params.api_key_env else None
    if key and not all(0x21 <= ord(char) <= 0x7E for char in key):
        raise DataError(f"${params.api_key_env}: the API key holds a control character, space or non-ASCII "
                        "character (a trailing newline or \\r from the file it was read from?); fix the variable")
    return key


def cli(
    name: Annotated[str, typer.Argument(help="entry of params.yaml: synthesize")],
    out_dir: Annotated[Path, typer.Argument(help="writes prompts.txt, cache/ and report.json here")],
) -> None:
    """Ask a chat model for prompts like the examples (cached: replays offline)."""
    entries = load_section("synthesize")
    if name not in entries:
        raise DataError(f"params.yaml: synthesize has no entry '{name}' (entries: {', '.join(entries) or 'none'})")
    params = entries[name]
    synthesize(name, params, out_dir, api_key_from_env(params))
