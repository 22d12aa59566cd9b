"""The HTTP client `publish` gives huggingface_hub, and how its failures are told in one line.

Every request has an overall deadline: its per-socket-operation timeouts (httpx's) restart at every
byte, so a Hub trickling a byte a second would hold publish forever; the deadline is carried to the
socket by a network backend that gives each connect, send and receive only the time left. Replies are
asked for and taken only uncompressed (a 2 MB gzip reply can inflate to gigabytes, past any cap on
the bytes received) and capped at MAX_HUB_REPLY_BYTES. Error lines carry no secret: not HF_TOKEN, nor
HF_ENDPOINT's user:password@, in any letter case; nor does what is uploaded (refuse_token_in).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from scripts.lib.errors import DataError, redact_url_userinfo, shown

MAX_HUB_REPLY_BYTES = 16 << 20  # the Hub's JSON answers are small; an endless reply must not fill memory
MIN_UPLOAD_BYTES_PER_S = 256 << 10  # a request body's share of its deadline: a big commit is not cut short
_request = threading.local()  # .deadline: time.monotonic() by which the request in this thread must end


def hub_token(token: str | None) -> str:
    """HF_TOKEN as it may be sent: set, one line of printable characters (a token pasted with its
    newline would be cut where the header ends, and the part after it shown unredacted)."""
    if not token:
        raise DataError("HF_TOKEN is not set (a write token: https://huggingface.co/settings/tokens)")
    if not token.isprintable() or any(char.isspace() for char in token):
        raise DataError("HF_TOKEN holds a space, line break or other unprintable character: set the token alone")
    return token


def refuse_token_in(folder: Path, token: str) -> None:
    """DataError naming the file before an upload that would publish the token: a caption, a card or a
    licence quoting HF_TOKEN (key_redaction.holds_whole_key: in any letter case, reversed, escaped or
    encoded). The text files and the shards' text columns are searched; images' bytes are not."""
    from scripts.lib.key_redaction import holds_whole_key

    for path in sorted(folder.rglob("*")):
        if path.suffix == ".parquet":
            texts: Iterable[str] = _shard_texts(path)
        elif path.suffix in (".md", ".txt", ".json", ".yaml") and path.is_file():
            texts = [path.read_text(encoding="utf-8", errors="replace")]
        else:
            continue
        if any(holds_whole_key(text, token) for text in texts):
            raise DataError(
                f"{shown(path)}: holds HF_TOKEN (in some letter case or encoding); not uploaded: the dataset "
                "would publish it. Remove it from the release's data or card"
            )


def _shard_texts(path: Path) -> Iterator[str]:
    """A shard's text columns, a batch of rows at a time, the values of a column joined by lines."""
    import pyarrow.parquet as pq

    from scripts.lib.tables import is_text_type

    shard = pq.ParquetFile(path)
    columns = [f.name for f in shard.schema_arrow if is_text_type(f.type)]
    for batch in shard.iter_batches(batch_size=4096, columns=columns):
        for column in batch.columns:
            yield "\n".join(value for value in column.to_pylist() if value)


def endpoint_secrets(endpoint: str | None) -> list[str]:
    """The user name and password of HF_ENDPOINT's user:password@ (as written and decoded): text to redact."""
    if not endpoint:
        return []
    try:
        parts = urllib.parse.urlsplit(endpoint)
    except ValueError:  # huggingface_hub refuses it itself; its message is redacted as a URL
        return []
    raw = parts.netloc.rpartition("@")[0]
    pieces = {raw, *raw.split(":", 1)}
    pieces |= {urllib.parse.unquote(p) for p in pieces}
    return sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True)  # shorter: a name, not a secret


def request_deadline(request) -> float:
    """When a request must have ended: timeout_s (or the shorter timeout its caller gave it) for the
    answer, plus time to send its body."""
    length = request.headers.get("Content-Length", "")
    body = int(length) if length.isdigit() else 0
    given = [t for t in request.extensions.get("timeout", {}).values() if isinstance(t, (int, float)) and t > 0]
    return time.monotonic() + min([_request.timeout_s, *given]) + body / MIN_UPLOAD_BYTES_PER_S


