"""HTTP connections whose every socket operation ends by a deadline, and early on a cancel flag.

urllib's `timeout` restarts at every byte, so a server trickling a byte a second can stretch one
request without end; these connections give each send and receive only the time left before the
request's deadline, in slices of POLL_S so that a cancel (Ctrl-C) ends a blocked one at once; the TCP
connect too (`connect_by`), which socket.create_connection would hold for the whole timeout.
Used by scripts/lib/chat_client.py (build an opener with both handlers and its _NoRedirect).
"""

from __future__ import annotations

import errno
import http.client
import io
import os
import selectors
import socket
import threading
import time
import urllib.request

POLL_S = 0.2  # how often a blocked connect, send or receive looks at the cancel flag (Ctrl-C)
ENTRY_WRITE_WAIT_S = 2.0  # a response cache entry is one small file: its write ends long before this
MAX_INTERIM_REPLIES = 20  # 1xx replies skipped before the real one (103 Early Hints: one or two)
ERROR_BODY_WAIT_S = 3.0  # an error reply's body is read for its message only: a trickle is not waited out
MAX_REASON_CHARS = 512  # a status line's reason phrase ("OK", "Too Many Requests"): a few words
MAX_LINE_BYTES = 65_536  # http.client's _MAXLINE: the longest status, header, chunk-size or trailer line it reads
MAX_TRAILER_LINES = 100  # a chunked body's trailer fields, as http.client bounds header lines (none are read)
MAX_TRAILER_BYTES = 64 << 10  # and their bytes together: a trailer is a checksum or two, never kilobytes


class Cancelled(Exception):
    """The run is stopping (Ctrl-C): no new attempt, no wait; the request in flight is dropped."""


class DeadlineSocket:
    """A connected socket whose every send and receive must end before `deadline` (time.monotonic()):
    each operation gets the time left as its timeout, so a server trickling a byte a second cannot
    stretch one request past `timeout_s` (a plain socket timeout restarts at every byte)."""

    def __init__(self, sock, deadline: float, cancel: threading.Event | None = None):
        self._sock, self._deadline, self._cancel = sock, deadline, cancel
        self._readers, self._closing = 0, False  # as socket.socket: close() waits for makefile()'s readers

    def _wait(self, operation):
        """Run a blocking socket operation in slices of POLL_S: the deadline holds, and a cancel
        (Ctrl-C) ends it within a slice instead of when the server answers."""
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request deadline passed")
            if self._cancel is not None and self._cancel.is_set():
                raise Cancelled()
            self._sock.settimeout(min(left, POLL_S) if self._cancel is not None else left)
            try:
                return operation()
            except TimeoutError:
                continue

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        return self._wait(lambda: self._sock.recv_into(buffer, nbytes or len(buffer), flags))  # SSL reads 0 bytes for 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._wait(lambda: self._sock.recv(bufsize, flags))

    def sendall(self, data, flags: int = 0) -> None:
        view, sent = memoryview(data).cast("B"), 0
        while sent < len(view):  # send, not sendall: a slice that times out must not lose what went
            sent += self._wait(lambda: self._sock.send(view[sent:], flags))  # noqa: B023  # called at once, this iteration

    def end_by(self, deadline: float) -> None:
        """Bring the deadline forward (never back) for what is still read."""
        self._deadline = min(self._deadline, deadline)

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs):
        if mode != "rb":
            raise ValueError(f"unsupported mode {mode!r}")
        self._readers += 1
        return io.BufferedReader(DeadlineReader(self))

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


class DeadlineReader(io.RawIOBase):
    """The raw stream http.client reads a response from (as socket.makefile("rb"), with the deadline)."""

    def __init__(self, sock: DeadlineSocket):
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


class TooManyInterimReplies(http.client.HTTPException):
    """More than MAX_INTERIM_REPLIES 1xx replies before the real one: a server that never answers."""


class UnaskedProtocolSwitch(http.client.HTTPException):
    """A `101 Switching Protocols` reply: never asked for (no Upgrade header is sent), so no HTTP reply follows."""


class MalformedReply(http.client.HTTPException):
    """A reply no HTTP/1.1 server sends (RFC 9112): its status line or framing is broken; not retried."""


class TooManyHeaders(MalformedReply):
    """More header lines than http.client reads (100): its own HTTPException said "got more than 100 headers",
    shown as "connection failed (HTTPException)" and retried."""


class MalformedStatusLine(MalformedReply):
    """A status line whose reason phrase holds a control character (a NUL), a byte outside ASCII, or runs past
    MAX_REASON_CHARS: http.client takes any reason, so `HTTP/1.1 200 O\\x00K` was read as a success."""


