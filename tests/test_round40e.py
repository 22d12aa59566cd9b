"""Round 40e: publish's preview copy, pr-comment-post --assets at the limits, hub_error's reply-shape branch and
hostile Hub replies; the rows marked "guard" passed before and pin what held, every other row failed before its fix.

A  publish copied any regular file named preview.jpg into the Hub folder and uploaded it: a 1 GB sparse file was
   copied whole (and uploaded), PNG, HTML or empty bytes were published as the card's contact sheet. Only a
   JPEG of a contact sheet's size (pr-comment's MAX_SHEET_BYTES) is copied now, else one line, no folder.
B  pr-comment-post --assets under `ulimit -n` 8..16 and RLIMIT_FSIZE 0 / 4 kB (guards, slow): it writes no file
   and holds few descriptors, so it posts the images and the comment whole.
C  hub_error told every TypeError and LookupError as "the reply is not the Hub's JSON": a bug of ours (in the
   client's hooks or network backend) was hidden behind the Hub. Only one raised inside huggingface_hub is
   the Hub's reply now; ours propagates (a traceback). A Hub reply of wrong-typed JSON is still one line.
D  a Hub reply of JSON nested 10^5 deep was "Hub: maximum recursion depth exceeded while decoding ...": now
   "not the Hub's JSON" as any unreadable reply (a 10 GB Content-Length, a redirect loop and a 429 with
   Retry-After 10**9 are guards: one line already).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from test_publish import tiny_release
from test_round8_github import MARKER, TOKEN, FakeGitHub
from test_round32e import reply
from test_round35c import hub_server

from helpers.commands import cli
from helpers.limits import run_limited
from helpers.repos import REPO
from helpers.tiers import fast_first
from scripts.lib.errors import DataError

# ---------------------------------------------------------------- A. publish's preview copy


def _write(data: bytes):
    return lambda preview: preview.write_bytes(data)


def _sparse(size: int):
    def make(preview: Path) -> None:
        with open(preview, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0")  # a JPEG's start, then a hole
            f.truncate(size)

    return make


def _link_out(preview: Path) -> None:
    outside = preview.parents[4] / "outside.jpg"
    outside.write_bytes(b"\xff\xd8\xff\xe0secret")
    preview.symlink_to(outside)


PREVIEWS = {  # case: (make data/releases/v2/preview.jpg, what the line says)
    "sparse-1gb": (_sparse(1 << 30), "not a JPEG contact sheet"),
    "sparse-9mb": (_sparse(9 << 20), "not a JPEG contact sheet"),
    "png-bytes": (_write(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "not a JPEG contact sheet"),
    "html": (_write(b"<html><script>alert(1)</script></html>"), "not a JPEG contact sheet"),
    "empty": (_write(b""), "not a JPEG contact sheet"),
    "guard-link-out": (_link_out, "preview.jpg"),
    "guard-fifo": (os.mkfifo, "preview.jpg"),
    "guard-directory": (Path.mkdir, "preview.jpg"),
}


@pytest.mark.parametrize("case", fast_first(sorted(PREVIEWS)))  # a publish run a row
def test_publish_copies_only_a_jpeg_contact_sheet(tmp_path, monkeypatch, capfd, case):
    make, said = PREVIEWS[case]
    root = tiny_release(tmp_path / "repo")
    preview = root / "data" / "releases" / "v2" / "preview.jpg"
    preview.unlink()
    make(preview)
    out = tmp_path / "hub"
    result = cli(["publish", "v2", "--repo-id", "me/t2i-v2", "--dry-run", "--out", out], root, monkeypatch, capfd)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and said in lines[0], result.stderr
    assert not out.exists() and "Traceback" not in result.stderr


# ---------------------------------------------------------------- B. pr-comment-post --assets at the limits

LIMITS = [(resource.RLIMIT_NOFILE, n) for n in (8, 12, 16)] + [(resource.RLIMIT_FSIZE, n) for n in (0, 4096)]
LIMIT_NAMES = {resource.RLIMIT_NOFILE: "nofile", resource.RLIMIT_FSIZE: "fsize"}
POSTED = [
    ("GET", "/repos/o/r/git/ref/heads/dataset-diff-assets"),
    ("POST", "/repos/o/r/git/blobs"),
    ("POST", "/repos/o/r/git/blobs"),
    ("POST", "/repos/o/r/git/trees"),
    ("POST", "/repos/o/r/git/commits"),
    ("POST", "/repos/o/r/git/refs"),
]


@pytest.mark.slow  # an interpreter a row (seconds)
@pytest.mark.parametrize(("which", "value"), LIMITS, ids=[f"{LIMIT_NAMES[w]}-{v}" for w, v in LIMITS])
def test_pr_comment_post_with_assets_at_the_limits(tmp_path, monkeypatch, which, value):
    server = FakeGitHub()
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    for name in ("base-r.jpg", "head-r.jpg"):
        (sheets / name).write_bytes(b"\xff\xd8\xff" + b"x" * 10000)
    body = tmp_path / "body.md"
    body.write_text(f"{MARKER}\nhello\n", encoding="utf-8")
    for name, val in {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": server.url}.items():
        monkeypatch.setenv(name, val)
    monkeypatch.setenv("NO_PROXY", "*")
    try:
        result = run_limited(["pr-comment-post", str(body), "--pr", "1", "--assets", str(sheets)], REPO, which, value)
    finally:
        server.close()
    sent = [(method, path) for method, path, _ in server.requests]
    if result.returncode == 0:  # whole: the images' commit, then the comment
        assert sent[: len(POSTED)] == POSTED and sent[-1] == ("POST", "/repos/o/r/issues/1/comments"), sent
    else:  # one line naming the step, and no comment posted
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert ("POST", "/repos/o/r/issues/1/comments") not in sent
    assert TOKEN not in result.stdout + result.stderr


# ---------------------------------------------------------------- C. a bug of ours is not the Hub's bad JSON


def _raising(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


BUGS = {  # case: (what in hub_http raises, the exception)
    "cap-hook-type-error": ("asked_wait", TypeError("'NoneType' object is not subscriptable")),
    "deadline-key-error": ("request_deadline", KeyError("timeout")),
    "backend-type-error": ("_time_left", TypeError("unsupported operand type(s) for -: 'NoneType' and 'float'")),
    "addresses-index-error": ("_addresses", IndexError("list index out of range")),
}


@pytest.mark.parametrize("case", sorted(BUGS))
def test_a_bug_of_ours_is_not_told_as_the_hubs_json(tmp_path, monkeypatch, case):
    from scripts.tools import hub_http
    from scripts.tools.publish import upload

    name, exc = BUGS[case]
    server = hub_server(monkeypatch, tmp_path, reply(200, b'{"url": "https://hub.example/datasets/a/b"}'))
    monkeypatch.setattr(hub_http, name, _raising(exc))
    try:
        with pytest.raises(type(exc)) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
    finally:
        server.close()
    assert caught.value is exc and not isinstance(caught.value, DataError)


# ---------------------------------------------------------------- D. hostile Hub replies, one line each

NOT_THE_HUBS_JSON = "Hub: the reply is not the Hub's JSON (is HF_ENDPOINT a Hub?)"
HOSTILE = {  # case: (the raw reply, the line, or a part of it)
    "array-10e5-deep": (reply(200, b"[" * 100_000 + b"]" * 100_000), NOT_THE_HUBS_JSON),
    "object-10e5-deep": (reply(200, b'{"a":' * 100_000 + b"1" + b"}" * 100_000), NOT_THE_HUBS_JSON),
    "url-10e5-deep": (reply(200, b'{"url": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), NOT_THE_HUBS_JSON),
    "guard-wrong-typed-json": (reply(200, b"[1, 2]"), NOT_THE_HUBS_JSON),
    "guard-10gb-no-body": (
        b"HTTP/1.1 200 X\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
        "reply of 10000000000 bytes",
    ),
    "guard-redirect-loop": (
        b"HTTP/1.1 302 X\r\nLocation: /loop\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        "redirects",
    ),
    "guard-429-wait-10e9": (
        b"HTTP/1.1 429 X\r\nRetry-After: 1000000000\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        "asks to wait 1000000000 s",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_hub_reply_is_one_line(tmp_path, monkeypatch, case):
    from scripts.tools.publish import upload

    data, said = HOSTILE[case]
    server = hub_server(monkeypatch, tmp_path, data)
    try:
        started = time.monotonic()
        with pytest.raises(DataError) as caught:
            upload(tmp_path / "hub", "a/b", "v2", "c" * 40, private=False)
        took = time.monotonic() - started
    finally:
        server.close()
    line = str(caught.value)
    assert line.startswith("Hub: ") and said in line and "recursion" not in line, line
    assert line.isprintable() and "\n" not in line and took < 10, (line, took)
