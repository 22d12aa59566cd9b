"""Round 39b: synthesize validates its examples before it makes anything, and the chat client refuses a hostile
server's status line; every row failed before its fix.

A  a run refused for a bad examples file (missing, not UTF-8, a NUL, over the byte cap, a FIFO, a folder with no
   prompts) left an empty OUT/cache/ it had made: cache/ is now made after the examples pass (a link is still
   refused first, and a cache/ that existed is left as it was)
B  a status line whose reason phrase holds a NUL, a control character, a byte outside ASCII or runs on for
   kilobytes was taken as is (`200 O\\x00K` read as a success, then "response is not JSON"): now one line naming the
   server's origin (deadline_http.MalformedStatusLine), never the key, not retried
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_chat_hostile import KEY, one_error_line, setup_stage
from test_round32e import RawServer

from helpers import cli


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO read would block: the test fails after 20 s rather than hang the suite."""

    def stop(signum, frame):
        raise TimeoutError("the command hung")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def tree(root: Path) -> dict[str, object]:
    """Every path under `root`: a file's bytes, a folder or FIFO by its kind (a FIFO is never read)."""
    return {
        p.relative_to(root).as_posix(): "fifo" if p.is_fifo() else "dir" if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- A: nothing made before the examples pass


def _examples(case: str, root: Path) -> str:
    """Writes the examples of `case` under root; their path."""
    path = root / "ex.txt"
    if case == "missing":
        return "gone.txt"
    if case == "not-utf8":
        path.write_bytes(b"a red kite\n\xff\xfe bad\n")
    elif case == "nul":
        path.write_bytes(b"a red kite\nhalf\x00way\n")
    elif case == "over-the-cap":
        path.write_bytes(b"a red kite\n" * 200)
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "empty-folder":
        (root / "exdir").mkdir()
        (root / "exdir" / "blank.txt").write_bytes(b"\n\n")
        return "exdir"
    return "ex.txt"


BAD_EXAMPLES = ["missing", "not-utf8", "nul", "over-the-cap", "fifo", "empty-folder"]


@pytest.mark.parametrize("cache_there", [False, True], ids=["no-cache", "cache-existed"])
@pytest.mark.parametrize("case", BAD_EXAMPLES)
def test_a_bad_examples_file_leaves_no_cache_folder(tmp_path, monkeypatch, capfd, case, cache_there):
    import scripts.synthesize as synthesize

    monkeypatch.setattr(synthesize, "MAX_EXAMPLE_BYTES", 1000)
    examples = [{"path": _examples(case, tmp_path), "count": 1}]
    setup_stage(tmp_path, "synthesize", requests=1, examples=examples)
    if cache_there:
        (tmp_path / "out" / "cache").mkdir(parents=True)
        (tmp_path / "out" / "cache" / "notes.md").write_bytes(b"mine\n")
    before = tree(tmp_path)
    result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    one_error_line(result)
    assert tree(tmp_path) == before, result.stderr


def test_a_cache_that_is_a_link_is_still_refused_before_the_examples(tmp_path, monkeypatch, capfd):
    os.mkfifo(tmp_path / "ex.txt")  # read first, it would hang: the link's refusal comes before
    setup_stage(tmp_path, "synthesize", requests=1, examples=[{"path": "ex.txt", "count": 1}])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cache").symlink_to(tmp_path / "elsewhere")
    line = one_error_line(cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd))
    assert "symbolic link" in line, line


# ---------------------------------------------------------------- B: a malformed status line

OK_BODY = b'{"choices": [{"message": {"content": "a red kite"}, "finish_reason": "stop"}]}'


def _reply(status_line: bytes) -> bytes:
    return status_line + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY


