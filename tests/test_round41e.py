"""Round 41e: round 39b's leftovers in the chat client, against raw loopback servers (test_round32e's RawServer);
every row failed before its fix.

A  Retry-After was read by float(): `1e1`, `1_000`, full-width digits, `inf` made the client wait backoff_cap_s,
   `nan` read as 0; now only RFC 9110's delay-seconds (ASCII digits) or an HTTP date, anything else absent
B  a reply with both `Transfer-Encoding: chunked` and `Content-Length` (RFC 9112 6.3: a request smuggling shape)
   was read as chunked, and `gzip`, `chunked, identity` or `chunked` twice as no framing ("not JSON"); now one
   line `a malformed HTTP reply (...)` naming the server, not retried
C  a status code 600-999 was "HTTP 999" (retried as a 5xx), more than 100 headers "connection failed
   (HTTPException)", a gzip or br body "response is not JSON"; now one line each, naming why, not retried
"""

from __future__ import annotations

import time

import pytest
from test_chat_hostile import one_error_line, setup_stage
from test_round32e import RawServer

from helpers import cli

OK_BODY = b'{"choices": [{"message": {"content": "a red kite"}, "finish_reason": "stop"}]}'
JSON = b"Content-Type: application/json\r\n"


def _synthesize(tmp_path, monkeypatch, capfd, answer, **overrides):
    """synthesize of one request against a RawServer answering `answer(n)` to its n-th request (from 0)."""
    seen: list[str] = []

    def reply(method: str, path: str) -> bytes:
        seen.append(path)
        return answer(len(seen) - 1)

    server = RawServer(reply)
    try:
        (tmp_path / "ex.txt").write_bytes(b"a red kite\n")
        entry = {"max_attempts": 3, "requests": 1, "examples": [{"path": "ex.txt", "count": 1}], **overrides}
        setup_stage(tmp_path, "synthesize", server.url + "/v1", **entry)
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    return result, server.url, len(seen)


def _ok(extra_head: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + JSON + extra_head + b"Content-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def _no_output(tmp_path) -> bool:
    return not (tmp_path / "out" / "prompts.txt").exists() and not any((tmp_path / "out" / "cache").glob("*.json"))


# ---------------------------------------------------------------- A: Retry-After as RFC 9110 writes it

NOT_DELAY_SECONDS = ["1e1", "1_000", "\uff11\uff10", "nan", "inf", "1e400", "10.5", "\u0663"]


@pytest.mark.parametrize("value", NOT_DELAY_SECONDS)
def test_a_retry_after_that_is_not_delay_seconds_is_absent(value):
    from scripts.lib.chat_client import parse_retry_after

    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["1e1", "1_000", "inf", "1e400"])  # full-width digits arrive as latin-1
def test_a_float_retry_after_waits_the_normal_backoff_not_the_cap(tmp_path, monkeypatch, capfd, value):
    too_many = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: " + value.encode() + b"\r\nContent-Length: 0\r\n\r\n"
    started = time.monotonic()
    result, _, calls = _synthesize(
        tmp_path, monkeypatch, capfd, lambda n: too_many if n == 0 else _ok(), backoff_cap_s=10.0
    )
    assert result.returncode == 0 and calls == 2, result.stderr
    assert time.monotonic() - started < 5  # backoff_base_s (0.01 s), not backoff_cap_s (10 s)
    assert (tmp_path / "out" / "prompts.txt").read_bytes() == b"a red kite\n"


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), (" 7 ", 7.0), ("0", 0.0), ("9" * 5000, float("inf"))])
def test_delay_seconds_are_read_as_before(value, seconds):
    from scripts.lib.chat_client import parse_retry_after

    assert parse_retry_after(value) == seconds


# ---------------------------------------------------------------- B: framing no server sends

