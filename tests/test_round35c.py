"""Round 35c: hostile HTTP servers on raw loopback sockets (test_round32e's RawServer) against the chat client
(synthesize), pr-comment-post's GitHub client and publish's Hub client; every row failed before its fix.

A  an error body that stalls after a part of it: the part received was dropped (the status alone was shown); now
   shown, escaped, redacted and cut (deadline_http.received_part)
B  a `101 Switching Protocols` (never asked for) was taken as the final reply: pr-comment-post read it as an
   empty success, synthesize as "HTTP 101"; now one line `connection failed (UnaskedProtocolSwitch)`
C  a Hub 400 showed "Bad request:" (or the error's type) alone: huggingface_hub puts the server's message on the
   lines after it; now its first non-empty lines, joined, escaped, redacted and cut
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest
from test_chat_hostile import KEY, one_error_line, setup_stage
from test_round8_github import TOKEN
from test_round32e import RawServer, post, reply
from test_round33c import HF_TOKEN, TricklingServer, github_answers

from helpers import cli
from scripts.lib.errors import DataError


class StallingServer(RawServer):
    """Sends the reply's first `sent` bytes at once, then nothing until the client gives up (5 s at most)."""

    def __init__(self, reply_bytes: bytes, sent: int):
        super().__init__(lambda method, path: reply_bytes)
        self._sent = sent

    def _answer(self, conn: socket.socket) -> None:
        sent = self._sent

        class Stalling:
            def __getattr__(self, name: str):
                return getattr(conn, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                conn.close()

            def sendall(self, data: bytes) -> None:
                conn.sendall(data[:sent])
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(1)  # until the client closes, or 5 s

        super()._answer(Stalling())  # type: ignore[arg-type]


def stalled(status: int, body: bytes, chunked: bool = False) -> tuple[bytes, int]:
    """A reply whose body is promised 4 kB longer than `body` (or chunked with a 4 kB chunk): `body` arrives,
    then the server stalls."""
    if chunked:
        whole = reply(status, body + b"x" * 4096, chunked_head=f"{len(body) + 4096:x}\r\n".encode())
    else:
        whole = reply(status, body + b"x" * 4096)
    return whole, len(whole) - 4096


# --- A: an error body that stalls: the part received is shown -----------------------------------------------

MESSAGE = b'{"message": "Validation Failed: the head branch ' + b"z" * 300
GITHUB_STALLS = {  # (reply, what the line must show of it)
    "422-json-cut": (stalled(422, MESSAGE), "Validation Failed: the head branch"),
    "500-chunked-cut": (stalled(500, b"upstream gone " * 40, chunked=True), "upstream gone"),
    "403-escape-codes": (stalled(403, b"\x1b[31mdenied\x1b[0m " + b"." * 400), "\\x1b[31mdenied"),
    "502-token-echo": (stalled(502, b"Authorization: Bearer " + TOKEN.encode() + b" " + b"." * 400), "***"),
}


@pytest.mark.parametrize("case", sorted(GITHUB_STALLS))
def test_a_github_error_body_that_stalls_shows_the_part_received(tmp_path, monkeypatch, capfd, case):
    import scripts.lib.deadline_http as deadline_http

    monkeypatch.setattr(deadline_http, "ERROR_BODY_WAIT_S", 0.3)
    (data, sent), shown_part = GITHUB_STALLS[case]
    server = StallingServer(data, sent)
    try:
        started = time.monotonic()
        result = post(tmp_path, server.url, monkeypatch, capfd)
        took = time.monotonic() - started
    finally:
        server.close()
    line = one_error_line(result)
    assert "the body stopped after" in line and shown_part in line, line
    assert TOKEN not in result.stdout + result.stderr and line.isprintable() and len(line) < 700, line
    assert took < 4, took


CHAT_STALLS = {
    "400-json-cut": (stalled(400, b'{"error": {"message": "context length exceeded ' + b"q" * 600), "context length"),
    "401-key-echo": (stalled(401, b"invalid key " + KEY.encode() + b" " + b"." * 600), "invalid key ***"),
    "404-chunked-html": (stalled(404, b"<html><body>no such model " + b"m" * 600, chunked=True), "no such model"),
}


@pytest.mark.parametrize("case", sorted(CHAT_STALLS))
def test_a_chat_error_body_that_stalls_shows_the_part_received(tmp_path, monkeypatch, capfd, case):
    import scripts.lib.deadline_http as deadline_http

    monkeypatch.setattr(deadline_http, "ERROR_BODY_WAIT_S", 0.3)
    (data, sent), shown_part = CHAT_STALLS[case]
    server = StallingServer(data, sent)
    try:
        setup_stage(tmp_path, "synthesize", server.url + "/v1", api_key_env="T2I_R35C_KEY", requests=1)
        monkeypatch.setenv("T2I_R35C_KEY", KEY)
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert "the body stopped after" in line and shown_part in line, line
    assert KEY not in result.stdout + result.stderr and line.isprintable() and len(line) < 700, line


# --- B: 101 Switching Protocols --------------------------------------------------------------------------

SWITCHES = {
    "github-101-alone": ("github", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    "github-101-then-json": ("github", b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + reply(200, b"{}")),
    "chat-101-alone": ("chat", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n"),
    "chat-101-then-bytes": ("chat", b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"),
}


@pytest.mark.parametrize("case", sorted(SWITCHES))
def test_a_101_switching_protocols_is_one_protocol_error_line(tmp_path, monkeypatch, capfd, case):
    client, head = SWITCHES[case]
    server = RawServer(
        lambda method, path: head if path == "/user" or client == "chat" else github_answers(method, path)
    )
    try:
        if client == "github":
            result = post(tmp_path, server.url, monkeypatch, capfd)
        else:
            setup_stage(tmp_path, "synthesize", server.url + "/v1", requests=1, max_attempts=1)
            result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert "UnaskedProtocolSwitch" in line, line
    assert TOKEN not in result.stdout + result.stderr


def hub_server(monkeypatch, tmp_path: Path, data: bytes) -> RawServer:
    """A Hub at HF_ENDPOINT answering `data` to all but huggingface_hub's agent-harness registry (404): that
    registry is kept in memory and in HF_HOME for a day, so one row's answer would become the next rows'."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(_detect_agent, "_registry", None)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
    server = RawServer(lambda method, path: reply(404, b"{}") if "agent-harnesses" in path else data)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("NO_PROXY", "*")
    (tmp_path / "hub").mkdir()
    return server


# --- C: a Hub 400 shows the server's message ------------------------------------------------------------

HUB_400S = {  # (reply, what the line must show)
    "json-error": (reply(400, b'{"error": "Invalid repo name: a/b--c"}'), "Invalid repo name: a/b--c"),
    "x-error-message-header": (
        b"HTTP/1.1 400 X\r\nX-Error-Message: license must be one of the Hub's\r\nContent-Length: 0\r\n\r\n",
        "license must be one of the Hub's",
    ),
    "plain-text-with-token": (
        b"HTTP/1.1 400 X\r\nContent-Type: text/plain\r\nContent-Length: 74\r\n\r\nbad token "
        + HF_TOKEN.encode()
        + b" \x1b[2J"
        + b"." * 20,
        "bad token *** \\x1b[2J",
    ),
    "errors-list": (reply(400, b'{"errors": [{"message": "card too long"}]}'), "card too long"),
}


@pytest.mark.parametrize("case", sorted(HUB_400S))
def test_a_hub_400_shows_the_servers_message(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    data, shown_part = HUB_400S[case]
    server = hub_server(monkeypatch, tmp_path, data)
    try:
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        server.close()
    line = str(caught.value)
    assert line.startswith("Hub: ") and shown_part in line, line
    assert line.isprintable() and len(line) <= 501 and HF_TOKEN not in line, line


# --- D: the trickles over HTTPS (the same connection class as over HTTP; rows only) --------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made here (cryptography), as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


class TricklingTLSServer(TricklingServer):
    """test_round33c's trickle, over TLS with the certificate of `tls_files`."""

    def __init__(self, reply_bytes: bytes, cert: Path, key: Path):
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        super().__init__(reply_bytes)
        self.url = self.url.replace("http://", "https://")

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            wrapped = self._context.wrap_socket(conn, server_side=True)
        except OSError:  # the client refused the handshake: its own line says why
            conn.close()
            return
        super()._answer(wrapped)


TLS_TRICKLES = {  # 33c's trickled error bodies, over TLS
    "https-422-json-body": (reply(422, b'{"message": "' + b"x" * 200 + b'"}'), "HTTP 422"),
    "https-500-chunked-body": (reply(500, b'{"message": "slow"}' * 20, chunked_head=b"17c\r\n"), "HTTP 500"),
    "https-410-chunk-size-line": (reply(410, b"", chunked_head=b"0000000000000000000a\r\n"), "HTTP 410"),
}


@pytest.mark.slow  # a TLS handshake and a trickle a row
@pytest.mark.parametrize("case", sorted(TLS_TRICKLES))
def test_a_trickle_over_https_is_held_to_its_deadline(tmp_path, monkeypatch, capfd, tls_files, case):
    import scripts.lib.deadline_http as deadline_http

    monkeypatch.setattr(deadline_http, "ERROR_BODY_WAIT_S", 0.3)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    data, shown_part = TLS_TRICKLES[case]
    server = TricklingTLSServer(data, *tls_files)
    try:
        started = time.monotonic()
        result = post(tmp_path, server.url, monkeypatch, capfd)
        took = time.monotonic() - started
    finally:
        server.close()
    line = one_error_line(result)
    assert shown_part in line and TOKEN not in result.stdout + result.stderr, line
    assert took < 4, (took, line)


# --- E: a Hub reply without the fields huggingface_hub reads --------------------------------------------------

HUB_FIELDLESS = {  # create_repo's reply: `Hub: 'url'` (huggingface_hub's KeyError) or a TypeError's text
    "empty-object": reply(200, b"{}"),
    "ten-thousand-headers": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(10_000))
    + b"Content-Length: 2\r\n\r\n{}",
    "a-list": reply(200, b"[]"),
    "url-under-another-name": reply(200, b'{"URL": "https://hub.example/datasets/a/b"}'),
}


@pytest.mark.slow  # huggingface_hub's import and requests (class C's rows stay in the default tier)
@pytest.mark.parametrize("case", sorted(HUB_FIELDLESS))
def test_a_hub_reply_without_its_fields_is_named_so(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    server = hub_server(monkeypatch, tmp_path, HUB_FIELDLESS[case])
    try:
        started = time.monotonic()
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
        took = time.monotonic() - started
    finally:
        server.close()
    assert str(caught.value) == "Hub: the reply is not the Hub's JSON (is HF_ENDPOINT a Hub?)"
    assert took < 10, took
