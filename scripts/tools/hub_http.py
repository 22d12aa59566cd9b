"""The HTTP client `publish` gives huggingface_hub, and how its failures are told in one line.

Every request has an overall deadline: its per-socket-operation timeouts (httpx's) restart at every
byte, so a Hub trickling a byte a second would hold publish forever; the deadline is carried to the
socket by a network backend that gives each connect, send and receive only the time left. Replies are
asked for and taken only uncompressed (a 2 MB gzip reply can inflate to gigabytes, past any cap on
the bytes received) and capped at MAX_HUB_REPLY_BYTES. A wait the Hub asks for before a retry is taken up
to MAX_HUB_WAIT_S only (huggingface_hub sleeps whatever Retry-After says). Error lines carry no secret: not
HF_TOKEN, nor HF_ENDPOINT's user:password@, in any letter case; nor does what is uploaded (refuse_token_in).
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from scripts.lib.errors import DataError, redact_url_userinfo, shown, shown_short

MAX_HUB_REPLY_BYTES = 16 << 20  # the Hub's JSON answers are small; an endless reply must not fill memory
# huggingface_hub's retries sleep as long as a 429 or 5xx's Retry-After (or a 429's RateLimit reset) says, silently
# (its warnings are off: they quote URLs): `Retry-After: 99999` held publish for a day. A longer wait fails at once.
MAX_HUB_WAIT_S = 60
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)  # huggingface_hub's http_backoff retries these
MAX_HUB_LINE_CHARS = 500  # what is printed of a Hub error's text (the server's message or bytes, quoted)
MIN_UPLOAD_BYTES_PER_S = 256 << 10  # a request body's share of its deadline: a big commit is not cut short
_request = threading.local()  # .deadline: time.monotonic() by which the request in this thread must end


class HubAsksToWait(Exception):
    """The Hub asked for a wait over MAX_HUB_WAIT_S before a retry: not retried (hub_error prints the message)."""


def asked_wait(status: int, headers) -> int | None:
    """Seconds the Hub asks huggingface_hub to sleep before retrying this reply, read as http_backoff reads them
    (a 429's RateLimit reset when none is left, else a Retry-After of digits); None when it asks for none."""
    from huggingface_hub.utils import parse_ratelimit_headers

    if status not in RETRIED_STATUSES:
        return None
    limit = parse_ratelimit_headers(headers) if status == 429 else None
    if limit is not None and limit.remaining == 0:
        return limit.reset_in_seconds
    value = (headers.get("Retry-After") or "").strip()
    if not re.fullmatch("[0-9]+", value):
        return None
    return int(value) if len(value) <= 18 else 10**18  # thousands of digits: int() refuses them, any cap is less


def hub_token(token: str | None) -> str:
    """HF_TOKEN as it may be sent: set, one line of printable characters (a token pasted with its
    newline would be cut where the header ends, and the part after it shown unredacted)."""
    if not token:
        raise DataError("HF_TOKEN is not set (a write token: https://huggingface.co/settings/tokens)")
    if not token.isprintable() or any(char.isspace() for char in token):
        raise DataError("HF_TOKEN holds a space, line break or other unprintable character: set the token alone")
    return token


def check_proxy_variables() -> None:
    """DataError naming the first proxy variable the Hub client cannot read as a URL with a numeric port: httpx
    quotes the bad part (`Invalid port: '...'`, a secret pasted where the port goes) in its error, unredacted.
    Checked before any request, the value never shown; urllib's clients (synthesize, pr-comment-post) name only
    the error's type."""
    from scripts.lib.key_redaction import PROXY_VARIABLES

    for name, value in sorted(os.environ.items()):
        if name.lower() not in PROXY_VARIABLES or not value:
            continue
        try:
            _port = urllib.parse.urlsplit(value if "://" in value else f"http://{value}").port
        except ValueError:
            raise DataError(
                f"{name}: not a proxy URL the Hub client can use (its port is not a number, or a [host] is not "
                "closed); fix or unset it"
            ) from None


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


def _addresses(host: str, port: int) -> list[str]:
    """`host`'s addresses, looked up by the request's deadline (deadline_http.resolve_by): httpcore's connect
    resolves in socket.create_connection, where a name that resolves slowly held publish, Ctrl-C included,
    until the C resolver gave up (its timeout is not the socket's). TLS still names `host` (httpcore's SNI)."""
    deadline = getattr(_request, "deadline", None)
    if deadline is None:
        return [host]
    import httpcore2

    from scripts.lib.deadline_http import resolve_by

    try:
        found = resolve_by(host, port, deadline)
    except TimeoutError:
        raise httpcore2.ConnectTimeout("request deadline passed while resolving the host name") from None
    except OSError as exc:
        raise httpcore2.ConnectError(str(exc)) from None
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


class DeadlineBackend:
    """httpcore's network backend, its connects and streams held to the request's deadline."""

    def __init__(self, backend):
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        import httpcore2

        error: Exception = httpcore2.ConnectError(f"{host}: no address to connect to")
        for address in _addresses(host, port):  # each in turn, as socket.create_connection tries them
            try:
                stream = self._backend.connect_tcp(address, port, _time_left(timeout), local_address, socket_options)
            except httpcore2.ConnectError as exc:  # the next address; the last one's error when none is left
                error = exc
                continue
            return DeadlineStream(stream)
        raise error

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
        wait = asked_wait(response.status_code, response.headers)
        if wait is not None and wait > MAX_HUB_WAIT_S:
            raise HubAsksToWait(
                f"HTTP {response.status_code}: the Hub asks to wait {min(wait, 10**9)} s before retrying, over the "
                f"{MAX_HUB_WAIT_S} s publish waits; publish again later"
            )
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
    """Any error of the Hub client as one line, without the secrets (in any case) nor any URL's userinfo, its
    escape codes and other control characters shown escaped and cut at MAX_HUB_LINE_CHARS: h11's protocol
    errors and huggingface_hub's HTTP errors quote what the server sent (megabytes of it, escape codes). A
    TypeError, LookupError or ValueError of our own code is re-raised: a bug, shown as one."""
    import httpx2

    from scripts.lib.key_redaction import redact_secrets

    if isinstance(exc, (TypeError, LookupError, ValueError)) and not is_reply_shape_error(exc):
        raise exc  # a bug of ours: shown as one (its traceback), never as the Hub's bad JSON
    if isinstance(exc, httpx2.TimeoutException):
        detail = f"no whole answer within {timeout_s:g}s (HF_HUB_DOWNLOAD_TIMEOUT)"
    elif isinstance(exc, httpx2.TooManyRedirects):  # httpx's line named neither the loop nor where it began
        detail = redirect_loop_detail()
    elif is_reply_shape_error(exc) and not isinstance(exc, httpx2.HTTPError):
        detail = "the reply is not the Hub's JSON (is HF_ENDPOINT a Hub?)"
    else:
        detail = " ".join(_first_lines(str(exc))) or type(exc).__name__
    line = redact_url_userinfo(hide_endpoint_path(f"Hub: {detail}", os.environ.get("HF_ENDPOINT"), secrets))
    for secret in [*secrets, *endpoint_path_secrets(os.environ.get("HF_ENDPOINT"))]:
        line = redact_secrets(line, secret)
    return shown_short(line, MAX_HUB_LINE_CHARS)  # after the redaction: a cut never leaves part of a secret


def traceback_files(exc: BaseException) -> list[Path]:
    """The file of each frame of `exc`'s traceback, outermost first."""
    files = []
    tb = exc.__traceback__
    while tb is not None:
        files.append(Path(tb.tb_frame.f_code.co_filename))
        tb = tb.tb_next
    return files


def raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether the innermost frame of `exc`'s traceback is in one of `packages` (a folder name on its path)."""
    files = traceback_files(exc)
    return bool(files) and any(p in files[-1].parts for p in packages)


def is_reply_shape_error(exc: BaseException) -> bool:
    """A reply the Hub client could not read as the Hub's JSON: a ValueError not raised in our code (JSON that
    does not parse), a RecursionError in the JSON decoder (`[[[...` 10^5 deep), or a LookupError or TypeError
    raised inside huggingface_hub itself (its `d["url"]` on a reply without it, or a list). A TypeError, KeyError
    or ValueError raised in our code (a hook, a wrong argument) is a bug of ours: told as "not the Hub's JSON" it
    was hidden."""
    if isinstance(exc, RecursionError):
        return raised_in(exc, ("json",))
    if isinstance(exc, (LookupError, TypeError)):
        return raised_in(exc, ("huggingface_hub",))
    if isinstance(exc, UnicodeError):  # a host name's or the reply's text: the data's, wherever it was raised
        return True
    return isinstance(exc, ValueError) and not raised_in_ours(exc)


REPLY_READERS = ("huggingface_hub", "httpx2", "httpcore2", "h11", "json")  # what reads the Hub's reply


def raised_in_ours(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc`'s traceback in our package or in a reader of the reply
    (REPLY_READERS) is ours: our hook's `int(...)` raises in a builtin, its call of urllib in the standard
    library, both below our frame (json's JSONDecodeError on a reply is the reply's)."""
    ours = Path(__file__).resolve().parents[1]
    for path in reversed(traceback_files(exc)):
        if any(p in path.parts for p in REPLY_READERS):
            return False
        if path.resolve().is_relative_to(ours):
            return True
    return False


def redirect_loop_detail() -> str:
    """A redirect loop's line: where it began (HF_ENDPOINT, its user:password@ redacted by hub_error)."""
    import httpx2
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return (
        f"a redirect loop at HF_ENDPOINT {endpoint} (more than {httpx2._config.DEFAULT_MAX_REDIRECTS} "
        "redirects); is HF_ENDPOINT a Hub?"
    )


def _first_lines(text: str, count: int = 4) -> list[str]:
    """The first `count` non-empty lines of an error's text: huggingface_hub's 400 starts with an empty line and
    "Bad request:", the server's message after them (the line showed "Bad request:" or the error's type alone)."""
    lines = (line.strip() for line in text[: 64 << 10].splitlines())  # 64 kB: a megabyte message is cut anyway
    return [line for line in lines if line][:count]


def endpoint_path_secrets(endpoint: str | None) -> list[str]:
    """The parts of HF_ENDPOINT's path shaped like a key or token (params' has_secret_shape, or a random run of 16
    characters or more), as written and decoded: the client puts every request's path after the endpoint's, and
    its errors quote the whole URL (`/mirror/sk-proj-...` was printed). A mirror's own prefix (`/hub`) is kept."""
    from scripts.lib.params.yaml_text import has_secret_shape, looks_random

    try:
        path = urllib.parse.urlsplit(endpoint or "").path
    except ValueError:
        return []
    parts = {p for part in path.split("/") for p in (part, urllib.parse.unquote(part))}
    return sorted(p for p in parts if has_secret_shape(p) or (len(p) >= 16 and looks_random(p)))


def hide_endpoint_path(line: str, endpoint: str | None, secrets: list[str]) -> str:
    """`line` with HF_ENDPOINT's path shown as `/***` where that path holds a secret (HF_TOKEN, a key-shaped
    part): redacting the secret alone took the blob around it, the port and the request's path with it."""
    from scripts.lib.key_redaction import holds_key

    try:
        path = urllib.parse.urlsplit(endpoint or "").path.rstrip("/")
    except ValueError:
        return line
    if not path or not (endpoint_path_secrets(endpoint) or any(holds_key(path, s) for s in secrets if s)):
        return line
    decoded = urllib.parse.unquote(path)
    for form in sorted({path, decoded, urllib.parse.quote(decoded, safe="/")}, key=len, reverse=True):
        line = line.replace(form, "/***")
    return line


def _is_true(value: str | None) -> bool:
    return (value or "").upper() in ("1", "ON", "YES", "TRUE")  # huggingface_hub's constants._is_true


def check_online(dry_run: bool) -> None:
    """An upload refused at once, before the folder is written, when huggingface_hub is told to stay offline
    (HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE as it reads them): every request would fail after the work."""
    name = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    if not dry_run and _is_true(os.environ.get(name)):
        raise DataError(f"{name} is set: publish uploads to the Hub; unset it, or use --dry-run")


# A Hub repository id as the Hub takes it (huggingface_hub's validate_repo_id: each part starts and ends with a
# letter, digit or '_', no '--' nor '..'): it is pasted into the card's Python snippet, where `me/x", revision=...)`
# or an escape code changed what a reader copies and runs; `-me/x` or `me/x.` wrote the folder, then every request
# was refused.
REPO_ID_PART = r"(?=[\w.-]{1,96}(?:/|$))\w(?:[\w.-]*\w)?"
REPO_ID = re.compile(rf"{REPO_ID_PART}/{REPO_ID_PART}", re.ASCII)


def check_publish_names(repo_id: str, tag: str, tag_option: str, out: Path | None) -> None:
    """publish's names, checked before any git command, file or request: --repo-id as the Hub takes it, the tag
    as git does (tag.check_tag_name: `--tag -x` was an option to git, `a..b` a tag that could never be), --out
    without a control character (a folder `dist/hub\\n` was made, then named in a line it broke)."""
    from scripts.tools.tag import check_tag_name

    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise DataError(
            f"--repo-id: expected ORG/NAME (ASCII letters, digits, '-', '_', '.'), got {shown(repr(repo_id))}"
        )
    check_tag_name(tag, tag_option)
    if out is not None and not os.fsdecode(out).isprintable():
        raise DataError(f"--out {shown(repr(os.fsdecode(out)))}: a control or format character in the path")
