"""Round 25g: secrets that still reached a line or a file, one table per class (every row failed before its fix),
against loopback servers and real files, never the network:

1. A secret under 16 characters (an API key, and most proxies' passwords) was redacted only as itself, a whole
   token: echoed in any other form it was printed. A proxy's 407 quoting the Proxy-Authorization it got (base64 of
   `user:password`) put a short proxy password on every client's line (chat, pr-comment-post's GitHub client,
   publish's Hub client); a 10-character key percent-encoded, \\u-escaped, split by a zero-width space or a line
   break reached synthesize's line. Each whole encoding of 8 characters or more is now looked for
   (key_redaction._short_forms), never its pieces.
2. A proxy variable without a scheme (`HTTPS_PROXY=user:PASSWORD@proxy:3128`, read by urllib and httpx as http://)
   was split by urlsplit with `user` as its scheme: no password was found, and a proxy echoing it reached every
   client's line. key_redaction.proxy_credentials reads it as the clients do.
3. HF_ENDPOINT with a key or token as a part of its path (`http://mirror/sk-proj-...`) was quoted in every Hub error
   line (the client puts each request's path after it); HF_TOKEN there took the port and the request's path with
   it. The endpoint's path is shown as `/***` (hub_http.hide_endpoint_path).
4. A signed URL in a source's metadata (S3's `X-Amz-Signature`/`-Credential`, Azure's `sig`, OAuth's
   `access_token`, an API's `key`) went into the prompt table as the source wrote it, a working credential in a
   file and every release. Each signing parameter's value is *** (readers.base.without_signatures, on every Record).
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_round16b import dalle3_json, ingest, openprompts_uri, source

from helpers import Loopback, tar_bytes
from helpers.workspace import PNG, write_files
from scripts.lib.errors import DataError

pytestmark = pytest.mark.usefixtures("no_proxy")

API_KEY = "sk-proj-R25gLOOPBACKkey0123456789abcdEF"
GH_TOKEN = "ghp_R25gLOOPBACKtoken0123456789abcdEF"
HF_TOKEN = "hf_R25gLOOPBACKtoken0123456789abcdEF"


def without_proxies(monkeypatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "REQUEST_METHOD", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def echoing_proxy(echo) -> Loopback:
    """A proxy answering 407, its reason phrase and JSON message quoting echo(Proxy-Authorization, user:password)."""

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            basic = self.headers.get("Proxy-Authorization", "")
            plain = base64.b64decode(basic.split()[-1]).decode() if basic else ""
            said = echo(basic, plain)
            raw = json.dumps({"message": f"proxy refused {said}", "error": f"proxy refused {said}"}).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(407, f"Proxy {said}")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        do_POST = do_GET

    return Loopback(Proxy)


def line_through(client: str, proxy_url: str, monkeypatch, tmp_path: Path) -> str:
    """The one line `client` (chat, github or hub) ends with, sent through the proxy `proxy_url` (HTTP_PROXY)."""
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    if client == "chat":
        from scripts.lib.chat_client import FatalError, TransientError, post_chat

        with pytest.raises((FatalError, TransientError)) as caught:
            post_chat("http://chat.example.test/v1/chat/completions", {"model": "m"}, API_KEY, 10)
    elif client == "github":
        from scripts.tools.github_client import GitHub

        with pytest.raises(DataError) as caught:
            GitHub("o/r", GH_TOKEN, "http://127.0.0.1:9", deadline_s=10).request("GET", "/user")
    else:
        from scripts.tools.publish import upload

        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # reached through the proxy
        (tmp_path / "hub").mkdir()
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    return str(caught.value)


def readable(line: str, secret: str) -> bool:
    """Whether `secret` can be read back from `line`: as is, in any case, or in the base64 the proxy got."""
    said = line.lower()
    basic = base64.b64encode(f"me:{secret}".encode()).decode()
    return secret.lower() in said or basic[4:].lower() in said


# ---------------------------------------------------------------- 1. a short secret in another encoding

SHORT_PASSWORDS = {  # client, a proxy password under 16 characters (most are), echoed as its Basic header
    "chat-a-9-character-password": ("chat", "hunter22x"),
    "github-a-12-character-password": ("github", "Wq4pZ7xK2mLr"),
    "hub-a-word-as-password": ("hub", "sunshine"),
    "chat-punctuated-password": ("chat", "p4ss;W0rd-9x"),
}


@pytest.mark.parametrize("case", sorted(SHORT_PASSWORDS))
def test_a_short_proxy_password_echoed_as_its_basic_header_is_redacted(tmp_path, monkeypatch, case):
    client, password = SHORT_PASSWORDS[case]
    without_proxies(monkeypatch)
    proxy = echoing_proxy(lambda basic, plain: basic)
    try:
        port = proxy.httpd.server_address[1]
        line = line_through(client, f"http://me:{urllib.parse.quote(password)}@127.0.0.1:{port}", monkeypatch, tmp_path)
    finally:
        proxy.close()
    assert "407" in line, line  # the proxy was asked, and answered
    assert not readable(line, password), line


SHORT_KEY = "Zq7xK2pLm9"  # 10 characters: redacted as a whole token only, before
SHORT_KEY_ECHOES = {  # what a server's 401 message makes of the key
    "percent-encoded": "".join(f"%{ord(char):02X}" if char in "q7K" else char for char in SHORT_KEY),
    "json-escaped": "".join(f"\\u{ord(char):04x}" if char in "xpm" else char for char in SHORT_KEY),
    "a-zero-width-space-inside": f"{SHORT_KEY[:4]}\u200b{SHORT_KEY[4:]}",
    "split-over-two-lines": f"{SHORT_KEY[:5]}\n{SHORT_KEY[5:]}",
    "base64-of-user-colon-key": base64.b64encode(f"user:{SHORT_KEY}".encode()).decode(),
}


@pytest.mark.parametrize("case", sorted(SHORT_KEY_ECHOES))
def test_a_short_api_key_echoed_in_another_encoding_never_reaches_the_line(case):
    from scripts.lib.chat_client import FatalError, post_chat

    echoed = SHORT_KEY_ECHOES[case]

    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = json.dumps({"error": {"message": f"Incorrect API key provided: {echoed}"}}).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = Loopback(Refusing)
    try:
        with pytest.raises(FatalError) as caught:
            post_chat(f"{server.base_url}/chat/completions", {"model": "m"}, SHORT_KEY, 10)
    finally:
        server.close()
    line = str(caught.value)
    assert line.startswith("HTTP 401: Incorrect API key provided: "), line
    joined = "".join(char for char in line if char.isalnum()).lower()  # a space or a line break left out
    assert echoed not in line and SHORT_KEY.lower() not in joined, line


# ---------------------------------------------------------------- 2. a proxy variable without a scheme

PROXY_PASSWORD = "Px7vQ2mZ9kL4wT8nR3"
SCHEMELESS = {  # client, how the proxy echoes (Proxy-Authorization, user:password)
    "chat-the-login": ("chat", lambda basic, plain: plain),
    "github-the-login": ("github", lambda basic, plain: plain),
    "hub-the-login": ("hub", lambda basic, plain: plain),
    "github-the-basic-header": ("github", lambda basic, plain: basic),
}


@pytest.mark.parametrize("case", sorted(SCHEMELESS))
def test_a_proxy_variable_without_a_scheme_keeps_its_password_unshown(tmp_path, monkeypatch, case):
    client, echo = SCHEMELESS[case]
    without_proxies(monkeypatch)
    proxy = echoing_proxy(echo)
    try:
        url = f"me:{PROXY_PASSWORD}@127.0.0.1:{proxy.httpd.server_address[1]}"  # no http://: both clients add it
        line = line_through(client, url, monkeypatch, tmp_path)
    finally:
        proxy.close()
    assert "407" in line, line
    assert not readable(line, PROXY_PASSWORD), line


# ---------------------------------------------------------------- 3. a key in HF_ENDPOINT's path

ENDPOINT_PATHS = {  # HF_ENDPOINT's path, the secret in it
    "an-openai-key-under-a-mirror-prefix": ("/mirror/sk-proj-Pp4Qq7Ww1Ee3Rr9Tt2Yy5Uu", "Pp4Qq7Ww1Ee3Rr9Tt2Yy5Uu"),
    "a-github-token": ("/ghp_Pp4Qq7Ww1Ee3Rr9Tt2Yy5Uu0", "Pp4Qq7Ww1Ee3Rr9Tt2Yy5Uu0"),
    "a-random-token-of-no-known-prefix": ("/x/Zq8Rw2Lx5Vn7Kc3Hb9Tm", "Zq8Rw2Lx5Vn7Kc3Hb9Tm"),
    "hf-token-itself-keeps-the-port": (f"/{HF_TOKEN}", HF_TOKEN),
}


def hub_answering(status: int) -> Loopback:
    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

    return Loopback(Hub)


@pytest.mark.parametrize("case", sorted(ENDPOINT_PATHS))
def test_a_key_in_hf_endpoints_path_is_not_printed_and_the_url_stays_readable(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    path, secret = ENDPOINT_PATHS[case]
    without_proxies(monkeypatch)
    hub = hub_answering(404)
    try:
        port = hub.httpd.server_address[1]
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}{path}")
        (tmp_path / "hub").mkdir()
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        hub.close()
    line = str(caught.value)
    assert f"http://127.0.0.1:{port}/***/api/repos/create" in line, line
    assert secret.lower() not in line.lower(), line


# ---------------------------------------------------------------- 4. a signed URL in a source's metadata


def dalle3_url(url: str):
    def files(root: Path) -> dict:
        write_files(root, {"raw/data-000000.tar": tar_bytes([("a.png", PNG), ("a.json", dalle3_json(url=url))])})
        return source("dalle3", caption_field="short_caption")

    return files


SIGNATURE = "Zq8Rw2Lx5Vn7Kc3Hb9Tm"
SIGNED_URLS = {  # the source, what meta holds in the signature's place
    "openprompts-s3-presigned": (
        openprompts_uri(
            f"https://b.s3.amazonaws.com/x.png?X-Amz-Credential=AKIA{SIGNATURE}&X-Amz-Signature={SIGNATURE}"
        ),
        "x.png?X-Amz-Credential=***&X-Amz-Signature=***",
    ),
    "dalle3-azure-sas": (
        dalle3_url(f"https://a.blob.core.windows.net/c/a.png?sv=2021&se=2030&sig={SIGNATURE}"),
        "a.png?sv=2021&se=2030&sig=***",
    ),
    "dalle3-oauth-fragment": (dalle3_url(f"https://cdn.example/a.png#access_token={SIGNATURE}"), "#access_token=***"),
    "dalle3-protocol-relative-gcs": (
        dalle3_url(f"//storage.googleapis.com/b/a.png?X-Goog-Signature={SIGNATURE}&X-Goog-Expires=60"),
        "a.png?X-Goog-Signature=***&X-Goog-Expires=60",
    ),
    "openprompts-api-key-and-token": (
        openprompts_uri(f"https://api.example/v1/img?key={SIGNATURE}&page=2&token={SIGNATURE[::-1]}"),
        "img?key=***&page=2&token=***",
    ),
}


@pytest.mark.parametrize("row", sorted(SIGNED_URLS))
def test_a_signed_urls_signature_in_source_metadata_never_reaches_a_file(tmp_path, monkeypatch, capfd, row):
    make, redacted = SIGNED_URLS[row]
    result, _ = ingest(tmp_path, make(tmp_path), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    [meta] = pq.read_table(tmp_path / "out" / "s.parquet")["meta"].to_pylist()
    assert redacted in meta, meta  # the row is kept, its URL names its object still
    for path in (tmp_path / "out").iterdir():
        data = path.read_bytes()
        assert SIGNATURE.encode() not in data and SIGNATURE[::-1].encode() not in data, path
