"""Round 41h: round 40e's and 39b's leftovers in the Hub and GitHub clients; rows marked "guard" passed before and
pin what held, every other row failed before its fix.

A  hub_error told a ValueError raised in our own code (a hook, the network backend) as "the reply is not the
   Hub's JSON": only one raised while huggingface_hub, httpx or json read the reply is the reply's now; ours
   propagates (a traceback), as round 40e's TypeError and LookupError do.
B  a Hub redirect loop was httpx's bare "Exceeded maximum allowed redirects.": now one line naming the loop and
   HF_ENDPOINT (its user:password@ redacted).
C  pr-comment-post's GitHub client told a 200 promising 10 GB and sending nothing, or a body cut short, as
   "connection failed (IncompleteRead)": now the cap and the sizes; a malformed reply (deadline_http's
   MalformedReply: a NUL in the reason phrase, two Content-Lengths that differ, Content-Length -1) was
   "connection failed (MalformedReply)": now its problem and GitHub's API origin, sent once.
"""

from __future__ import annotations

import pytest
from test_chat_hostile import one_error_line
from test_round8_github import TOKEN
from test_round32e import RawServer, post, reply
from test_round35c import hub_server

from helpers.tiers import fast_first
from scripts.lib.errors import DataError

# ---------------------------------------------------------------- A. a ValueError of ours is not the Hub's JSON


def _raising(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


def _int_of_text(*args, **kwargs):
    return int("not a number")  # raised in a builtin, below our frame


BUGS = {  # case: (what in hub_http raises, what it is replaced with, the exception type)
    "cap-hook-value-error": ("asked_wait", _raising(ValueError("bad Retry-After")), ValueError),
    "deadline-int-of-text": ("request_deadline", _int_of_text, ValueError),
    "backend-value-error": ("_time_left", _raising(ValueError("negative timeout")), ValueError),
    "addresses-value-error": ("_addresses", _raising(ValueError("port out of range")), ValueError),
}


@pytest.mark.parametrize("case", fast_first(sorted(BUGS)))  # the first row pays for importing the Hub client
def test_a_value_error_of_ours_is_not_told_as_the_hubs_json(tmp_path, monkeypatch, case):
    from scripts.tools import hub_http
    from scripts.tools.publish import upload

    name, replacement, kind = BUGS[case]
    server = hub_server(monkeypatch, tmp_path, reply(200, b'{"url": "https://hub.example/datasets/a/b"}'))
    monkeypatch.setattr(hub_http, name, replacement)
    try:
        with pytest.raises(kind) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        server.close()
    assert not isinstance(caught.value, DataError)


NOT_THE_HUBS_JSON = "Hub: the reply is not the Hub's JSON (is HF_ENDPOINT a Hub?)"
REPLIES = {  # guards: a reply json or huggingface_hub cannot read stays the reply's, one line
    "guard-not-json": reply(200, b"<html>not json</html>"),
    "guard-truncated-json": reply(200, b'{"url": "https://hub.exa'),
    "guard-nan-bytes": reply(200, b"\xff\xfe{}"),
}


@pytest.mark.slow  # guards
@pytest.mark.parametrize("case", sorted(REPLIES))
def test_a_reply_the_client_cannot_read_is_still_one_line(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    server = hub_server(monkeypatch, tmp_path, REPLIES[case])
    try:
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        server.close()
    assert str(caught.value) == NOT_THE_HUBS_JSON, caught.value


# ---------------------------------------------------------------- B. a Hub redirect loop names HF_ENDPOINT


def _redirect(status: int, location: str) -> bytes:
    return f"HTTP/1.1 {status} X\r\nLocation: {location}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode()


LOOPS = {  # case: (the raw reply, HF_ENDPOINT's user part and path: "" for none)
    "302-to-one-path": (_redirect(302, "/loop"), ""),
    "301-to-itself": (_redirect(301, "/api/datasets/a/b"), ""),
    "308-with-a-query": (_redirect(308, "/api/x?again=1"), ""),
    "307-endpoint-with-password": (_redirect(307, "/loop"), "me:hunter2secret@"),
}


@pytest.mark.parametrize("case", fast_first(sorted(LOOPS)))
def test_a_hub_redirect_loop_names_hf_endpoint(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    data, userinfo = LOOPS[case]
    server = hub_server(monkeypatch, tmp_path, data)
    endpoint = server.url.replace("http://", f"http://{userinfo}")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    try:
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        server.close()
    line = str(caught.value)
    shown = server.url.replace("http://", "http://***@") if userinfo else server.url
    assert line.startswith("Hub: a redirect loop at HF_ENDPOINT ") and shown in line, line
    assert "hunter2secret" not in line and "\n" not in line and line.isprintable(), line


# ---------------------------------------------------------------- C. GitHub's replies cut short, over the cap, malformed


def _promise(head: bytes, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + head + b"\r\n" + body


SIZES = {  # case: (the raw reply to every request, what the line says)
    "10gb-no-body": (_promise(b"Content-Length: 10000000000\r\n"), "10000000000 bytes promised, over the"),
    "cap-plus-one-no-body": (_promise(b"Content-Length: 33554433\r\n"), "33554433 bytes promised, over the"),
    "100-promised-10-sent": (_promise(b"Content-Length: 100\r\n", b'{"a": 1234'), "cut short (10 bytes received"),
    "chunked-cut-short": (
        _promise(b"Transfer-Encoding: chunked\r\n", b"40\r\n" + b"x" * 20),
        "the reply was cut short",
    ),
}
MALFORMED = {  # case: (the raw reply, the problem named)
    "nul-in-reason": (b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\n{}", "malformed HTTP status line"),
    "two-content-lengths": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 80\r\n\r\n{}",
        "two Content-Length headers that differ",
    ),
    "content-length-minus-1": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}", "not a number of bytes"),
    "reason-over-long": (b"HTTP/1.1 200 " + b"O" * 5000 + b"\r\nContent-Length: 2\r\n\r\n{}", "reason phrase over"),
}
GITHUB_REPLIES = {**SIZES, **MALFORMED}


@pytest.mark.parametrize(
    "case",
    fast_first(
        ["10gb-no-body", "nul-in-reason", *sorted(GITHUB_REPLIES.keys() - {"10gb-no-body", "nul-in-reason"})], keep=2
    ),
)
def test_a_github_reply_cut_short_over_the_cap_or_malformed_is_one_line(tmp_path, monkeypatch, capfd, case):
    data, said = GITHUB_REPLIES[case]
    sent: list[tuple[str, str]] = []
    server = RawServer(lambda method, path: sent.append((method, path)) or data)
    try:
        result = post(tmp_path, server.url, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert said in line and ("cut short" in said or "connection failed" not in line), line
    assert TOKEN not in result.stdout + result.stderr and line.isprintable(), line
    if case in MALFORMED:  # GitHub's API origin named, the request sent once
        assert f"from {server.url}" in line and len(sent) == 1, (line, sent)
