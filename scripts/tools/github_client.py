"""pr-comment-post's GitHub REST client and the inputs it reads, each bounded and checked.

- Requests go through scripts/lib/deadline_http.py, as the chat client's do: one deadline for the whole
  request (connect, send, headers, body; a server trickling a byte at a time ends there), a byte cap on
  every reply, only http(s) handlers (no file://, ftp://, data:), and no redirect to another origin:
  the token goes to GITHUB_API_URL's origin only. A same-origin redirect (a renamed repository) is
  followed a few times.
- GITHUB_API_URL is https, or http to a loopback address (the tests' fake API); the token is one
  printable-ASCII header value; the repository is `owner/name` in GitHub's characters.
- Every reply is parsed with the depth-bounded JSON loader and shape-checked; commit shas and comment
  ids are checked before they go into a path. The comment list is read MAX_PAGES pages at most.
- Every error is one line with the token redacted (scripts/lib/key_redaction.py: in any case,
  reversed, encoded), and so is whatever the server sent that is printed (the comment's URL, a sha);
  so is a proxy's password (urllib sends it as Proxy-Authorization, and a proxy's 407 may echo it).
  A request whose body holds the token (holds_key; an image's bytes: as is or reversed, any case) is
  refused before it is sent: the comment is public.
- Local inputs (the body, --pr-from, the sheets) are read only when regular files and never past a
  cap, so a FIFO, a device or a huge file is one line.

Standard library and scripts.lib modules that need nothing else only: the post job installs typer alone
(scripts/lib/io.py imports PyYAML, hence the small reader here).
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import os
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scripts.lib.deadline_http import (
    DeadlineHTTPHandler,
    DeadlineHTTPSHandler,
    MalformedReply,
    read_error_start,
    read_promised,
    received_part,
)
from scripts.lib.errors import DataError, os_reason, shown
from scripts.lib.key_redaction import holds_key, redact_secrets
from scripts.lib.nesting import loads_json

DEFAULT_API = "https://api.github.com"
REQUEST_DEADLINE_S = 60.0  # per request, everything included
MAX_REPLY_BYTES = 32 << 20  # a page of 100 comments of 65,536 characters each, with room
MAX_ERROR_BYTES = 64 << 10
MAX_REDIRECTS = 3  # same-origin only
PER_PAGE, MAX_PAGES = 100, 50  # 5,000 comments: no pull request has more; a server paging forever stops
ACTIONS_BOT = "github-actions[bot]"  # GITHUB_TOKEN's author: GET /user refuses an app's token
GRAPHQL = "/graphql"  # the GraphQL endpoint: {api}/graphql, or {host}/api/graphql beside Enterprise's /api/v3
VIEWER = {"query": "query { viewer { login } }"}  # who the token is: an app's installation token too
MAX_TOKEN_CHARS = 1024
MAX_LINE_CHARS = 2000  # what is printed of the server's text

REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+")  # RFC 3986 without ( ) [ ]: they end a Markdown link


# --- what the environment and the options give ---------------------------------------------------


def token_from_env() -> str:
    """GITHUB_TOKEN, else GH_TOKEN: one header value of printable ASCII (never printed)."""
    name = "GITHUB_TOKEN" if os.environ.get("GITHUB_TOKEN") else "GH_TOKEN"
    token = os.environ.get(name) or ""
    if not token:
        raise DataError("GITHUB_TOKEN (or GH_TOKEN) and GITHUB_REPOSITORY must be set")
    if len(token) > MAX_TOKEN_CHARS or not all(0x21 <= ord(char) <= 0x7E for char in token):
        raise DataError(
            f"${name}: the token holds a control character, space or non-ASCII character, or is over "
            f"{MAX_TOKEN_CHARS} characters (a trailing newline from the file it was read from?); fix the variable"
        )
    return token


def check_repository(repository: str) -> str:
    if not REPOSITORY.fullmatch(repository) or repository.split("/")[1] in (".", ".."):
        raise DataError(f"GITHUB_REPOSITORY {shown(repository[:200])!r}: not owner/name in GitHub's characters")
    return repository


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    """GITHUB_API_URL without a trailing slash: https, or http to loopback (a fake API in tests); no
    user:password@, query or fragment. Any other scheme would be read by urllib (file:// from disk)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, _port = parts.hostname or "", parts.port
    except ValueError:
        raise DataError("GITHUB_API_URL: not a URL") from None
    if parts.scheme not in ("https", "http") or not host or (parts.scheme == "http" and not _is_loopback(host)):
        raise DataError("GITHUB_API_URL: only https:// (or http:// to a loopback address) is used")
    if "@" in parts.netloc or parts.query or parts.fragment or not URL_CHARS.fullmatch(url):
        raise DataError("GITHUB_API_URL: a user:password@, query, fragment or odd character; give the bare API URL")
    return url.rstrip("/")


def check_branch(value: str, option: str) -> str:
    """A branch or folder name that goes into an API path or a tree: no `..`, no leading `/`."""
    if not BRANCH.fullmatch(value) or ".." in value or "//" in value or value.endswith(("/", ".lock")):
        raise DataError(f"{option} {shown(value[:200])!r}: not a plain branch or folder name")
    return value


def comment_link(url: str | None, option: str) -> str | None:
    """A URL written into the comment: http(s) only, its user:password@, query and fragment dropped (a
    token in any of them would be public: `?token=ghp_...`), no whitespace or character that ends a
    Markdown link. A run's or an artifact's page needs only its path."""
    if not url:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise DataError(f"{option}: not a URL") from None
    if parts.scheme not in ("http", "https") or not host or not URL_CHARS.fullmatch(url):
        raise DataError(f"{option}: an http(s) URL of plain characters only (no space, newline, ( ) [ ] < >)")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# --- local inputs ----------------------------------------------------------------------------------


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """A regular file's bytes, refused when over `cap` (checked before reading, and again by the read):
    a FIFO (the open does not wait), a device or a link is one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: a link (in an artifact, the PR's run's own data)
        reason = "a symbolic link" if exc.errno == errno.ELOOP else os_reason(exc)
        raise DataError(f"{shown(path)}: cannot read {what} ({reason})") from None
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{shown(path)}: not a regular file; refusing to read it as {what}")
        if info.st_size > cap:
            raise DataError(f"{shown(path)}: {info.st_size} bytes, over the {cap} a {what} may have")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise DataError(f"{shown(path)}: over the {cap} bytes a {what} may have")
    return data


def read_text(path: Path, cap: int, what: str) -> str:
    try:
        return read_capped(path, cap, what).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{shown(path)}: {what} is not UTF-8 text") from None


def pr_number_from(path: Path) -> int:
    """The number in the build job's pr-number file: ASCII digits (not `²`, not 5000 of them), >= 1."""
    text = read_text(path, 64, "pull request number").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) >= 1):
        raise DataError(f"{shown(path)}: expected a pull request number")
    return int(text)