STATUS_LINES = {
    "nul-in-200": b"HTTP/1.1 200 O\x00K",
    "escape-codes": b"HTTP/1.1 200 \x1b[2J\x1b[31mOK",
    "latin1-byte": b"HTTP/1.1 200 \xffOK",
    "utf8-reason": "HTTP/1.1 200 Ça va".encode(),
    "bell-in-429": b"HTTP/1.1 429 Slow\x07 down",
    "over-long-reason": b"HTTP/1.1 200 " + b"O" * 4000,
    "key-echo-with-nul": b"HTTP/1.1 200 \x00" + KEY.encode(),
}


@pytest.mark.parametrize("case", sorted(STATUS_LINES))
def test_a_malformed_status_line_is_one_line_naming_the_server(tmp_path, monkeypatch, capfd, case):
    head = STATUS_LINES[case]
    server = RawServer(lambda method, path: _reply(head))
    try:
        (tmp_path / "ex.txt").write_bytes(b"a red kite\n")
        setup_stage(
            tmp_path,
            "synthesize",
            server.url + "/v1",
            api_key_env="T2I_R39B_KEY",
            max_attempts=3,
            requests=1,
            examples=[{"path": "ex.txt", "count": 1}],
        )
        monkeypatch.setenv("T2I_R39B_KEY", KEY)
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert "malformed HTTP status line" in line and server.url in line, line
    assert "after 3 attempts" not in line  # no server answers so: not retried
    assert KEY not in result.stdout + result.stderr and line.isprintable() and len(line) < 700, line
    assert not (tmp_path / "out" / "prompts.txt").exists()


@pytest.mark.parametrize("reason", [b"OK", b"", b"Too Many\tRequests", b"Non-Authoritative Information"])
def test_a_well_formed_reason_phrase_is_read_as_before(reason):
    from scripts.lib.deadline_http import reason_problem

    assert reason_problem(reason.decode("latin-1") + "\r\n") is None


# ---------------------------------------------------------------- C: a Content-Length no server sends


def _framed(*lengths: bytes) -> bytes:
    head = b"".join(b"Content-Length: " + length + b"\r\n" for length in lengths)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + head + b"\r\n" + OK_BODY


N = str(len(OK_BODY)).encode()
LENGTHS = {  # each was read: a success cached from a body framed by nothing, or "response is not JSON"
    "negative": _framed(b"-1"),
    "two-that-differ": _framed(b"5", N),
    "underscore": _framed(N[:1] + b"_" + N[1:]),
    "plus-sign": _framed(b"+" + N),
    "arabic-digits-utf8": _framed("".join(chr(0x660 + int(d)) for d in N.decode()).encode()),
    "list-that-differs": _framed(N + b", 5"),
}


@pytest.mark.parametrize("case", sorted(LENGTHS))
def test_a_malformed_content_length_is_one_line_naming_the_server(tmp_path, monkeypatch, capfd, case):
    server = RawServer(lambda method, path: LENGTHS[case])
    try:
        (tmp_path / "ex.txt").write_bytes(b"a red kite\n")
        setup_stage(
            tmp_path,
            "synthesize",
            server.url + "/v1",
            max_attempts=3,
            requests=1,
            examples=[{"path": "ex.txt", "count": 1}],
        )
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert "malformed HTTP reply" in line and server.url in line and "after 3 attempts" not in line, line
    assert not (tmp_path / "out" / "prompts.txt").exists() and not any((tmp_path / "out" / "cache").glob("*.json"))


@pytest.mark.parametrize("lengths", [[N], [N + b", " + N], [N, N], [b" " + N + b" "]])
def test_a_well_formed_content_length_is_read_as_before(tmp_path, monkeypatch, capfd, lengths):
    server = RawServer(lambda method, path: _framed(*lengths))
    try:
        (tmp_path / "ex.txt").write_bytes(b"a red kite\n")
        setup_stage(tmp_path, "synthesize", server.url + "/v1", requests=1, examples=[{"path": "ex.txt", "count": 1}])
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "prompts.txt").read_bytes() == b"a red kite\n"
