"""Round 33c: hostile HTTP servers on raw loopback sockets (test_round32e's RawServer), against the chat client
(synthesize), pr-comment-post's GitHub client and publish's Hub client; every row failed before its fix.

A  1xx informational replies before the real one (103 Early Hints, 102 Processing): http.client skips only
   100 Continue, so the request failed as "HTTP 103" (synthesize, pr-comment-post); now skipped, at most
   deadline_http.MAX_INTERIM_REPLIES of them (an endless run of them is one line)
B  an error reply whose body trickles (or stalls): pr-comment-post waited for its 60 s deadline to read the
   message before showing the status; now read for deadline_http.ERROR_BODY_WAIT_S at most, then the status alone
C  a Hub error quoting what the server sent (huggingface_hub's message, h11's `illegal status line: ...`): escape
   codes were in the line as sent, and a megabyte message made a megabyte line; now shown and cut short
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from test_chat_hostile import KEY, one_error_line, setup_stage
from test_round8_github import TOKEN
from test_round32e import COMPLETION, RawServer, one_github_line, post, reply

from helpers import cli
from scripts.lib.errors import DataError

HF_TOKEN = "hf_" + "Rw4" * 12


def github_answers(method: str, path: str) -> bytes:
    """GitHub's answers to pr-comment-post: who we are, no comment yet, the comment created."""
    if path == "/user":
        return reply(200, json.dumps({"login": "me"}).encode())
    if method == "GET" and "/comments" in path:
        return reply(200, b"[]")
    return reply(201, json.dumps({"id": 1, "html_url": "https://github.example/o/r/pull/1#c1"}).encode())


def interim(*statuses: int) -> bytes:
    return b"".join(f"HTTP/1.1 {s} Interim\r\nLink: </style.css>; rel=preload\r\n\r\n".encode() for s in statuses)


# --- A: 1xx informational replies before the real one ---------------------------------------------------

INTERIMS = {  # each failed the request as "HTTP <the first status>"
    "103-early-hints": (103,),
    "102-processing-twice": (102, 102),
    "103-then-100": (103, 100),
    "199-an-unknown-one": (199,),
}


@pytest.mark.parametrize("case", sorted(INTERIMS))
def test_informational_replies_before_githubs_answer_are_skipped(tmp_path, monkeypatch, capfd, case):
    server = RawServer(lambda method, path: interim(*INTERIMS[case]) + github_answers(method, path))
    try:
        result = post(tmp_path, server.url, monkeypatch, capfd)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("case", sorted(INTERIMS))
def test_informational_replies_before_a_completion_are_skipped(tmp_path, monkeypatch, capfd, case):
    body = json.dumps(COMPLETION).encode()
    server = RawServer(lambda method, path: interim(*INTERIMS[case]) + reply(200, body))
    try:
        setup_stage(tmp_path, "synthesize", server.url + "/v1", api_key_env="T2I_R33C_KEY", requests=1)
        monkeypatch.setenv("T2I_R33C_KEY", KEY)
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr


ENDLESS = {"github-endless-103": "github", "chat-endless-102": "chat", "github-endless-100": "github"}


@pytest.mark.parametrize("case", sorted(ENDLESS))
def test_an_endless_run_of_informational_replies_is_one_line(tmp_path, monkeypatch, capfd, case):
    status = int(case.rsplit("-", 1)[1])
    server = RawServer(lambda method, path: interim(*[status] * 500) + reply(200, b"{}"))
    try:
        if ENDLESS[case] == "github":
            result = post(tmp_path, server.url, monkeypatch, capfd)
            one_github_line(result, "connection failed (TooManyInterimReplies)")
        else:
            setup_stage(tmp_path, "synthesize", server.url + "/v1", requests=1, max_attempts=1)
            result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
            assert "TooManyInterimReplies" in one_error_line(result)
    finally:
        server.close()


# --- B: an error body that trickles ------------------------------------------------------------------------


class Trickling:
    """A server's socket that sends a reply's head at once and the rest a byte every 0.2 s, for 8 s at most
    (the GitHub client's deadline is 60 s: before the fix, the row took those 8 s)."""

    def __init__(self, conn: socket.socket):
        self._conn = conn

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._conn.close()

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def sendall(self, data: bytes) -> None:
        head, _, rest = data.partition(b"\r\n\r\n")
        self._conn.sendall(head + b"\r\n\r\n")
        end = time.monotonic() + 8
        for byte in rest:
            if time.monotonic() > end:
                return
            time.sleep(0.2)
            self._conn.sendall(bytes([byte]))


class TricklingServer(RawServer):
    def __init__(self, reply_bytes: bytes):
        super().__init__(lambda method, path: reply_bytes)

    def _answer(self, conn: socket.socket) -> None:
        super()._answer(Trickling(conn))  # type: ignore[arg-type]


TRICKLED_ERRORS = {  # the error replies to GET /user, their head sent at once, the rest a byte at a time
    "422-json-body": reply(422, b'{"message": "' + b"x" * 200 + b'"}'),
    "500-chunked-body": reply(500, b'{"message": "slow"}' * 20, chunked_head=b"17c\r\n"),
    "410-chunk-size-line": reply(410, b"", chunked_head=b"0000000000000000000a\r\n"),
    "502-a-hundred-braces": reply(502, b"{" * 100),
}


@pytest.mark.parametrize("case", sorted(TRICKLED_ERRORS))
def test_an_error_body_that_trickles_is_not_waited_out(tmp_path, monkeypatch, capfd, case):
    import scripts.lib.deadline_http as deadline_http

    monkeypatch.setattr(deadline_http, "ERROR_BODY_WAIT_S", 0.3, raising=False)  # 3 s in use
    server = TricklingServer(TRICKLED_ERRORS[case])
    try:
        started = time.monotonic()
        result = post(tmp_path, server.url, monkeypatch, capfd)
        took = time.monotonic() - started
    finally:
        server.close()
    status = case.split("-", 1)[0]
    line = one_github_line(result, f"HTTP {status}")
    assert took < 4, (took, line)


# --- C: a Hub error quoting the server's text ------------------------------------------------------------

HUB_REPLIES = {  # what the Hub answers to create_repo: httpx and h11 quote it, and the line held it as sent
    "illegal-chunk-header-of-12-kB": reply(200, b"", chunked_head=b"z" + b"\x1b" * 12_000 + b"\r\n"),
    "404-reason-phrase-of-12-kB": b"HTTP/1.1 404 " + b"x" * 12_000 + b"\r\nContent-Length: 2\r\n\r\n{}",
    "illegal-status-line-of-12-kB": b"HTTP/1.1 2x0 " + b"\x1b" * 12_000 + b"\r\n\r\n",
    "illegal-header-line-of-12-kB": b"HTTP/1.1 200 OK\r\nBad " + b"\x07" * 12_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(HUB_REPLIES))
def test_a_hub_error_quoting_the_server_is_printable_and_short(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    server = RawServer(lambda method, path: HUB_REPLIES[case])
    try:
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("NO_PROXY", "*")
        (tmp_path / "hub").mkdir()
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        server.close()
    line = str(caught.value)
    assert line.startswith("Hub: "), line[:300]
    assert line.isprintable() and len(line) <= 501, (len(line), line[:300])
    assert HF_TOKEN not in line