# --- requests ----------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx arrives as an HTTPError: GitHub.request decides (urllib would resend the token anywhere)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _origin(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}".lower()
    except ValueError:
        return "elsewhere"


def _user_part(url: str) -> bool:
    """Whether a URL has a `user:password@` part (a URL urllib cannot split has none it would use)."""
    try:
        return "@" in urllib.parse.urlsplit(url).netloc
    except ValueError:
        return False


def _opener(deadline: float) -> urllib.request.OpenerDirector:
    """http(s) only (build_opener would add file://, ftp:// and data: handlers), no redirect followed."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        DeadlineHTTPHandler(deadline),
        DeadlineHTTPSHandler(deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        _NoRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _read_reply(stream, cap: int) -> bytes:
    """The whole body, at most `cap` bytes: a promised length over it is refused before any read, and a body
    cut short says how much came (either was "connection failed (IncompleteRead)")."""
    promised = getattr(stream, "length", None)
    if promised is not None and promised > cap:
        raise _Failed(f"a reply of {promised} bytes promised, over the {cap}-byte cap")
    try:
        data = read_promised(stream, cap + 1)
    except http.client.IncompleteRead as exc:
        more = f", {exc.expected} more promised" if exc.expected is not None else ""
        raise _Failed(
            f"connection failed (IncompleteRead): the reply was cut short ({len(exc.partial)} bytes received{more})"
        ) from None
    if len(data) > cap:
        raise _Failed(f"a reply larger than {cap} bytes")
    return data


def _error_body(exc: urllib.error.HTTPError) -> tuple[bytes, bool]:
    """The start of an error reply's body and whether it was read whole (read_error_start: a body that stalls
    or breaks gives the part received); any other failure to read it is (b"", False), the status alone still a
    clear error: these escaped the except clauses around it as a traceback."""
    try:
        return read_error_start(exc, MAX_ERROR_BYTES)
    except Exception:
        return b"", False


class _Failed(Exception):
    """One request failed; the text (not yet redacted) goes into the one line."""


class GitHub:
    def __init__(self, repository: str, token: str, api: str = DEFAULT_API, deadline_s: float = REQUEST_DEADLINE_S):
        self.repository, self.api = check_repository(repository), check_api_url(api)
        self._token, self._deadline_s = token, deadline_s

    def repo(self, path: str) -> str:
        return f"/repos/{self.repository}{path}"

    def redacted(self, text: str) -> str:
        """A line for the terminal: the token and any proxy's password redacted (the chat and Hub clients' rule: a
        proxy's 407 quoting its Proxy-Authorization was printed whole), its length bounded (a server's sha of
        megabytes)."""
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + "…"
        return shown(redact_secrets(text, self._token))

    @staticmethod
    def comment_url(comment: Any) -> str:
        """The new comment's html_url as the server gave it (redacted when printed), else its id."""
        url = comment.get("html_url") if isinstance(comment, dict) else None
        if isinstance(url, str) and 0 < len(url) <= MAX_LINE_CHARS:
            return url
        return f"comment {comment.get('id') if isinstance(comment, dict) else '(no id)'}"

    def request(
        self, method: str, path: str, body: dict | None = None, ok: tuple[int, ...] = (), checked: bool = False
    ) -> Any:
        """The reply's JSON ({} for none); None for a status in `ok` (a 404 that means absent).
        DataError, one line, the token redacted, for anything else, and before sending a body that holds
        the token (unless `checked` by the caller)."""
        if body is not None and not checked and holds_key(json.dumps(body, ensure_ascii=False), self._token):
            raise self.holds_token(method, path)
        try:
            return self._request(method, path, body, ok)
        except _Failed as exc:
            raise DataError(self.redacted(f"GitHub API {method} {path}: {exc}")) from None

    @staticmethod
    def holds_token(method: str, path: str) -> DataError:
        """The one line for a body holding the token (a diff row quoting it, upper-cased, base64): a comment
        is public, and whoever reads the token there can act as the workflow until it expires."""
        return DataError(
            f"GitHub API {method} {path}: what would be sent holds the token (in some letter case or encoding); "
            "not sent"
        )

    def _request(self, method: str, path: str, body: dict | None, ok: tuple[int, ...]) -> Any:
        endpoint = self.api.removesuffix("/v3") + GRAPHQL if path == GRAPHQL else f"{self.api}{path}"
        url, deadline = endpoint, time.monotonic() + self._deadline_s
        data = json.dumps(body).encode() if body is not None else None
        for _ in range(MAX_REDIRECTS + 1):
            status, location, raw, whole = self._send(method, url, data, deadline)
            if status in ok:
                return None
            if 300 <= status < 400:
                url = self._redirect_target(status, url, location)
                continue
            if status >= 300:
                raise _Failed(f"HTTP {status}{_error_message(raw) if whole else received_part(raw, self._token)}")
            try:
                return loads_json(raw) if raw.strip() else {}
            except ValueError:  # TooDeep, a 5000-digit number, HTML
                raise _Failed("the reply is not JSON (or nests too deep)") from None
        raise _Failed(f"more than {MAX_REDIRECTS} redirects")

    def _redirect_target(self, status: int, url: str, location: str | None) -> str:
        target = urllib.parse.urljoin(url, location) if location else ""
        if _user_part(target):  # urllib takes `user:TOKEN@host` whole as the host's name: the resolver was asked it
            raise _Failed(f"HTTP {status} redirects to a URL with a user part; only {_origin(self.api)} gets the token")
        if not target or _origin(target) != _origin(self.api):
            where = _origin(target) if target else "nowhere"
            raise _Failed(f"HTTP {status} redirects to {where}; only {_origin(self.api)} gets the token")
        return target

    def _send(self, method: str, url: str, data: bytes | None, deadline: float) -> tuple[int, str | None, bytes, bool]:
        """(status, Location, body, whether the body is whole) of one exchange; _Failed for no answer, a reply too large, a broken one."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "t2i-datasets-pr-comment",
            **({"Content-Type": "application/json"} if data is not None else {}),
        }
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with _opener(deadline).open(request, timeout=self._deadline_s) as response:
                return response.status, None, _read_reply(response, MAX_REPLY_BYTES), True
        except urllib.error.HTTPError as exc:
            with exc:  # only the start of an error's body: its message is all that is shown
                return exc.code, exc.headers.get("Location"), *_error_body(exc)
        except _Failed:
            raise
        except MalformedReply as exc:  # our own text, no server byte; not retried: no HTTP/1.1 server sends it
            raise _Failed(f"{exc} from {_origin(url)}") from None
        except TimeoutError:
            raise _Failed(f"no answer within {self._deadline_s:g}s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Failed(f"no answer within {self._deadline_s:g}s") from None
            raise _Failed(f"connection failed ({exc.reason})") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Failed(f"connection failed ({type(exc).__name__})") from None
        except Exception as exc:  # urllib's own on what the server sent: its text is not shown
            raise _Failed(f"the request failed ({type(exc).__name__})") from None

    # --- what the replies must hold ---------------------------------------------------------------

    def field(self, reply: Any, *keys: str, what: str, pattern: re.Pattern | None = None) -> Any:
        """reply[keys[0]][keys[1]]..., a string (matching `pattern`) or an int; DataError otherwise."""
        value = reply
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        good = isinstance(value, str) and (pattern is None or pattern.fullmatch(value))
        if not good and not (pattern is None and isinstance(value, int) and not isinstance(value, bool)):
            raise DataError(f"GitHub API {what}: the reply has no {'.'.join(keys)} of the expected form")
        return value

    def head_sha(self, pr: int) -> str:
        path = self.repo(f"/pulls/{pr}")
        return self.field(self.request("GET", path), "head", "sha", what=f"GET {path}")

    def author(self) -> Callable[[Any], bool]:
        """Whether a comment's `user` is the token's: its user (GET /user); else, for an app's installation
        token or GitHub Actions' GITHUB_TOKEN (both refused /user), the bot GraphQL's `viewer` names
        (`slug` or `slug[bot]`, a comment's author being `slug[bot]` of type Bot), else github-actions[bot].
        An app's comment was never found as ours, so every run posted another."""
        me = self.request("GET", "/user", ok=(401, 403, 404))
        login = me.get("login") if isinstance(me, dict) else None
        if isinstance(login, str) and login:
            return lambda user: isinstance(user, dict) and user.get("login") == login
        login = _viewer_login(self.request("POST", GRAPHQL, VIEWER, ok=(401, 403, 404)))
        bot = login.removesuffix("[bot]") + "[bot]" if login else ACTIONS_BOT
        return lambda user: isinstance(user, dict) and user.get("login") == bot and user.get("type") == "Bot"

    def comments(self, pr: int) -> Iterator[dict]:
        """The pull request's comments, oldest first, page by page; MAX_PAGES pages at most."""
        for page in range(1, MAX_PAGES + 1):
            path = self.repo(f"/issues/{pr}/comments?per_page={PER_PAGE}&page={page}")
            batch = self.request("GET", path)
            if not isinstance(batch, list) or not all(isinstance(c, dict) for c in batch):
                raise DataError(f"GitHub API GET {path}: the reply is not a list of comments")
            yield from batch
            if len(batch) < PER_PAGE:
                return
        raise DataError(f"pull request #{pr}: more than {MAX_PAGES * PER_PAGE} comments; not searched further")

    def upsert_comment(self, pr: int, body: str, marker: str) -> tuple[str, Any]:
        """Edit our comment starting with `marker` (the first, oldest first; by the token's user only: another
        comment quoting the marker, ours or another user's, keeps its text), or create one."""
        if holds_key(json.dumps({"body": body}, ensure_ascii=False), self._token):
            raise self.holds_token("POST", self.repo(f"/issues/{pr}/comments"))  # before asking who we are
        is_ours = self.author()
        for comment in self.comments(pr):
            text = comment.get("body")
            if is_ours(comment.get("user")) and isinstance(text, str) and text.startswith(marker):
                number = self.field(comment, "id", what=f"GET {self.repo(f'/issues/{pr}/comments')}")
                if not isinstance(number, int) or number < 1:
                    raise DataError(f"pull request #{pr}: a comment's id is not a number")
                return "updated", self.request("PATCH", self.repo(f"/issues/comments/{number}"), {"body": body})
        return "created", self.request("POST", self.repo(f"/issues/{pr}/comments"), {"body": body})

    def commit_files(self, branch: str, files: dict[str, bytes], message: str) -> str:
        """One commit on `branch` (created as an orphan branch if missing) adding `files`; its sha."""
        import base64

        path = self.repo(f"/git/ref/heads/{branch}")
        ref = self.request("GET", path, ok=(404,))
        parent = self.field(ref, "object", "sha", what=f"GET {path}", pattern=SHA) if ref is not None else None
        tree = []
        for name, data in sorted(files.items()):
            if any(form in data.lower() for form in (self._token.lower().encode(), self._token[::-1].lower().encode())):
                raise self.holds_token("POST", self.repo("/git/blobs"))  # as is: base64 of MiBs is slow to search
            content = {"content": base64.b64encode(data).decode(), "encoding": "base64"}
            blob = self._post_sha("/git/blobs", content, checked=True)
            tree.append({"path": name, "mode": "100644", "type": "blob", "sha": blob})
        new_tree: dict[str, Any] = {"tree": tree}
        if parent:
            commit_path = self.repo(f"/git/commits/{parent}")
            reply = self.request("GET", commit_path)
            new_tree["base_tree"] = self.field(reply, "tree", "sha", what=f"GET {commit_path}", pattern=SHA)
        tree_sha = self._post_sha("/git/trees", new_tree)
        commit = self._post_sha(
            "/git/commits", {"message": message, "tree": tree_sha, "parents": [parent] if parent else []}
        )
        if parent:
            self.request("PATCH", self.repo(f"/git/refs/heads/{branch}"), {"sha": commit, "force": False})
        else:
            self.request("POST", self.repo("/git/refs"), {"ref": f"refs/heads/{branch}", "sha": commit})
        return commit

    def _post_sha(self, route: str, body: dict, checked: bool = False) -> str:
        path = self.repo(route)
        return self.field(self.request("POST", path, body, checked=checked), "sha", what=f"POST {path}", pattern=SHA)


def _viewer_login(reply: Any) -> str | None:
    """`data.viewer.login` of a GraphQL reply; None where it is missing (a server without GraphQL, an error)."""
    for key in ("data", "viewer", "login"):
        reply = reply.get(key) if isinstance(reply, dict) else None
    return reply if isinstance(reply, str) and reply.strip() else None


def _error_message(raw: bytes) -> str:
    """GitHub's {"message": ...} of an error reply, short, on one line ("" for any other body)."""
    try:
        message = loads_json(raw).get("message")
    except Exception:  # any body: the status alone is still a clear error
        return ""
    return f": {' '.join(str(message).split())[:200]}" if isinstance(message, str) and message else ""