class MalformedChunking(MalformedReply):
    """A chunked body whose chunk-size line is not hex digits (RFC 9112 7.1), or whose trailer has no end:
    http.client read `-5` as a size (the rest of the connection read whatever its length), `0x10`, `+a` and `1_0`
    as numbers, and discarded a trailer of 200,000 lines until the request's deadline."""


def line_too_long(exc: http.client.LineTooLong) -> MalformedReply:
    """http.client's LineTooLong ("got more than 65536 bytes when reading header line"), in our words: it was
    "connection failed (LineTooLong)", retried; no server sends a line of 64 KiB."""
    what = str(exc).rpartition(" when reading ")[2] or "line"
    return MalformedReply(f"a malformed HTTP reply (a {what} longer than {MAX_LINE_BYTES} bytes)")


def chunk_size(line: bytes) -> int | None:
    """The size a chunk-size line gives (`1a`, `1a;name=value`, leading zeros allowed), None where it is not one
    (RFC 9112 7.1: 1*HEXDIG, then extensions after `;`)."""
    size = line.split(b";", 1)[0].rstrip(b"\r\n").rstrip(b" \t")
    if not size or any(byte not in b"0123456789abcdefABCDEF" for byte in size):
        return None
    return int(size, 16)


def content_length_problem(values: list[str]) -> str | None:
    """What is wrong with a reply's Content-Length headers, or None: each a run of ASCII digits (or a list of
    the same one), all equal. http.client took the first (`5` then `80`: a body cut to 5 bytes, "not JSON"), read
    `-1` as none (the body up to the close, cached as a success) and `1_0`, `+10` or `٥` as numbers."""
    parts = [part.strip() for value in values for part in value.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        return "a Content-Length that is not a number of bytes"
    if len({int(part) for part in parts}) > 1:
        return "two Content-Length headers that differ"
    return None


def transfer_encoding_problem(values: list[str], has_length: bool) -> str | None:
    """What is wrong with a reply's Transfer-Encoding headers, or None: none, or `chunked` alone. http.client
    read `chunked` beside a Content-Length as chunked (RFC 9112 6.3: no server sends both; a request smuggling
    shape) and `gzip` or `chunked, identity` as no framing at all (the raw chunks, "not JSON")."""
    if not values:
        return None
    if has_length:
        return "both Transfer-Encoding and Content-Length"
    if [value.lower() for value in values] != ["chunked"]:  # as http.client reads chunked: one header, no list
        return "a Transfer-Encoding other than chunked"
    return None


def reason_problem(reason: str) -> str | None:
    """What is wrong with a status line's reason phrase (RFC 9112 4: tabs, spaces and visible ASCII), or None."""
    reason = reason.rstrip("\r\n")
    if len(reason) > MAX_REASON_CHARS:
        return f"a reason phrase over {MAX_REASON_CHARS} characters"
    if any(not (" " <= char <= "~" or char == "\t") for char in reason):
        return "a control character or a byte outside ASCII in its reason phrase"
    return None


class InterimSkippingResponse(http.client.HTTPResponse):
    """http.client's response, every 1xx informational reply before the real one skipped (RFC 9110 15.2: a
    client parses and ignores them); http.client skips 100 Continue only, so a `103 Early Hints` failed the
    request as "HTTP 103". At most MAX_INTERIM_REPLIES of them, all within the request's deadline (the socket's)."""

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.deadline_sock = sock if isinstance(sock, DeadlineSocket) else None

    def begin(self):
        try:
            super().begin()
        except http.client.LineTooLong as exc:  # a status or header line (an interim reply's too) of 64 KiB
            raise line_too_long(exc) from None
        except http.client.UnknownProtocol:  # `HTTP/2.0 200`, `HTTP/3 200`: was "connection failed", retried
            raise MalformedStatusLine("a malformed HTTP status line (a version other than HTTP/1.x)") from None
        except http.client.HTTPException as exc:  # http.client's own words for its header limit
            if type(exc) is http.client.HTTPException and str(exc).startswith("got more than"):
                raise TooManyHeaders(f"a malformed HTTP reply (too many headers: {exc})") from None
            raise
        lengths = self.msg.get_all("Content-Length") or []
        if (problem := content_length_problem(lengths)) is not None:
            raise MalformedReply(f"a malformed HTTP reply ({problem})")
        if (
            problem := transfer_encoding_problem(self.msg.get_all("Transfer-Encoding") or [], bool(lengths))
        ) is not None:
            raise MalformedReply(f"a malformed HTTP reply ({problem})")

    def _read_next_chunk_size(self) -> int:
        """http.client's, strict: a size that is not hex digits, or a line over 64 KiB, is MalformedChunking."""
        line = self.fp.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise MalformedChunking(f"a malformed HTTP reply (a chunk size line longer than {MAX_LINE_BYTES} bytes)")
        if (size := chunk_size(line)) is None:
            self._close_conn()  # type: ignore[attr-defined]  # not in typeshed; the framing is lost, as http.client does
            raise MalformedChunking("a malformed HTTP reply (a chunk size that is not hex digits)")
        return size

    def _read_and_discard_trailer(self) -> None:
        """http.client's, bounded: at most MAX_TRAILER_LINES lines of MAX_TRAILER_BYTES in all, else MalformedChunking."""
        left = MAX_TRAILER_BYTES
        for _ in range(MAX_TRAILER_LINES + 1):  # the trailer's lines, then the empty line that ends it
            line = self.fp.readline(MAX_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n", b""):  # b"": a server that closes without one, as http.client allows
                return
            left -= len(line)
            if left < 0 or len(line) > MAX_LINE_BYTES:
                raise MalformedChunking(f"a malformed HTTP reply (a chunked trailer over {MAX_TRAILER_BYTES} bytes)")
        raise MalformedChunking(f"a malformed HTTP reply (more than {MAX_TRAILER_LINES} chunked trailer lines)")

    def _read_status(self):
        for _ in range(MAX_INTERIM_REPLIES + 1):
            version, status, reason = super()._read_status()  # type: ignore[misc]  # not in typeshed
            if (problem := reason_problem(reason)) is not None:
                raise MalformedStatusLine(f"a malformed HTTP status line ({problem})")
            if not 100 <= status <= 599:  # RFC 9110 15: http.client takes any three digits ("HTTP 999", retried)
                raise MalformedStatusLine(f"a malformed HTTP status line (an invalid status code {status})")
            if status == 101:  # what follows is another protocol: taken as the reply, it was an empty success
                raise UnaskedProtocolSwitch("a 101 Switching Protocols reply, never asked for")
            if not 100 <= status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)  # its header lines, ignored (also bounded: 100 lines at most)
        raise TooManyInterimReplies(f"more than {MAX_INTERIM_REPLIES} informational (1xx) replies")


def unasked_encoding(headers) -> str | None:
    """The Content-Encoding of a reply (gzip, br), shown and cut, where it is not identity: http.client asks
    for `Accept-Encoding: identity` and decodes nothing, so a gzip body was "response is not JSON"."""
    from scripts.lib.errors import shown_short

    codings = [part.strip() for value in headers.get_all("Content-Encoding") or [] for part in value.split(",")]
    unasked = [coding for coding in codings if coding and coding.lower() != "identity"]
    return shown_short(", ".join(unasked), 40) if unasked else None


def read_error_start(error, amount: int) -> tuple[bytes, bool]:
    """(the first `amount` bytes of an HTTPError's body, whether it was read to its end or `amount`), read by
    ERROR_BODY_WAIT_S from now (and the request's deadline): the body only gives the message shown beside the
    status, and one trickling a byte at a time held the request until its deadline (60 s for pr-comment-post).
    A body that stalls, or breaks (a chunk size that is no number, a body cut short), gives the part received
    (shown by `received_part`); it was dropped, and the status shown alone. A body in a Content-Encoding never
    asked for (gzip: its compressed bytes were shown, escaped, as the message) is not read: (b"", True)."""
    headers = getattr(error, "headers", None)
    if headers is not None and unasked_encoding(headers) is not None:  # compressed bytes: never read, never shown
        return b"", True
    response = getattr(error, "fp", None)
    sock = getattr(response, "deadline_sock", None)
    if sock is not None:
        sock.end_by(time.monotonic() + ERROR_BODY_WAIT_S)
    read = getattr(response, "read1", None) or error.read  # read1: a piece at a time, kept when the next one fails
    received = bytearray()
    try:
        while len(received) < amount:
            piece = read(amount - len(received))
            if not piece:
                break
            received += piece
    except (TimeoutError, http.client.HTTPException, ValueError, OSError):
        return bytes(received), False
    return bytes(received), True


def received_part(raw: bytes, secret: str | None, limit: int = 200) -> str:
    """` (the body stopped after N bytes: ...)`, the start of an error body that stopped short, on one line, escaped, the secret redacted,
    at most `limit` characters; its last bytes are left out where a secret is set: a secret the stop cut in two
    would not be redacted."""
    from scripts.lib.errors import shown_short
    from scripts.lib.key_redaction import redact_secrets

    shown_raw = raw[: max(0, len(raw) - 6 * len(secret))] if secret else raw  # 6: \\uXXXX, a character's longest form
    text = redact_secrets(" ".join(shown_raw.decode("utf-8", "replace").split()), secret)
    return f" (the body stopped after {len(raw)} bytes{': ' + shown_short(text, limit) if text else ''})"


def connect_by(address: tuple[str, int], deadline: float, cancel: threading.Event | None, source_address=None):
    """socket.create_connection, but the TCP handshake waits in slices of POLL_S: a connect that hangs
    (SYNs dropped: a firewall, a full accept queue) ends at the deadline, and at once on a cancel (Ctrl-C),
    instead of holding its thread, and the exit that joins it, until the timeout."""
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in resolve_by(host, port, deadline, cancel):
        sock = socket.socket(family, kind, proto)
        try:
            if source_address:
                sock.bind(source_address)
            _handshake(sock, sockaddr, deadline, cancel)
            sock.settimeout(max(0.001, deadline - time.monotonic()))  # TLS and a proxy's CONNECT, as before
            return sock
        except OSError as exc:  # the next address (IPv4 after IPv6), as create_connection tries them
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"{host}: no address to connect to")


