"""The sixth hostile round's chat-client breaks (synthesize@N, caption@S); every row failed before its fix.

- a redirect or reply urllib cannot read (a port out of range, a broken [IPv6]) is one redacted line;
- a reply whose `usage` is not an object, or that holds a lone surrogate, is retried, never cached;
- redaction takes linear time (pieces nested thousands deep took a minute), replies over 4 MiB are refused;
- the key shapes of Groq, xAI, Perplexity, Replicate, Stripe and JWTs are refused in params.yaml, and no
  params error echoes a value shaped like a key;
- a template's format spec, a base_url host and a NUL in a path are checked when params are read;
- caption reads no archive outside its images folder; synthesize reads no link in its examples folder;
- a key shorter than 16 characters is redacted only as itself, a whole token (`EMPTY` left "an empty street").
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_chat_hostile import KEY, one_error_line, setup_stage, synth_entry, write_params

from helpers import REPO, Loopback, cli

ENV = "T2I_ROUND6_KEY"


def completion(content: str = "1. a red kite\n2. a small boat", **extra) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}], **extra}


class Server:
    """A loopback chat server answering every POST with `reply(key)` -> (status, reason, headers, raw
    body); it keeps the bodies it was sent."""

    def __init__(self, reply):
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                status, reason, headers, raw = reply(key)
                try:
                    self.send_response(status, reason)
                    for name, value in {"Content-Length": str(len(raw)), **headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.loop = Loopback(Handler)
        self.base_url = self.loop.base_url

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.loop.close()


def json_reply(payload) -> callable:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return lambda key: (200, None, {"Content-Type": "application/json"}, raw)


def run_stage(tmp_path, monkeypatch, capfd, stage: str, base_url: str, key: str | None = KEY, **overrides):
    extra = {"requests": 1} if stage == "synthesize" else {"max_images": 1}
    setup_stage(tmp_path, stage, base_url, api_key_env=ENV if key else None, **{**extra, **overrides})
    if key:
        monkeypatch.setenv(ENV, key)
    return cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)


def cached(tmp_path) -> list[Path]:
    return list((tmp_path / "out" / "cache").glob("*.json"))


def key_pieces(key: str) -> set[str]:
    return {key[i : i + 8] for i in range(len(key) - 7)}


# ---------------------------------------------------------------- 1: a redirect urllib cannot read

REDIRECTS = {  # status, reason phrase, Location: each with the key in it
    "307-gopher-port-out-of-range": (307, "Bearer KEY", "gopher://x:99999/?k=KEY"),
    "302-broken-ipv6": (302, "Found", "http://[::1/x?k=KEY"),
    "301-port-not-a-number": (301, "Moved KEY", "http://h:KEY/v1"),
    "308-negative-port": (308, "Bearer KEY", "http://h:-1/?k=KEY"),
}


@pytest.mark.parametrize("case", sorted(REDIRECTS))
def test_a_redirect_urllib_cannot_read_is_one_line_without_the_key(tmp_path, monkeypatch, capfd, case):
    status, reason, where = REDIRECTS[case]

    def reply(key):
        return status, reason.replace("KEY", key), {"Location": where.replace("KEY", key)}, b""

    with Server(reply) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url)
    line = one_error_line(result)
    assert "request 0 failed" in line, line
    said = result.stdout + result.stderr
    assert not any(piece in said for piece in key_pieces(KEY)), said


# ---------------------------------------------------------------- 2 and 3: replies that are no chat completion

BAD_REPLIES = {  # stage, raw reply body
    "synthesize-usage-list": ("synthesize", json.dumps(completion(usage=[1])).encode()),
    "synthesize-usage-string": ("synthesize", json.dumps(completion(usage="x")).encode()),
    "synthesize-usage-number": ("synthesize", json.dumps(completion(usage=5)).encode()),
    "caption-usage-list": ("caption", json.dumps(completion("a red square", usage=[1])).encode()),
    "synthesize-lone-surrogate-in-content": ("synthesize", b'{"choices":[{"message":{"content":"a \\ud800 kite"}}]}'),
    "synthesize-lone-low-surrogate": ("synthesize", b'{"choices":[{"message":{"content":"\\udfff"}}]}'),
    "synthesize-lone-surrogate-in-a-key": (
        "synthesize",
        b'{"choices":[{"message":{"content":"a kite"}}],"x\\ud800":1}',
    ),
    "caption-lone-surrogate": ("caption", b'{"choices":[{"message":{"content":"a red \\ud83d square"}}]}'),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_a_reply_of_the_wrong_shape_is_one_line_and_never_cached(tmp_path, monkeypatch, capfd, case):
    stage, raw = BAD_REPLIES[case]
    with Server(json_reply(raw)) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, stage, server.base_url)
    line = one_error_line(result)
    assert " failed: " in line and len(line) < 400, line
    assert not cached(tmp_path)


# ---------------------------------------------------------------- 4 and 5: redaction in linear time

NESTED = {  # an 8-character piece of the key's encoding, split in two halves nested 3000 deep
    "as-is": lambda key: "".join(char for char in key if char.isalnum())[2:10],
    "reversed": lambda key: key[::-1][:8],
    "hex": lambda key: key.encode().hex()[:8],
}
REDACT = """
import sys, json
from scripts.lib.key_redaction import holds_key, redact_key
key, text = json.loads(sys.stdin.read())
out = redact_key(text, key)
print(json.dumps([holds_key(out, key), len(out)]))
"""


@pytest.mark.parametrize("form", sorted(NESTED))
def test_pieces_nested_thousands_deep_are_redacted_in_seconds(form):
    piece = NESTED[form](KEY)
    text = (piece[:4] + ".") * 3000 + piece + ("." + piece[4:]) * 3000
    done = subprocess.run(
        [sys.executable, "-c", REDACT],
        input=json.dumps([KEY, text]),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=8,
    )
    assert done.returncode == 0, done.stderr
    still, _ = json.loads(done.stdout)
    assert not still


LARGE = {  # a reply body of this many bytes: over the 4 MiB cap
    "4-MiB-and-one-byte": (4 << 20) + 1,
    "6-MiB": 6 << 20,
    "9-MiB": 9 << 20,
}


@pytest.mark.parametrize("case", sorted(LARGE))
def test_a_reply_over_4_MiB_is_refused_not_processed(tmp_path, monkeypatch, capfd, case):
    head = json.dumps(completion("1. a kite")).encode()
    raw = head[:-1] + b', "pad": "' + b"a " * ((LARGE[case] - len(head)) // 2) + b'"}'
    with Server(json_reply(raw)) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url)
    line = one_error_line(result)
    assert "larger than" in line, line
    assert not cached(tmp_path)


# ---------------------------------------------------------------- 6: key shapes in params.yaml

SECRETS = {  # where in the synthesize entry, the value
    "groq-in-extra-body": ("extra_body", {"api_key": "gsk_Q7xV2mLp9Rt4Wz8Kc1Nb6Hd3Fs5Jg0YeUaQ7xV2mLp9Rt4Wz8Kc1Nb6"}),
    "xai-in-extra-body": ("extra_body", {"api_key": "xai-Q7xV2mLp9Rt4Wz8Kc1Nb6Hd3Fs5Jg0YeUa"}),
    "perplexity-in-extra-body": ("extra_body", {"token": "pplx-Q7xV2mLp9Rt4Wz8Kc1Nb6Hd3Fs5Jg0YeUa"}),
    "replicate-in-system": ("system", "use r8_Hq2Lm9Xv4Tb7Kd1Wz6Pn3Rc8Yf5 please"),
    "stripe-live-in-extra-body": ("extra_body", {"key": "sk_live_51Hq2Lm9Xv4Tb7Kd1Wz6Pn3Rc8Yf5"}),
    "jwt-in-extra-body": ("extra_body", {"auth": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"}),
    "groq-as-temperature": ("temperature", "gsk_Q7xV2mLp9Rt4Wz8Kc1Nb6Hd3Fs5Jg0YeUaQ7xV2mLp9Rt4Wz8Kc1Nb6"),
    "token-as-temperature": ("temperature", "Zq8Rw2Lx5Vn7Kc3Hb9TmQa7Ws2Zq8Rw2Lx5Vn7"),
    "token-as-max-tokens": ("max_tokens", "Hb9TmQa7Ws2Zq8Rw2Lx5Vn7Kc3"),
}


def _strings(value) -> list[str]:
    return [s for v in value.values() for s in _strings(v)] if isinstance(value, dict) else [value]


@pytest.mark.parametrize("case", sorted(SECRETS))
def test_a_key_of_any_known_shape_in_params_is_refused_and_never_echoed(tmp_path, monkeypatch, capfd, case):
    where, value = SECRETS[case]
    with Server(json_reply(completion())) as server:
        write_params(tmp_path, "synthesize", {"t": synth_entry(server.base_url, requests=1, **{where: value})})
        (tmp_path / "ex.txt").write_text("a kite\n", encoding="utf-8")
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    line = one_error_line(result)
    assert line.startswith(f"error: params.yaml: synthesize.t.{where}"), line
    for secret in _strings(value):
        assert not any(piece in result.stderr for piece in key_pieces(max(secret.split(), key=len)))
    assert not server.bodies and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 7, 8, 9: checked when params are read

PARAMS_ERRORS = {  # stage, key, value, the key path named
    "template-format-code": ("synthesize", "template", "{examples:d} {avoid_topics}", "template"),
    "template-conversion": ("synthesize", "template", "{examples!z}", "template"),
    "template-thousands-separator": ("synthesize", "template", "{avoid_topics:,}", "template"),
    "template-sign-on-text": ("synthesize", "template", "{examples:+}", "template"),
    "base-url-empty-label": ("synthesize", "base_url", "http://a..b/v1", "base_url"),
    "base-url-label-over-63": ("synthesize", "base_url", f"http://{'a' * 64}.example/v1", "base_url"),
    "base-url-broken-ipv6": ("synthesize", "base_url", "http://[::1/v1", "base_url"),
    "caption-base-url-empty-label": ("caption", "base_url", "https://api..example/v1", "base_url"),
    "caption-images-nul": ("caption", "images", "im\0g", "images"),
    "caption-images-nul-at-end": ("caption", "images", "images\0", "images"),
    "synthesize-example-path-nul": ("synthesize", "examples", [{"path": "ex\0.txt", "count": 1}], "examples[0]"),
}


@pytest.mark.parametrize("case", sorted(PARAMS_ERRORS))
def test_a_template_host_or_nul_that_failed_later_is_refused_when_params_are_read(tmp_path, monkeypatch, capfd, case):
    stage, key, value, where = PARAMS_ERRORS[case]
    with Server(json_reply(completion())) as server:
        base_url = value if key == "base_url" else server.base_url
        setup_stage(tmp_path, stage, base_url, **({"requests": 1} if stage == "synthesize" else {"max_images": 1}))
        params = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
        params[stage]["t"][key] = value
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        result = cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)
    line = one_error_line(result)
    assert line.startswith(f"error: params.yaml: {stage}.t.{where}"), line
    assert not server.bodies and not (tmp_path / "out").exists()


UNREADABLE_URLS = ["http://a..b/v1/chat/completions", f"http://{'b' * 64}.example/x", "http://[::1/v1/chat/completions"]


@pytest.mark.parametrize("url", UNREADABLE_URLS, ids=["empty-label", "label-over-63", "broken-ipv6"])
def test_a_host_that_cannot_be_looked_up_fails_the_request_not_the_process(url):
    from scripts.lib.chat_client import FatalError, TransientError, post_chat

    with pytest.raises((FatalError, TransientError)) as caught:
        post_chat(url, {"model": "m"}, KEY, 5.0)
    assert KEY[8:] not in str(caught.value)


# ---------------------------------------------------------------- 10: caption reads inside its images folder


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


OUTSIDE = _png((1, 2, 3))  # the image in a tar outside the images folder


def _outside_tar(tmp_path: Path, member: str) -> Path:
    tar = tmp_path / "private" / "outside.tar"
    tar.parent.mkdir(exist_ok=True)
    with tarfile.open(tar, "w") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(OUTSIDE)
        archive.addfile(info, io.BytesIO(OUTSIDE))
    return tar


def _linked_tar(tmp_path, images, member, inside_name):
    (images / "x").symlink_to(_outside_tar(tmp_path, member))
    (images / "x!" / inside_name).parent.mkdir(parents=True, exist_ok=True)
    (images / "x!" / inside_name).write_bytes(_png((9, 9, 9)))


def _inside_tar(tmp_path, images, member, inside_name):
    (images / "x").write_bytes(_outside_tar(tmp_path, member).read_bytes())  # a tar in the folder, no .tar name
    (images / "x!" / inside_name).parent.mkdir(parents=True, exist_ok=True)
    (images / "x!" / inside_name).write_bytes(_png((9, 9, 9)))


def _manifest_to_linked_tar(tmp_path, images, member, inside_name):
    import pandas as pd

    _linked_tar(tmp_path, images, member, inside_name)
    pd.DataFrame({"id": ["a"], "file": [f"x!/{inside_name}"]}).to_parquet(images / "manifest.parquet")


CONFINED = {  # how the folder is made: images/x and a real file images/x!/<name> beside it
    "link-to-an-outside-tar": (_linked_tar, "y.jpg", "y.jpg"),
    "link-to-an-outside-tar-deeper-member": (_linked_tar, "a/y.png", "a/y.png"),
    "tar-in-the-folder-shadows-a-file": (_inside_tar, "y.png", "y.png"),
    "manifest-names-a-file-behind-a-link": (_manifest_to_linked_tar, "y.jpg", "y.jpg"),
}


@pytest.mark.parametrize("case", sorted(CONFINED))
def test_caption_reads_no_archive_a_name_reaches_outside_its_folder(tmp_path, monkeypatch, capfd, case):
    make, member, inside_name = CONFINED[case]
    images = tmp_path / "images"
    images.mkdir()
    make(tmp_path, images, member, inside_name)
    with Server(json_reply(completion("a small grey square"))) as server:
        write_params(tmp_path, "caption", {"t": {**_caption(images, server.base_url)}})
        result = cli(["caption", "t", "out"], tmp_path, monkeypatch, capfd)
    assert "Traceback" not in result.stderr, result.stderr
    sent = b"".join(server.bodies)
    assert base64.b64encode(OUTSIDE) not in sent


def _caption(images: Path, base_url: str) -> dict:
    from test_chat_hostile import caption_entry

    return caption_entry(images, base_url, max_images=None)


# ---------------------------------------------------------------- 11: synthesize reads no link in its examples

SECRET = "DB_PASSWORD=hunter2-round6"


def _symlink(folder: Path, secret: Path) -> None:
    (folder / "notes.txt").symlink_to(secret)


def _relative_symlink(folder: Path, secret: Path) -> None:
    (folder / "notes.txt").symlink_to(Path("..") / secret.name)


def _hard_link(folder: Path, secret: Path) -> None:
    os.link(secret, folder / "notes.txt")


def _link_to_a_link(folder: Path, secret: Path) -> None:
    (secret.parent / "alias.txt").symlink_to(secret)
    (folder / "notes.txt").symlink_to(secret.parent / "alias.txt")


EXAMPLE_LINKS = {
    "symlink-to-a-secret": _symlink,
    "relative-symlink-up": _relative_symlink,
    "hard-link-to-a-secret": _hard_link,
    "link-to-a-link": _link_to_a_link,
}


@pytest.mark.parametrize("case", sorted(EXAMPLE_LINKS))
def test_synthesize_sends_no_file_a_link_in_its_examples_points_to(tmp_path, monkeypatch, capfd, case):
    secret = tmp_path / "secret.env"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "a.txt").write_text("a kite over a hill\n", encoding="utf-8")
    EXAMPLE_LINKS[case](folder, secret)
    with Server(json_reply(completion())) as server:
        examples = [{"path": "examples", "count": 2}]
        write_params(tmp_path, "synthesize", {"t": synth_entry(server.base_url, requests=1, examples=examples)})
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    line = one_error_line(result)
    assert "notes.txt" in line, line
    assert not any(b"hunter2" in body for body in server.bodies)
    assert "hunter2" not in result.stderr


# ---------------------------------------------------------------- 12: a short key corrupts no text

SHORT_KEYS = {  # key, reply content, what prompts.txt must hold
    "vllm-EMPTY": (
        "EMPTY",
        "an empty street, a sign reading EMPTY",
        "an empty street, a sign reading *",
    ),  # *** read as bold
    "dummy": ("dummy", "a Dummy on a shelf", "a Dummy on a shelf"),
    "sk-local-inside-a-word": ("sk-local", "a desk-local lamp glowing", "a desk-local lamp glowing"),
    "none-in-a-longer-word": ("none", "a nonesuch rose, NONE other", "a nonesuch rose, NONE other"),
}


@pytest.mark.parametrize("case", sorted(SHORT_KEYS))
def test_a_short_key_is_redacted_only_as_itself(tmp_path, monkeypatch, capfd, case):
    key, content, expected = SHORT_KEYS[case]
    with Server(json_reply(completion(content))) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url, key=key)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "prompts.txt").read_text(encoding="utf-8") == expected + "\n"