def _time_left(timeout: float | None) -> float:
    """A socket operation's timeout, cut to what is left before the request's deadline."""
    deadline = getattr(_request, "deadline", None)
    if deadline is None:
        return timeout  # type: ignore[return-value]  # no request of ours (none in this thread)
    left = deadline - time.monotonic()
    if left <= 0:
        import httpcore2

        raise httpcore2.ReadTimeout("request deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream:
    """httpcore's network stream whose every read and write ends by the request's deadline."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout))

    def start_tls(self, ssl_context, server_hostname=None, timeout: float | None = None):
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _time_left(timeout)))

    def close(self) -> None:
        self._stream.close()

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class DeadlineBackend:
    """httpcore's network backend, its connects and streams held to the request's deadline."""

    def __init__(self, backend):
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return DeadlineStream(self._backend.connect_tcp(host, port, _time_left(timeout), local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return DeadlineStream(self._backend.connect_unix_socket(path, _time_left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def hold_to_deadlines(client) -> None:
    """Put DeadlineBackend under every transport of `client` (its own and the proxies' from the
    environment); httpx offers no public way, so a transport without a pool is refused, not left unbounded."""
    for transport in [client._transport, *client._mounts.values()]:
        if transport is None:  # a mount that turns proxying off for some hosts: they use client._transport
            continue
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):
            raise RuntimeError(
                f"httpx transport {type(transport).__name__} has no connection pool to hold to a deadline"
            )
        pool._network_backend = DeadlineBackend(pool._network_backend)


def hub_client_factory(timeout_s: float):
    """huggingface_hub's HTTP client: every request ends within its deadline (timeout_s, plus time to
    send its body), replies come uncompressed and are capped at MAX_HUB_REPLY_BYTES."""
    import httpx2
    from huggingface_hub.utils._http import hf_request_event_hook

    class CappedStream(httpx2.SyncByteStream):  # httpx closes only a SyncByteStream ("sync close on an async stream")
        """A reply body that fails past MAX_HUB_REPLY_BYTES (a reply without Content-Length), read under
        its request's deadline (read after the next request began, it would have that one's)."""

        def __init__(self, stream, request, deadline: float):
            self._stream, self._request, self._deadline = stream, request, deadline

        def __iter__(self):
            total, chunks = 0, iter(self._stream)
            while True:
                _request.deadline = self._deadline
                chunk = next(chunks, None)
                if chunk is None:
                    return
                total += len(chunk)
                if total > MAX_HUB_REPLY_BYTES:
                    raise httpx2.DecodingError(f"reply over {MAX_HUB_REPLY_BYTES} bytes", request=self._request)
                yield chunk

        def close(self) -> None:
            self._stream.close()

    def start(request) -> None:
        _request.timeout_s = timeout_s
        request.extensions["t2i_deadline"] = _request.deadline = request_deadline(request)
        hf_request_event_hook(request)

    def cap(response) -> None:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # asked for identity: a compressed body's size says nothing
            raise httpx2.DecodingError(f"a {encoding[:40]}-encoded reply, not asked for", request=response.request)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_HUB_REPLY_BYTES:
            raise httpx2.DecodingError(f"reply of {length} bytes, over {MAX_HUB_REPLY_BYTES}", request=response.request)
        response.stream = CappedStream(response.stream, response.request, response.request.extensions["t2i_deadline"])

    def client():
        made = httpx2.Client(
            event_hooks={"request": [start], "response": [cap]},
            headers={"Accept-Encoding": "identity"},
            follow_redirects=True,
            timeout=httpx2.Timeout(timeout_s),
        )
        hold_to_deadlines(made)
        return made

    return client


def hub_error(exc: Exception, secrets: list[str], timeout_s: float) -> str:
    """Any error of the Hub client as one line, without the secrets (in any case) nor any URL's userinfo."""
    import httpx2

    from scripts.lib.key_redaction import redact_secrets

    if isinstance(exc, httpx2.TimeoutException):
        detail = f"no whole answer within {timeout_s:g}s (HF_HUB_DOWNLOAD_TIMEOUT)"
    elif isinstance(exc, ValueError) and not isinstance(exc, httpx2.HTTPError):
        detail = "the reply is not the Hub's JSON (is HF_ENDPOINT a Hub?)"
    else:
        detail = (str(exc).splitlines() or [""])[0] or type(exc).__name__
    line = redact_url_userinfo(f"Hub: {detail}")
    for secret in secrets:
        line = redact_secrets(line, secret)
    return line
