"""Round 42e: the chat client's HTTP reader against a hostile server's lines and encodings (class: a reply whose
lines, framing or error body no HTTP/1.1 server sends is one line naming the server, in bounded memory and time,
never the key, not retried); rows without "guard" in their id failed before the fix.

A  an error reply (429, 5xx, 4xx) with a Content-Encoding never asked for: its compressed bytes were shown, escaped,
   as the server's message; now never read (a gzip bomb cannot expand) and named: `HTTP 500 (its body encoded as
   gzip, never asked for; not shown)`, retried or not by its status as before
B  a status, header (an interim reply's too) or chunk-size line over 65,536 bytes was "connection failed
   (LineTooLong)", retried; now `... sent a malformed HTTP reply (a header line longer than 65536 bytes)`
C  a chunked trailer was discarded line by line until the deadline (200,000 lines read); now at most 100 lines of
   64 KiB in all
D  a chunk size http.client's int(line, 16) took (`0x4f`, `+4f`, `4_f`) or read as a negative size (`-5`: the rest
   of the connection read to its end); now `a chunk size that is not hex digits`; `HTTP/2.0` or `HTTP/0.9` status
   lines were "connection failed (UnknownProtocol)", retried
"""

from __future__ import annotations

import gzip

import pytest
from test_chat_hostile import KEY, one_error_line
from test_round41e import JSON, OK_BODY, _no_output, _ok, _synthesize

LONG = 65_537  # one byte past http.client's _MAXLINE


def _error(status: bytes, body: bytes, head: bytes = b"", promised: int | None = None) -> bytes:
    size = len(body) if promised is None else promised
    return b"HTTP/1.1 " + status + b"\r\n" + JSON + head + b"Content-Length: %d\r\n\r\n" % size + body


