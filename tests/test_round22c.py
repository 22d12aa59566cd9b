"""Round 22c: the breaks this hostile round found in the network side of the tools (synthesize, caption,
publish, pr-comment-post, tag against loopback servers), one table per class; every row failed before its fix:

1. A proxy's credential echoed by the proxy reached a tool's line: urllib sends `https_proxy=http://user:PASSWORD@proxy`
   as Proxy-Authorization, and a 407 quoting it (as is, upper-cased, reversed, the Basic header) was printed whole by
   pr-comment-post, whose GitHub client redacted its token only; httpx (publish's client) sends a proxy URL's user
   alone (`http://TOKEN@proxy`) as Basic `TOKEN:`, and only passwords were redacted. Both clients now redact what
   key_redaction.proxy_credentials finds (a password, or a user where there is none), as the chat client does.
2. publish slept as long as the Hub asked: huggingface_hub's retries sleep a 429 or 5xx's `Retry-After` (or a 429's
   RateLimit reset) whatever it says, silently (its warnings are off), so `Retry-After: 99999` held publish for a day
   and 400 digits were `int too large to convert to float`. A wait over hub_http.MAX_HUB_WAIT_S (60 s) is one line at
   once; a shorter one is still waited out and retried.
3. A URL publish reads from the environment carried a secret to its error line: HF_ENDPOINT with `?api_key=...` or
   `#token=...` (the client appends each path after it, and quoted every request's URL in its errors), a proxy
   variable with a secret where its port goes (httpx: `Invalid port: '...'`, round 21's known gap). Each is one line
   naming the variable before any request, never its value (import_env._hub_endpoint, hub_http.check_proxy_variables).
4. pr-comment-post followed a same-origin redirect to `http://user:TOKEN@host/...`: urllib takes the whole
   `user:TOKEN@host` as the host's name, so the token went to the name resolver. A redirect to a URL with a user part
   is refused, as one to another origin is.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest

from helpers import REPO, Loopback, env
from scripts.lib.errors import DataError

pytestmark = pytest.mark.usefixtures("no_proxy")

GH_TOKEN = "ghp_R22cLOOPBACKtoken0123456789abcdEF"
HF_TOKEN = "hf_R22cLOOPBACKtoken0123456789abcdEF"
SECRET = "Zq8Rw2Lx5Vn7Kc3Hb9Tm"  # mixed case, letters and digits: no 8 characters of it occur by chance


def pieces(secret: str) -> set[str]:
    """Every 8-character piece of `secret`, as written and reversed, lower-cased."""
    return {part[i : i + 8].lower() for part in (secret, secret[::-1]) for i in range(len(part) - 7)}


def shows(text: str, secret: str) -> bool:
    return any(piece in text.lower() for piece in pieces(secret))


# ---------------------------------------------------------------- 1. a proxy's password echoed to pr-comment-post

PROXY_PASSWORD = f"Proxy-{SECRET}"
PROXY_ECHOES = {  # what the proxy's 407 quotes of the Proxy-Authorization it got (`Basic base64(me:PASSWORD)`)
    "the-password-as-is": lambda basic, plain: plain,
    "upper-cased": lambda basic, plain: plain.upper(),
    "reversed": lambda basic, plain: plain[::-1],
    "the-basic-header": lambda basic, plain: basic,
}


def echoing_proxy(echo) -> Loopback:
    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            basic = self.headers.get("Proxy-Authorization", "")
            plain = base64.b64decode(basic.split()[-1]).decode() if basic else ""
            said = echo(basic, plain)
            raw = json.dumps({"message": f"proxy refused {said}"}).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(407, f"Proxy {said}")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        do_POST = do_PATCH = do_GET

    return Loopback(Proxy)


@pytest.mark.parametrize("case", sorted(PROXY_ECHOES))
def test_a_proxys_password_echoed_never_reaches_pr_comment_posts_line(monkeypatch, case):
    from scripts.tools.github_client import GitHub

    proxy = echoing_proxy(PROXY_ECHOES[case])
    try:
        monkeypatch.setenv("http_proxy", f"http://me:{PROXY_PASSWORD}@127.0.0.1:{proxy.httpd.server_address[1]}")
        with pytest.raises(DataError) as caught:  # GITHUB_API_URL on loopback, reached through the proxy
            GitHub("o/r", GH_TOKEN, "http://127.0.0.1:9", deadline_s=10).request("GET", "/user")
    finally:
        proxy.close()
    line = str(caught.value)
    assert "HTTP 407" in line, line  # the proxy was asked, and answered
    assert not shows(line, PROXY_PASSWORD), line
    assert base64.b64encode(f"me:{PROXY_PASSWORD}".encode()).decode()[4:20] not in line, line


PROXY_USER = f"Proxy{SECRET}token"  # a proxy whose credential is its URL's user alone: `http://TOKEN@proxy`


@pytest.mark.parametrize("case", sorted(PROXY_ECHOES))
def test_a_proxys_user_alone_echoed_never_reaches_publishs_line(tmp_path, monkeypatch, case):
    """httpx (publish's client) sends a proxy URL's user without a password as Basic `USER:`; urllib sends none."""
    from scripts.tools.publish import upload

    proxy = echoing_proxy(PROXY_ECHOES[case])
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://{PROXY_USER}@127.0.0.1:{proxy.httpd.server_address[1]}")
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # reached through the proxy
        (tmp_path / "hub").mkdir()
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        proxy.close()
    line = str(caught.value)
    assert "407" in line, line
    assert not shows(line, PROXY_USER), line
    assert base64.b64encode(f"{PROXY_USER}:".encode()).decode()[4:20] not in line, line


# ---------------------------------------------------------------- 2. the waits the Hub asks publish for

WAITS = {  # status, headers: huggingface_hub slept what they say (a day and more), or failed on its float()
    "503-retry-after-a-day": (503, {"Retry-After": "99999"}),
    "429-ratelimit-reset-a-day": (429, {"RateLimit": '"api";r=0;t=86400'}),
    "429-retry-after-of-400-digits": (429, {"Retry-After": "9" * 400}),
    "502-retry-after-an-hour": (502, {"Retry-After": "3600"}),
}


def answering(status: int, headers: dict) -> Loopback:
    class Hub(BaseHTTPRequestHandler):
        asked = 0

        def log_message(self, *args):
            pass

        def do_POST(self):
            type(self).asked += 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "2"}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"{}")

    return Loopback(Hub)


@pytest.fixture
def hub_sleeps(monkeypatch):
    """huggingface_hub's retries through publish's client; its sleeps recorded, not slept, and one over an hour
    fails the test at once (it is what a user would wait)."""
    import huggingface_hub.utils._http as hub_http_module
    from huggingface_hub.utils import close_session, set_client_factory

    from scripts.tools.hub_http import hub_client_factory

    slept: list[float] = []

    class Clock:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            assert seconds <= 3600, f"huggingface_hub sleeps {seconds:g} s before its retry"
            slept.append(seconds)

    monkeypatch.setattr(hub_http_module, "time", Clock())
    set_client_factory(hub_client_factory(5.0))
    yield slept
    close_session()
    set_client_factory(hub_http_module.default_client_factory)


@pytest.mark.parametrize("case", sorted(WAITS))
def test_a_wait_the_hub_asks_over_a_minute_is_one_line_at_once(hub_sleeps, case):
    from huggingface_hub.utils import http_backoff

    from scripts.tools.hub_http import hub_error

    status, headers = WAITS[case]
    hub = answering(status, headers)
    try:
        with pytest.raises(Exception) as caught:
            http_backoff("POST", f"{hub.base_url}/preupload", json={})
        asked = hub.httpd.RequestHandlerClass.asked
    finally:
        hub.close()
    line = hub_error(caught.value, [HF_TOKEN], 5.0)
    assert f"HTTP {status}: the Hub asks to wait" in line and "publish again later" in line, line
    assert (asked, hub_sleeps) == (1, []), (asked, hub_sleeps)


def test_a_wait_under_a_minute_is_still_waited_out_and_retried(hub_sleeps):
    from huggingface_hub.utils import http_backoff

    hub = answering(503, {"Retry-After": "30"})
    try:
        with pytest.raises(Exception, match="503"):
            http_backoff("POST", f"{hub.base_url}/preupload", json={}, max_retries=2)
        asked = hub.httpd.RequestHandlerClass.asked
    finally:
        hub.close()
    assert (asked, hub_sleeps) == (3, [31.0, 31.0]), (asked, hub_sleeps)


# ---------------------------------------------------------------- 3. URLs from the environment, checked first

ENVIRONMENT_URLS = {  # variable, value ({hub}: the loopback Hub's host:port): the secret reached the line
    "endpoint-with-an-api-key-query": ("HF_ENDPOINT", f"http://{{hub}}/?api_key={SECRET}"),
    "endpoint-with-a-token-fragment": ("HF_ENDPOINT", f"http://{{hub}}#token={SECRET}"),
    "endpoint-with-a-signed-query": ("HF_ENDPOINT", f"http://{{hub}}?sig={SECRET}"),
    "https-proxy-port-a-secret": ("HTTPS_PROXY", f"http://me:pw@127.0.0.1:{SECRET}"),
    "lower-case-http-proxy-port-a-secret": ("http_proxy", f"127.0.0.1:{SECRET}"),
    "all-proxy-port-a-secret": ("ALL_PROXY", f"http://127.0.0.1:{SECRET}/"),
}


@pytest.mark.parametrize("case", sorted(ENVIRONMENT_URLS))
def test_a_url_publish_reads_from_the_environment_is_checked_before_any_request(tmp_path, monkeypatch, case):
    """In process: the import-time check the command runs (huggingface_hub is imported already here), then the
    upload itself against a loopback Hub that would answer every request with a 404 quoting its URL."""
    from test_publish import FakeHub

    from scripts.lib.import_env import check_variables
    from scripts.tools.publish import upload

    name, value = ENVIRONMENT_URLS[case]
    hub = Loopback(type("Hub", (FakeHub,), {"requests": [], "files": {}}))
    try:
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", hub.base_url.removesuffix("/v1"))
        monkeypatch.setenv(name, value.format(hub=hub.base_url.removeprefix("http://").removesuffix("/v1")))
        (tmp_path / "hub").mkdir()
        with pytest.raises(DataError) as caught:
            check_variables("huggingface_hub")
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
        asked = hub.httpd.RequestHandlerClass.requests
    finally:
        hub.close()
    line = str(caught.value)
    assert line.startswith(f"{name}: "), line
    assert not shows(line, SECRET), line
    assert asked == [], asked


@pytest.mark.slow
@pytest.mark.parametrize("case", ["endpoint-with-an-api-key-query", "https-proxy-port-a-secret"])
def test_the_real_publish_refuses_such_a_url_in_one_line(tmp_path, case):
    from test_publish import tiny_release
    from test_round8_publish import STUB

    name, value = ENVIRONMENT_URLS[case]
    root = tiny_release(tmp_path / "repo")
    environ = {k: v for k, v in env().items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    environ.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), HF_TOKEN=HF_TOKEN, NO_PROXY="127.0.0.1")
    environ.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_DISABLE_TELEMETRY="1")
    environ[name] = value.format(hub="127.0.0.1:9")
    result = subprocess.run(
        [sys.executable, "-c", STUB, "publish", "v2", "--repo-id", "a/b", "--out", "hub"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {name}: "), lines[0]
    assert not shows(result.stdout + result.stderr, SECRET), result.stderr


# ---------------------------------------------------------------- 4. a redirect to a URL with a user part


REDIRECTS_WITH_A_USER = {  # Location on the API's own origin ({host}), with a user part
    "user-and-token": "http://me:{token}@{host}/repos/o/r/x",
    "token-as-the-user": "http://{token}@{host}/repos/o/r/x",
    "token-as-a-password-alone": "http://:{token}@{host}/repos/o/r/x",
    "scheme-relative": "//me:{token}@{host}/repos/o/r/x",
}


@pytest.mark.parametrize("case", sorted(REDIRECTS_WITH_A_USER))
def test_a_redirect_to_a_url_with_a_user_part_is_not_followed(case):
    from scripts.tools.github_client import GitHub

    class Api(BaseHTTPRequestHandler):
        paths: ClassVar[list[str]] = []

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.paths.append(self.path)
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            where = REDIRECTS_WITH_A_USER[case].format(token=token, host=self.headers["Host"])
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(302)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

    api = Loopback(Api)
    try:
        with pytest.raises(DataError) as caught:
            GitHub("o/r", GH_TOKEN, api.base_url.removesuffix("/v1"), deadline_s=10).request("GET", "/user")
    finally:
        api.close()
    line = str(caught.value)
    assert "redirects to a URL with a user part" in line, line
    assert not shows(line, GH_TOKEN), line
    assert Api.paths == ["/user"], Api.paths
