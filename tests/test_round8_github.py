"""The eighth hostile round's breaks of pr-comment-post's GitHub client and pr-comment's links; every row
failed before its fix. Each runs the real command against a loopback fake of GitHub's REST API.

01 a reply that is HTML, a dict for a list, `[null]`, 100k-deep JSON, a 5000-digit int, a comment of ours
   without `id`, a PR without head.sha, a ref without object.sha: a traceback
02 a reply with no end and no Content-Length: read into memory until it ran out
03 a redirect to another origin: followed, the token sent there
04 a server trickling bytes: no overall deadline
05 every page full of comments: paged forever
06 the token echoed in the reason phrase, head.sha or html_url (any case, reversed): printed
07 a token with a newline, a space or non-ASCII, a repository that is not owner/name: a traceback or the token
08 the body a FIFO, /dev/zero, 3 GB or not UTF-8; --pr-from `²`, 3 GB or a FIFO; --pr 0 or -1
14 pr-comment --run-url with user:token@, a non-http scheme, a newline or `)`: written into the comment
20 GITHUB_API_URL file:// or data:: local text read as the API's replies
24 another user's comment quoting our marker: edited as ours
26 --assets holding a 3 GB sparse sheet, a FIFO or a link to /dev/zero: read whole, or hung
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.repos import env
from helpers.tiers import fast_first

TOKEN = "ghp_SECRETtoken1234567890abcdefABCDEF"
MARKER = "<!-- t2i-dataset-diff -->"
OURS = {"login": "github-actions[bot]", "type": "Bot"}
SHA = "d" * 40
MEMORY_LIMIT = 2 << 30  # a reply or file read whole fails here fast instead of filling the machine


# --- the fake API -----------------------------------------------------------------------------------


def normal(method: str, path: str, token: str):
    """GitHub as it answers: (status, reason, body) or a callable streaming its own reply."""
    if path == "/user":
        return 403, None, {"message": "Resource not accessible by integration"}
    if method == "GET" and "/comments" in path:
        return 200, None, []
    if method == "GET" and "/pulls/" in path:
        return 200, None, {"head": {"sha": "abc"}}
    if "/git/ref/" in path:
        return 404, None, {"message": "Not Found"}
    if "/git/" in path:
        return 201, None, {"sha": SHA}
    return 201, None, {"id": 1, "html_url": "https://github.example/o/r/pull/1#c1"}


def on(match: str, answer, method: str | None = None):
    """`normal`, but `answer(token)` for requests whose path holds `match` (and of `method`)."""

    def route(m: str, path: str, token: str):
        if match in path and method in (None, m):
            return answer(token)
        return normal(m, path, token)

    return route


class FakeGitHub:
    def __init__(self, route=normal):
        self.requests: list[tuple[str, str, str]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                requests.append((self.command, self.path, body.decode(errors="replace")))
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                answer = route(self.command, self.path, token)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    if callable(answer):
                        answer(self)
                    else:
                        self.reply(*answer)

            def reply(self, status, reason, payload, headers=None):
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status, reason)
                for name, value in {"Content-Length": str(len(raw)), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = handle_one

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def github(request):
    servers: list[FakeGitHub] = []

    def start(route=normal) -> FakeGitHub:
        servers.append(FakeGitHub(route))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- running the command ------------------------------------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def post(tmp_path: Path, api: str, *args, timeout: float = 60, **environ):
    """`pr-comment-post BODY --pr 1 ARGS` against `api`, BODY a comment with the marker."""
    body_file = tmp_path / "body.md"
    body_file.write_text(f"{MARKER}\nhello\n", encoding="utf-8")
    return run_post([str(body_file), "--pr", "1", *args], api, timeout, **environ)


def run_post(argv: list[str], api: str, timeout: float = 60, **environ):
    variables = {**env(), "GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": api}
    variables.update({"NO_PROXY": "*", "OPENBLAS_NUM_THREADS": "1", **environ})
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        variables.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "scripts", "pr-comment-post", *argv],
        cwd=Path(__file__).resolve().parents[1],
        env=variables,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


def shows_token(text: str, token: str = TOKEN) -> bool:
    low = text.lower()
    return token.lower() in low or token[::-1].lower() in low or token[4:20].lower() in low


def one_error_line(result, match: str = "") -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0], lines[0]
    assert not shows_token(result.stdout + result.stderr)
    return lines[0]


# --- 01 malformed replies ---------------------------------------------------------------------------

MALFORMED = {
    "html comments": ("/comments", (200, None, b"<html>hello</html>"), []),
    "a dict for the comment list": ("/comments", (200, None, {"message": "hi"}), []),
    "a list of null": ("/comments", (200, None, [None]), []),
    "100k-deep JSON": ("/comments", (200, None, b"[" * 100_000 + b"]" * 100_000), []),
    "a 5000-digit int": ("/comments", (200, None, b"[" + b"1" * 5000 + b"]"), []),
    "our comment without id": ("/comments", (200, None, [{"body": MARKER, "user": OURS}]), []),
    "a PR without head.sha": ("/pulls/", (200, None, {"head": "str"}), ["--head-sha", "abc"]),
    "a ref without object.sha": ("/git/ref/", (200, None, {"object": None}), ["--assets", "SHEETS"]),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_reply_is_one_line(tmp_path, github, case):
    match, answer, args = case
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "base-v2.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
    args = [str(tmp_path / "sheets") if a == "SHEETS" else a for a in args]
    server = github(on(match, lambda token: answer, "GET"))
    one_error_line(post(tmp_path, server.url, *args), "GitHub API")


# --- 02 a reply with no end -----------------------------------------------------------------------


def endless(prefix: bytes, headers: dict):
    def stream(handler) -> None:
        handler.send_response(200)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(prefix)
        chunk = b" " * (1 << 20)
        while True:
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if headers else chunk)

    return lambda token: stream


ENDLESS = {
    "comments, no length": ("/comments", endless(b"[", {})),
    "pull request, no length": ("/pulls/", endless(b"{", {})),
    "comments, chunked": ("/comments", endless(b"", {"Transfer-Encoding": "chunked"})),
}


@pytest.mark.parametrize("case", ENDLESS.values(), ids=ENDLESS.keys())
def test_a_reply_with_no_end_is_cut_at_a_cap(tmp_path, github, case):
    match, answer = case
    server = github(on(match, answer, "GET"))
    one_error_line(post(tmp_path, server.url, "--head-sha", "abc"), "larger than")


# --- 03 redirects -------------------------------------------------------------------------------------

REDIRECTS = {"301": 301, "302": 302, "307": 307, "308": 308}


@pytest.mark.parametrize("status", REDIRECTS.values(), ids=REDIRECTS.keys())
def test_no_redirect_takes_the_token_to_another_origin(tmp_path, github, status):
    other = github()
    other_url = other.url.replace("127.0.0.1", "localhost")

    def redirect(method, path, token):
        return status, None, b"", {"Location": f"{other_url}{path}"}

    first = github(redirect)
    one_error_line(post(tmp_path, first.url), "redirects to http://localhost:")
    assert other.requests == []


# --- 04 a server that trickles ------------------------------------------------------------------------


def trickle(head: bytes, body_bytes: int):
    def stream(handler) -> None:
        for byte in head:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.2 if body_bytes else 0.5)
        for _ in range(body_bytes):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.5)

    return lambda token: stream


TRICKLES = {
    "the body, a byte at a time": trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 1000),
    "the status line, a byte at a time": trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", 0),
    "chunks, a byte at a time": trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n", 1000),
}


@pytest.mark.parametrize("answer", TRICKLES.values(), ids=TRICKLES.keys())
def test_one_request_ends_at_its_deadline(tmp_path, github, answer):
    server = github(on("/comments", answer, "GET"))
    started = time.monotonic()
    one_error_line(post(tmp_path, server.url, "--timeout", "2", timeout=30), "no answer within 2s")
    assert time.monotonic() - started < 15


# --- 05 pages without end -----------------------------------------------------------------------------

PAGES = {
    "comments of nobody": [{"id": i, "body": "x"} for i in range(1, 101)],
    "others quoting the marker": [{"id": i, "body": MARKER, "user": {"login": "alice"}} for i in range(1, 101)],
    "ours without the marker": [{"id": i, "body": "x", "user": OURS} for i in range(1, 101)],
}


@pytest.mark.parametrize("page", PAGES.values(), ids=PAGES.keys())
def test_comment_pages_are_read_up_to_a_cap(tmp_path, github, page):
    server = github(on("/comments", lambda token: (200, None, page), "GET"))
    one_error_line(post(tmp_path, server.url, timeout=40), "more than 5000 comments")
    assert len(server.requests) <= 52


# --- 06 the token echoed back ------------------------------------------------------------------------


def reason(echo):
    return "/comments", lambda t: (403, f"Bad credentials {echo(t)}", {"message": "x"}), []


def html_url(echo):
    return "/comments", lambda t: (201, None, {"id": 1, "html_url": f"https://x/1?t={echo(t)}"}), []


HEAD_SHA_SWAPPED = ("/pulls/", lambda t: (200, None, {"head": {"sha": t.swapcase()}}), ["--head-sha", "a"])

ECHOES = {  # (route, no numpy: the post job installs typer alone, redaction's own loop)
    "reason phrase as is": (reason(str), False),
    "reason phrase upper-cased": (reason(str.upper), False),
    "reason phrase reversed": (reason(lambda t: t[::-1]), False),
    "head.sha case swapped": (HEAD_SHA_SWAPPED, False),
    "html_url": (html_url(str), False),
    "html_url upper-cased": (html_url(str.upper), False),
    "html_url, no numpy": (html_url(str), True),
    "reason phrase reversed, no numpy": (reason(lambda t: t[::-1]), True),
    "head.sha case swapped, no numpy": (HEAD_SHA_SWAPPED, True),
}


@pytest.mark.parametrize("case", ECHOES.values(), ids=ECHOES.keys())
def test_the_token_echoed_back_is_never_printed(tmp_path, github, case):
    (match, answer, args), no_numpy = case
    method = "GET" if match == "/pulls/" or answer(TOKEN)[0] == 403 else "POST"
    environ = {}
    if no_numpy:  # a numpy that cannot be imported, as where only typer is installed
        (tmp_path / "nonumpy" / "numpy").mkdir(parents=True)
        (tmp_path / "nonumpy" / "numpy" / "__init__.py").write_text("raise ImportError('not installed')\n")
        environ = {"PYTHONPATH": f"{tmp_path / 'nonumpy'}{os.pathsep}{env().get('PYTHONPATH', '')}"}
    server = github(on(match, answer, method))
    result = post(tmp_path, server.url, *args, **environ)
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr, result.stderr
    assert not shows_token(result.stdout + result.stderr), result.stdout + result.stderr


# --- 07 the environment -------------------------------------------------------------------------------

ENVIRONMENTS = {
    "token with a newline": {"GITHUB_TOKEN": "ghp_SECRETabc123456789\nX: y"},
    "token with a non-latin-1 character": {"GITHUB_TOKEN": "ghp_SECRET\u2603abc123456789"},
    "token with a space": {"GITHUB_TOKEN": "ghp_SECRET abc123456789"},
    "repository with a space": {"GITHUB_REPOSITORY": "o/r x"},
    "repository climbing out": {"GITHUB_REPOSITORY": "o/../../user"},
    "repository of three parts": {"GITHUB_REPOSITORY": "o/r/x"},
}


@pytest.mark.parametrize("environ", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_token_and_repository_are_checked_before_use(tmp_path, github, environ):
    server = github()
    line = one_error_line(post(tmp_path, server.url, **environ), "GITHUB_")
    token = environ.get("GITHUB_TOKEN", TOKEN)
    assert "SECRET" not in line and not shows_token(line, token)
    assert server.requests == []


# --- 08 the command's own inputs ------------------------------------------------------------------------


def fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def sparse(path: Path) -> str:
    with open(path, "wb") as f:
        f.truncate(3 << 30)
    return str(path)


def holding(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def body(make):
    return lambda tmp: [make(tmp / "in"), "--pr", "1"]


def pr_from(make):
    return lambda tmp: [str(tmp / "body.md"), "--pr-from", make(tmp / "in")]


INPUTS = {
    "body a FIFO": (body(fifo), "not a regular file"),
    "body /dev/zero": (body(lambda p: "/dev/zero"), "not a regular file"),
    "body 3 GB sparse": (body(sparse), "bytes, over"),
    "body not UTF-8": (body(lambda p: holding(p, MARKER.encode() + b"\xff\n")), "not UTF-8"),
    "--pr-from holding ²": (pr_from(lambda p: holding(p, "²".encode())), "expected a pull request number"),
    "--pr-from 3 GB sparse": (pr_from(sparse), "bytes, over"),
    "--pr-from a FIFO": (pr_from(fifo), "not a regular file"),
    "--pr-from holding 0": (pr_from(lambda p: holding(p, b"0\n")), "expected a pull request number"),
    "--pr -1": (lambda tmp: [str(tmp / "body.md"), "--pr", "-1"], "--pr"),
    "--pr 0": (lambda tmp: [str(tmp / "body.md"), "--pr", "0"], "--pr"),
}


@pytest.mark.parametrize("case", INPUTS.values(), ids=INPUTS.keys())
def test_local_inputs_are_read_bounded(tmp_path, github, case):
    make, match = case
    (tmp_path / "body.md").write_text(f"{MARKER}\nhello\n", encoding="utf-8")
    server = github()
    one_error_line(run_post(make(tmp_path), server.url, timeout=30), match)
    assert server.requests == []


# --- 20 GITHUB_API_URL -----------------------------------------------------------------------------------


def file_tree(tmp: Path) -> str:
    api = tmp / "api"
    (api / "repos/o/r/issues/1").mkdir(parents=True)
    (api / "repos/o/r/pulls").mkdir(parents=True)
    (api / "repos/o/r/issues/1/comments?per_page=100&page=1").write_text("[]")
    (api / "repos/o/r/issues/1/comments").write_text('{"id": 7, "html_url": "read from a local file"}')
    (api / "repos/o/r/pulls/1").write_text('{"head": {"sha": "abc"}}')
    (api / "user").write_text('{"login": "me"}')
    return f"file://{api}"


API_URLS = {
    "file://": (file_tree, []),
    "file:// with --head-sha": (file_tree, ["--head-sha", "abc"]),
    "data:": (lambda tmp: "data:application/json,[]", []),
}


@pytest.mark.parametrize("case", API_URLS.values(), ids=API_URLS.keys())
def test_the_api_is_https_or_loopback_http_only(tmp_path, case):
    make, args = case
    one_error_line(post(tmp_path, make(tmp_path), *args), "GITHUB_API_URL")


# --- 24 whose comment is edited ------------------------------------------------------------------------

OTHERS = {
    "a member quoting the marker": {"login": "alice", "type": "User"},
    "another bot": {"login": "dependabot[bot]", "type": "Bot"},
    "no author": None,
    "ours, quoting it mid-text (round 10)": OURS,  # a comment not written by pr-comment: it starts otherwise
}


@pytest.mark.parametrize("user", OTHERS.values(), ids=OTHERS.keys())
def test_only_our_own_comment_is_edited(tmp_path, github, user):
    comment = {"id": 5, "body": f"please fix the captions\n\n(quoting the bot: {MARKER})"}
    page = [{**comment, "user": user}] if user else [comment]
    server = github(on("/comments", lambda token: (200, None, page), "GET"))
    result = post(tmp_path, server.url)
    assert result.returncode == 0, result.stderr
    assert not [r for r in server.requests if r[0] == "PATCH"]
    assert [r[1] for r in server.requests if r[0] == "POST" and "graphql" not in r[1]] == [
        "/repos/o/r/issues/1/comments"
    ]


APP_TOKENS = {  # (GraphQL's viewer login, the API's path prefix, the comment's author, whether it is ours)
    "an app's slug": ("t2i-diff", "", {"login": "t2i-diff[bot]", "type": "Bot"}, True),
    "an app's slug[bot]": ("t2i-diff[bot]", "", {"login": "t2i-diff[bot]", "type": "Bot"}, True),
    "Enterprise's /api/graphql": ("t2i-diff", "/api/v3", {"login": "t2i-diff[bot]", "type": "Bot"}, True),
    "a person named as the app": ("t2i-diff", "", {"login": "t2i-diff", "type": "User"}, False),
    "another app": ("t2i-diff", "", {"login": "other-app[bot]", "type": "Bot"}, False),
}


@pytest.mark.parametrize("case", APP_TOKENS.values(), ids=APP_TOKENS.keys())
def test_an_apps_comment_is_found_by_who_graphql_says_the_token_is(tmp_path, github, case):
    """An app's installation token may not read GET /user: its comment (by `slug[bot]`) was taken for
    another's, and every run posted one more. GraphQL's viewer names the app; a person or another bot of
    that name keeps their comment."""
    viewer, prefix, user, ours = case
    page = [{"id": 5, "body": f"{MARKER}\nold", "user": user}]

    def route(method: str, path: str, token: str):
        if path == prefix.removesuffix("/v3") + "/graphql":
            return 200, None, {"data": {"viewer": {"login": viewer}}}
        if path.startswith(f"{prefix}/repos/o/r/issues/1/comments") and method == "GET":
            return 200, None, page
        return normal(method, path, token)

    server = github(route)
    result = post(tmp_path, server.url + prefix)
    assert result.returncode == 0, result.stderr
    edited = [r[1] for r in server.requests if r[0] == "PATCH"]
    posted = [r[1] for r in server.requests if r[0] == "POST" and not r[1].endswith("/graphql")]
    assert (edited, posted) == (
        ([f"{prefix}/repos/o/r/issues/comments/5"], []) if ours else ([], [f"{prefix}/repos/o/r/issues/1/comments"])
    )


# --- 26 the sheets ---------------------------------------------------------------------------------------

SHEETS = {
    "a 3 GB sparse sheet": (sparse, "bytes, over"),
    "a FIFO named as a sheet": (fifo, "not a regular file"),
    "a link to /dev/zero": (lambda p: p.symlink_to("/dev/zero"), "symbolic link"),
}


@pytest.mark.parametrize("case", SHEETS.values(), ids=SHEETS.keys())
def test_sheets_are_sized_before_they_are_read(tmp_path, github, case):
    make, match = case
    (tmp_path / "sheets").mkdir()
    make(tmp_path / "sheets" / "base-v2.jpg")
    server = github()
    one_error_line(post(tmp_path, server.url, "--assets", str(tmp_path / "sheets"), timeout=30), match)
    assert not [r for r in server.requests if r[0] in ("POST", "PATCH")]


# --- 14 links written into the comment -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> Path:
    """A git repository with DVC and no release: pr-comment writes a short comment with its run link."""
    root = tmp_path_factory.mktemp("repo")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env(), timeout=120)
    (root / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "-m", "base"], cwd=root, check=True, timeout=60)
    return root


RUN_URLS = {
    "a token in user:password@": ("https://u:ghp_RUNURLsecret1234567890@github.example/o/r/actions/runs/1", 0),
    "a token as the user": ("https://ghp_RUNURLsecret1234567890@github.example/o/r/actions/runs/1", 0),
    "a token in the query (round 9)": ("https://github.example/o/r/actions/runs/1?token=ghp_RUNURLsecret1234567890", 0),
    "a token in the fragment (round 9)": ("https://github.example/o/r/actions/runs/1#ghp_RUNURLsecret1234567890", 0),
    "an AWS key id in the query (round 9)": (
        "https://github.example/o/r/actions/runs/1?sig=AKIAIOSFODNN7EXAMPLE&a=1",
        0,
    ),
    "javascript:": ("javascript:alert(1)", 2),
    "a newline that starts a heading": ("https://github.example/run\n\n# injected", 2),
    "a ) that ends the link": ("https://github.example/run) ![x](https://evil.example/x.png", 2),
}


@pytest.mark.parametrize("case", fast_first(RUN_URLS.values(), keep=2), ids=RUN_URLS.keys())
def test_pr_comment_writes_only_plain_public_links(dvc_repo, tmp_path, monkeypatch, case):
    url, code = case
    monkeypatch.chdir(dvc_repo)
    argv = ["pr-comment", "HEAD", "workspace", "--out", str(tmp_path / "o"), "--run-url", url]
    result = subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=dvc_repo,
        env={**env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if code == 2:
        one_error_line(result, "--run-url")
        assert not (tmp_path / "o" / "comment.md").exists()
        return
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "o" / "comment.md").read_text(encoding="utf-8")
    assert "ghp_" not in comment and "AKIA" not in comment and "https://github.example/o/r/actions/runs/1" in comment


BEFORE_ANY_REQUEST = {
    "a sheet that is no JPEG": (lambda p: p.write_bytes(b"GIF89a" + b"\0" * 64), "not a contact sheet"),
    "a FIFO named as a sheet": (fifo, "not a regular file"),
    "a file pr-comment does not name": (lambda p: p.with_name("notes.txt").write_text("x"), "not a contact sheet"),
}


@pytest.mark.parametrize("case", BEFORE_ANY_REQUEST.values(), ids=BEFORE_ANY_REQUEST.keys())
def test_sheets_are_checked_before_the_first_request(tmp_path, github, case):
    """With --head-sha the PR's head is asked for first; a bad sheet is refused before that request."""
    make, match = case
    (tmp_path / "sheets").mkdir()
    make(tmp_path / "sheets" / "head-v2.jpg")
    server = github()
    one_error_line(post(tmp_path, server.url, "--head-sha", "a" * 40, "--assets", str(tmp_path / "sheets")), match)
    assert server.requests == []