def _chunked_reply(size_line: bytes, body: bytes = OK_BODY, trailer: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\n" + JSON + b"Transfer-Encoding: chunked\r\n\r\n"
    return head + size_line + b"\r\n" + body + b"\r\n0\r\n" + trailer + b"\r\n"


def _run(tmp_path, monkeypatch, capfd, answer: bytes):
    """synthesize against a server answering `answer` to every request, the API key KEY set (it must not echo)."""
    monkeypatch.setenv("T2I_HOSTILE_KEY", KEY)
    return _synthesize(tmp_path, monkeypatch, capfd, lambda n: answer, api_key_env="T2I_HOSTILE_KEY")


def _fails_once(tmp_path, monkeypatch, capfd, answer: bytes, expected: str) -> str:
    """The run fails in one line holding `expected` and the server's address, after one request (not retried)."""
    result, url, calls = _run(tmp_path, monkeypatch, capfd, answer)
    line = one_error_line(result)
    assert expected in line and url in line and calls == 1, line
    assert "LineTooLong" not in line and "connection failed" not in line and _no_output(tmp_path), line
    return line


# ---------------------------------------------------------------- A: an encoded error body

BOMB = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
KEYED = gzip.compress(b'{"error": {"message": "bad key ' + KEY.encode() + b'"}}')
ENCODED_ERRORS = {  # (reply, status, retried): garbage in the line before, the status alone and named now
    "500-gzip-cut-short": (_error(b"500 X", KEYED, b"Content-Encoding: gzip\r\n", len(KEYED) + 50), 500, True),
    "429-gzip-bomb-cut-short": (_error(b"429 X", BOMB[:30000], b"Content-Encoding: gzip\r\n", len(BOMB)), 429, True),
    "400-br": (_error(b"400 X", b"\x1b\x8f\x01\xff" * 10, b"Content-Encoding: br\r\n", 80), 400, False),
    "503-x-gzip-chunked": (
        b"HTTP/1.1 503 X\r\nContent-Encoding: x-gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n\x1f\x8b\x08\x00\x00",
        503,
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(ENCODED_ERRORS))
def test_an_encoded_error_body_is_named_not_shown(tmp_path, monkeypatch, capfd, case):
    answer, status, retried = ENCODED_ERRORS[case]
    result, _, calls = _run(tmp_path, monkeypatch, capfd, answer)
    line = one_error_line(result)
    assert f"HTTP {status} (its body encoded as" in line and "never asked for; not shown" in line, line
    assert "stopped after" not in line and "\\x" not in line and KEY not in line, line
    assert calls == (3 if retried else 1) and _no_output(tmp_path)


def test_guard_an_encoding_echoing_the_key_is_redacted(tmp_path, monkeypatch, capfd):
    answer = _error(b"500 X", b"{}", b"Content-Encoding: " + KEY.encode() + b"\r\n")
    result, _, _ = _run(tmp_path, monkeypatch, capfd, answer)
    line = one_error_line(result)
    assert KEY not in line and KEY.lower() not in line.lower() and KEY[4:16] not in line, line


def test_guard_an_identity_error_body_is_still_its_message(tmp_path, monkeypatch, capfd):
    answer = _error(b"400 X", b'{"error": {"message": "bad model"}}', b"Content-Encoding: identity\r\n")
    result, _, calls = _run(tmp_path, monkeypatch, capfd, answer)
    assert "HTTP 400: bad model" in one_error_line(result) and calls == 1


# ---------------------------------------------------------------- B: a line over 64 KiB

LONG_LINES = {  # (reply, the line named)
    "header-line": (_ok(b"X-A: " + b"a" * LONG + b"\r\n"), "a header line longer than 65536 bytes"),
    "header-line-echoing-the-key": (_ok(b"X-Key: " + KEY.encode() * 3000 + b"\r\n"), "a header line longer than"),
    "status-line-reason": (b"HTTP/1.1 200 " + b"O" * LONG + b"\r\n\r\n", "a status line longer than 65536 bytes"),
    "interim-reply-header": (b"HTTP/1.1 103 Early\r\nLink: " + b"l" * LONG + b"\r\n\r\n" + _ok(), "a header line"),
    "error-reply-header": (_error(b"500 X", b"{}", b"X-A: " + b"a" * LONG + b"\r\n"), "a header line longer than"),
    "chunk-extension": (_chunked_reply(b"%x;e=" % len(OK_BODY) + b"e" * LONG), "a chunk size line longer than"),
}


@pytest.mark.parametrize("case", sorted(LONG_LINES))
def test_a_line_over_64_kib_is_named_not_retried(tmp_path, monkeypatch, capfd, case):
    answer, expected = LONG_LINES[case]
    line = _fails_once(tmp_path, monkeypatch, capfd, answer, expected)
    assert KEY not in line and KEY.lower() not in line.lower()


# ---------------------------------------------------------------- C: a chunked trailer with no end

TRAILERS = {
    "200000-lines": b"X-T: v\r\n" * 200_000,
    "101-lines": b"X-T: v\r\n" * 101,
    "two-lines-of-40-kB": (b"X-T: " + b"v" * 40_000 + b"\r\n") * 2,
}


@pytest.mark.parametrize("case", sorted(TRAILERS))
def test_a_chunked_trailer_is_bounded(tmp_path, monkeypatch, capfd, case):
    _fails_once(tmp_path, monkeypatch, capfd, _chunked_reply(b"%x" % len(OK_BODY), trailer=TRAILERS[case]), "trailer")


# ---------------------------------------------------------------- D: chunk sizes and versions http.client took

BAD_SIZES = {"negative": b"-5", "0x-prefix": b"0x%x", "plus-sign": b"+%x", "underscore": b"%x_0", "empty": b""}


@pytest.mark.parametrize("case", sorted(BAD_SIZES))
def test_a_chunk_size_that_is_not_hex_digits_is_named(tmp_path, monkeypatch, capfd, case):
    size = BAD_SIZES[case] % len(OK_BODY) if b"%" in BAD_SIZES[case] else BAD_SIZES[case]
    _fails_once(tmp_path, monkeypatch, capfd, _chunked_reply(size), "a chunk size that is not hex digits")


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3", b"HTTP/11.1"])
def test_a_status_line_of_another_http_version_is_named(tmp_path, monkeypatch, capfd, version):
    answer = _ok().replace(b"HTTP/1.1", version, 1)
    _fails_once(tmp_path, monkeypatch, capfd, answer, "a version other than HTTP/1.x")


GOOD_CHUNKINGS = {  # RFC 9112 7.1 chunking and trailers still read
    "guard-leading-zeros": _chunked_reply(b"000%x" % len(OK_BODY)),
    "guard-upper-case-hex": _chunked_reply(b"%X" % len(OK_BODY)),
    "guard-extension": _chunked_reply(b"%x;name=value ; other" % len(OK_BODY)),
    "guard-a-few-trailer-lines": _chunked_reply(b"%x" % len(OK_BODY), trailer=b"X-Checksum: abc\r\nX-T: v\r\n"),
    "guard-http-1.0": _ok().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "guard-an-interim-reply": b"HTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n" + _ok(),
}


@pytest.mark.parametrize("case", sorted(GOOD_CHUNKINGS))
def test_guard_replies_servers_send_are_read_as_before(tmp_path, monkeypatch, capfd, case):
    result, _, _ = _run(tmp_path, monkeypatch, capfd, GOOD_CHUNKINGS[case])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "prompts.txt").read_bytes() == b"a red kite\n"
