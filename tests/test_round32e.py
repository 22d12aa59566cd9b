"""Round 32e: hostile HTTP servers, on raw loopback sockets, against the chat client (synthesize, caption) and
pr-comment-post's GitHub client; every row failed before its fix.

A  an error reply (4xx/5xx) whose body cannot be read (a chunk size that is negative, not hex, or a chunk cut
   short): pr-comment-post exited 1 with "internal error (a bug...)" (ValueError, IncompleteRead escaping the
   except clause that read the body) instead of the status's one line, exit 2
B  a reply whose Content-Length promises more than the server sends before closing: http.client's read(n)
   returned the cut body as if whole (or as nothing), so a completion was cached, a cut reply to the POST
   reported as posted, and a cut comment page read as an empty reply ("not a list of comments")
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from test_chat_hostile import KEY, one_error_line, setup_stage
from test_round8_github import MARKER, TOKEN, shows_token

from helpers import cli

COMPLETION = {"choices": [{"message": {"role": "assistant", "content": "1. a kite over the sea"}}]}


class RawServer:
    """A loopback server that answers each request with the bytes `reply(method, path)` gives, then closes:
    no HTTP library between the test and the wire, so a reply may break any rule."""

    def __init__(self, reply: Callable[[str, str], bytes]):
        self._reply, self._sock = reply, socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536) or b"\r\n\r\n"
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (int(v) for n, _, v in (x.partition(":") for x in lines) if n.lower() == "content-length"), 0
                )
                while len(body) < length:
                    body += conn.recv(65536) or b"x" * length
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                conn.sendall(self._reply(method, path))
            except OSError:  # the client gave up: not this test's failure
                pass

    def close(self) -> None:
        self._sock.close()


def reply(status: int, body: bytes, promised: int | None = None, chunked_head: bytes | None = None) -> bytes:
    """A raw HTTP/1.1 reply: `body` after a Content-Length of `promised` (default its length), or after
    `Transfer-Encoding: chunked` with `chunked_head` as the first chunk-size line and what follows."""
    if chunked_head is not None:
        return f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked_head + body
    size = len(body) if promised is None else promised
    return f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode() + body


def post(tmp_path: Path, api: str, monkeypatch, capfd):
    """pr-comment-post of a comment with the marker to pull request 1 of o/r at `api`, in this process
    (test_round8_github's `post` starts an interpreter: seconds a row here)."""
    body = tmp_path / "body.md"
    body.write_text(f"{MARKER}\nhello\n", encoding="utf-8")
    for name, value in {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": api}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "*")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "GH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return cli(["pr-comment-post", body, "--pr", "1"], tmp_path, monkeypatch, capfd)


def one_github_line(result, match: str) -> str:
    line = one_error_line(result)
    assert match in line, line
    assert not shows_token(result.stdout + result.stderr)
    return line


# --- A: an error reply whose body cannot be read ---------------------------------------------------------

UNREADABLE_ERROR_BODIES = {
    "500-negative-chunk-size": (500, b"-5\r\n", b"{}" * 50),
    "502-non-hex-chunk-size": (502, b"zz\r\n", b"{}\r\n0\r\n\r\n"),
    "422-chunk-cut-short": (422, b"ff\r\n", b'{"message": "cut'),
    "503-chunk-size-then-close": (503, b"10\r\n", b""),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_ERROR_BODIES))
def test_an_error_reply_whose_body_cannot_be_read_is_its_status_in_one_line(tmp_path, monkeypatch, capfd, case):
    status, chunk_head, rest = UNREADABLE_ERROR_BODIES[case]
    server = RawServer(lambda method, path: reply(status, rest, chunked_head=chunk_head))
    try:
        result = post(tmp_path, server.url, monkeypatch, capfd)
    finally:
        server.close()
    line = one_github_line(result, "GitHub API")
    assert f"HTTP {status}" in line or "connection failed" in line, line


# --- B: a body cut short of its Content-Length -----------------------------------------------------------


def github_cut(route: str, body: bytes, extra: int) -> Callable[[str, str], bytes]:
    """GitHub's answers, the one at `route` with `body` and a Content-Length `extra` bytes longer."""

    def answer(method: str, path: str) -> bytes:
        if route in path and (route != "/comments" or method == "GET"):
            return reply(200, body, len(body) + extra)
        if path == "/user":
            return reply(200, json.dumps({"login": "me"}).encode())
        if method == "GET" and "/comments" in path:
            return reply(200, b"[]")
        return reply(201, json.dumps({"id": 1, "html_url": "https://github.example/o/r/pull/1#c1"}).encode())

    return answer


CUT_GITHUB_REPLIES = {  # each was taken as whole (exit 0), or as an empty reply
    "comment-page-cut-after-its-first-comment": ("/comments", b'[{"id": 5, "body": "a"}]', 4000),
    "user-cut-after-its-login": ("/user", b'{"login": "me"}', 1),
    "posted-comment-cut": ("/issues/1/comments", b'{"id": 7, "html_url": "https://g.example/c"}', 100),
}


@pytest.mark.parametrize("case", sorted(CUT_GITHUB_REPLIES))
def test_a_github_reply_cut_short_of_its_length_is_a_connection_failure(tmp_path, monkeypatch, capfd, case):
    server = RawServer(github_cut(*CUT_GITHUB_REPLIES[case]))
    try:
        result = post(tmp_path, server.url, monkeypatch, capfd)
    finally:
        server.close()
    one_github_line(result, "connection failed (IncompleteRead)")
    assert TOKEN not in result.stdout + result.stderr


CUT_COMPLETIONS = {  # (stage, bytes promised beyond the body): the cut completion was cached, exit 0
    "synthesize-one-byte-short": ("synthesize", 1),
    "synthesize-a-kilobyte-short": ("synthesize", 1024),
    "caption-one-byte-short": ("caption", 1),
    "caption-twice-its-length": ("caption", len(json.dumps(COMPLETION))),
}


@pytest.mark.parametrize("case", sorted(CUT_COMPLETIONS))
def test_a_completion_cut_short_of_its_length_is_not_cached(tmp_path: Path, monkeypatch, capfd, case):
    stage, extra = CUT_COMPLETIONS[case]
    body = json.dumps(COMPLETION).encode()
    server = RawServer(lambda method, path: reply(200, body, len(body) + extra))
    try:
        extra_params = {"requests": 1} if stage == "synthesize" else {"max_images": None}
        setup_stage(tmp_path, stage, server.url + "/v1", api_key_env="T2I_R32E_KEY", **extra_params)
        monkeypatch.setenv("T2I_R32E_KEY", KEY)
        result = cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert "IncompleteRead" in line, line
    assert KEY not in result.stdout + result.stderr
    assert not list((tmp_path / "out").rglob("cache/*.json"))