CHUNKED = _chunked(OK_BODY)
FRAMINGS = {
    "chunked-then-length": b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(CHUNKED),
    "length-then-chunked": b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(OK_BODY),
    "gzip": b"Transfer-Encoding: gzip\r\n",
    "chunked-twice-in-one": b"Transfer-Encoding: chunked, chunked\r\n",
    "chunked-twice-as-two": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "chunked-identity": b"Transfer-Encoding: chunked, identity\r\n",
    "chunked-trailing-space": b"Transfer-Encoding: chunked \r\n",
}


@pytest.mark.parametrize("case", sorted(FRAMINGS))
def test_a_transfer_encoding_no_server_sends_is_one_line(tmp_path, monkeypatch, capfd, case):
    answer = b"HTTP/1.1 200 OK\r\n" + JSON + FRAMINGS[case] + b"\r\n" + CHUNKED
    result, url, calls = _synthesize(tmp_path, monkeypatch, capfd, lambda n: answer)
    line = one_error_line(result)
    assert "malformed HTTP reply" in line and url in line and calls == 1, line
    assert _no_output(tmp_path)


@pytest.mark.parametrize("coding", [b"chunked", b"Chunked", b"CHUNKED"])
def test_a_chunked_reply_is_read_as_before(tmp_path, monkeypatch, capfd, coding):
    answer = b"HTTP/1.1 200 OK\r\n" + JSON + b"Transfer-Encoding: " + coding + b"\r\n\r\n" + CHUNKED
    result, _, _ = _synthesize(tmp_path, monkeypatch, capfd, lambda n: answer)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "prompts.txt").read_bytes() == b"a red kite\n"


# ---------------------------------------------------------------- C: status codes, headers, encodings


@pytest.mark.parametrize("status", [600, 700, 999])
def test_a_status_code_past_599_is_one_line_naming_it(tmp_path, monkeypatch, capfd, status):
    answer = b"HTTP/1.1 %d Odd\r\n" % status + JSON + b"Content-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY
    result, url, calls = _synthesize(tmp_path, monkeypatch, capfd, lambda n: answer)
    line = one_error_line(result)
    assert f"an invalid status code {status}" in line and url in line and calls == 1, line
    assert f"HTTP {status}" not in line and _no_output(tmp_path)


@pytest.mark.parametrize("count", [101, 1000, 100_000])
def test_too_many_headers_are_named(tmp_path, monkeypatch, capfd, count):
    head = b"".join(b"X-H%d: v\r\n" % i for i in range(count))
    result, url, calls = _synthesize(tmp_path, monkeypatch, capfd, lambda n: _ok(head))
    line = one_error_line(result)
    assert "too many headers" in line and url in line and calls == 1, line
    assert "HTTPException" not in line and _no_output(tmp_path)


@pytest.mark.parametrize("coding", ["gzip", "br", "x-gzip", "identity, gzip"])
def test_a_content_encoding_never_asked_for_is_named(tmp_path, monkeypatch, capfd, coding):
    head = b"Content-Encoding: " + coding.encode() + b"\r\n"
    result, url, calls = _synthesize(tmp_path, monkeypatch, capfd, lambda n: _ok(head))
    line = one_error_line(result)
    assert f"encoded as {coding.split(', ')[-1]}" in line and url in line and calls == 1, line
    assert "not JSON" not in line and _no_output(tmp_path)


def test_a_control_character_in_the_encoding_is_escaped(tmp_path, monkeypatch, capfd):
    head = b"Content-Encoding: gz\x1b[2Jip" + b"x" * 500 + b"\r\n"
    result, _, _ = _synthesize(tmp_path, monkeypatch, capfd, lambda n: _ok(head))
    line = one_error_line(result)
    assert "\x1b" not in line and line.isprintable() and len(line) < 300, line


@pytest.mark.parametrize("head", [b"Content-Encoding: identity\r\n", b"Content-Encoding: \r\n", b"X-H: v\r\n" * 90])
def test_identity_and_a_few_headers_are_read_as_before(tmp_path, monkeypatch, capfd, head):
    result, _, _ = _synthesize(tmp_path, monkeypatch, capfd, lambda n: _ok(head))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "prompts.txt").read_bytes() == b"a red kite\n"