def resolve_by(host: str, port: int, deadline: float, cancel: threading.Event | None = None) -> list:
    """socket.getaddrinfo(host, port) for a stream socket, ended by the deadline, and at once on a cancel: the
    lookup runs in a thread of its own while this one waits in slices of POLL_S. The C resolver holds its
    thread until its own timeouts end (about 5 s a nameserver and try; no signal handler runs meanwhile), so
    a name that resolves slowly held a request past `timeout_s` and a Ctrl-C in the main thread (publish's)
    until it was done. A lookup left behind ends on its own, in a daemon thread."""
    done = threading.Event()
    answer: list = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:  # OSError (gaierror), UnicodeError (a name idna refuses): the caller's
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    while not done.wait(max(0.0, min(deadline - time.monotonic(), POLL_S))):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}: no address within the request's deadline")
        if cancel is not None and cancel.is_set():
            raise Cancelled()
    if isinstance(answer[0], BaseException):
        raise answer[0]
    return answer[0]


def _handshake(sock: socket.socket, sockaddr, deadline: float, cancel: threading.Event | None) -> None:
    sock.setblocking(False)
    code = sock.connect_ex(sockaddr)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request deadline passed while connecting")
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if selector.select(min(left, POLL_S) if cancel is not None else left):
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


def _deadline_connection(base: type, deadline: float, cancel: threading.Event | None):
    class Connection(base):
        response_class = InterimSkippingResponse

        def connect(self):
            self.timeout = max(0.001, deadline - time.monotonic())  # the TLS and proxy handshakes too
            self._create_connection = lambda address, timeout, source: connect_by(address, deadline, cancel, source)
            super().connect()
            self.sock = DeadlineSocket(self.sock, deadline, cancel)  # type: ignore[has-type]  # base is a variable

    return Connection


class DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float, cancel: threading.Event | None = None):
        super().__init__()
        self._connection = _deadline_connection(http.client.HTTPConnection, deadline, cancel)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float, cancel: threading.Event | None = None):
        super().__init__()
        self._connection = _deadline_connection(http.client.HTTPSConnection, deadline, cancel)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)  # type: ignore[attr-defined]  # set by HTTPSHandler.__init__, not in typeshed


def read_promised(response, amount: int) -> bytes:
    """response.read(amount), but http.client.IncompleteRead where the server closed before the end its
    Content-Length promised: read(n) returns such a cut body as if whole (a `{}` of a promised 100 bytes was
    taken as GitHub's answer, and a completion cut short after its last brace was cached)."""
    data = response.read(amount)
    if len(data) < amount and (getattr(response, "length", None) or 0) > 0:
        raise http.client.IncompleteRead(data, response.length)
    return data


def stop_calls(cancel: threading.Event, pool, cache) -> None:
    """A run of requests stops (a signal, an error): no new request, those in flight dropped (`cancel`, the
    `pool`'s queue), and no entry written to `cache` (chat_client.ResponseCache) after this. An entry a worker
    is writing is let finish first: a Ctrl-C while one was renamed in exited at once (os._exit) and left its
    `.KEY.json.tmp-*` in cache/."""
    cancel.set()
    pool.shutdown(wait=False, cancel_futures=True)
    held = cache.write_lock.acquire(timeout=ENTRY_WRITE_WAIT_S)
    cache.closed = True
    if held:
        cache.write_lock.release()
