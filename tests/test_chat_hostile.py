"""synthesize@N and caption@S against a hostile user and a hostile server (the third hostile round).

- the response cache deletes only the temps it tagged: a user's `.*.tmp-*` in cache/ stays;
- a second run into the same output folder fails at once, before it pays for any request;
- the API key in no shape a server may echo it (base64 at any offset, zero-width or dot separated,
  HTML entities, escapes, fullwidth, rot13, ...) reaches an error line, prompts.txt or the cache; a
  reply that still holds it is refused, not stored; a key-shaped api_key_env or a base_url with a
  query is refused when params are read;
- extra_body holds JSON values only: a YAML date, !!binary, !!set is one line naming the key.
"""

from __future__ import annotations

import base64
import codecs
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers import REPO, Loopback, cli, send_json

KEY = "sk-proj-Zq8Rw2Lx5Vn7Kc3Hb9Tm"  # mixed case, letters and digits: every encoding differs from it


def synth_entry(base_url: str = "http://127.0.0.1:9/v1", **overrides) -> dict:
    entry = {"base_url": base_url, "model": "m", "api_key_env": None, "requests": 0, "examples": []}
    entry.update({"max_attempts": 1, "timeout_s": 30.0, "backoff_base_s": 0.01, "concurrency": 1})
    entry.update(overrides)
    return entry


def caption_entry(images: Path, base_url: str = "http://127.0.0.1:9/v1", **overrides) -> dict:
    entry = {"images": str(images), "base_url": base_url, "api_key_env": None, "max_images": 0}
    entry.update({"models": [{"model": "m1", "variant": "v1"}], "max_attempts": 1, "concurrency": 1})
    entry.update({"timeout_s": 30.0, "backoff_base_s": 0.01})
    entry.update(overrides)
    return entry


def make_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    (folder / "red.png").write_bytes(buf.getvalue())
    return folder


def write_params(root: Path, section: str, entries: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({section: entries}), encoding="utf-8")


def setup_stage(root: Path, stage: str, base_url: str = "http://127.0.0.1:9/v1", **overrides) -> None:
    if stage == "synthesize":
        write_params(root, "synthesize", {"t": synth_entry(base_url, **overrides)})
    else:
        write_params(root, "caption", {"t": caption_entry(make_images(root / "images"), base_url, **overrides)})


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
    return lines[0]


# ---------------------------------------------------------------- B3: the cache deletes only its own temps


def _user_file(path: Path) -> None:
    path.write_text("my notes\n", encoding="utf-8")


def _user_folder(path: Path) -> None:
    path.mkdir()
    (path / "draft.txt").write_text("draft\n", encoding="utf-8")


def _user_link(path: Path) -> None:
    target = path.parent.parent.parent / "elsewhere.txt"
    target.write_text("kept\n", encoding="utf-8")
    path.symlink_to(target)


USER_TEMPS = {  # (stage, name in cache/, how the user made it)
    "synthesize-notes-draft": ("synthesize", ".notes.tmp-draft", _user_file),
    "synthesize-named-like-an-entry-temp": ("synthesize", f".{'a' * 64}.json.tmp-new", _user_file),
    "synthesize-folder": ("synthesize", ".work.tmp-dir", _user_folder),
    "synthesize-link": ("synthesize", ".link.tmp-1", _user_link),
    "caption-notes-draft": ("caption", ".notes.tmp-draft", _user_file),
}


@pytest.mark.parametrize("case", sorted(USER_TEMPS))
def test_the_cache_deletes_only_the_temps_it_tagged(tmp_path, monkeypatch, capfd, case):
    from scripts.lib.temps import mark_temp

    stage, name, make = USER_TEMPS[case]
    setup_stage(tmp_path, stage)
    assert cli([stage, "t", "out"], tmp_path, monkeypatch, capfd).returncode == 0
    cache = tmp_path / "out" / "cache"
    make(cache / name)
    ours = cache / f".{'b' * 64}.json.tmp-new"  # a killed run's temp: tagged, so it goes
    ours.write_text("{", encoding="utf-8")
    mark_temp(ours)
    result = cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert os.path.lexists(cache / name), sorted(os.listdir(cache))
    assert not os.path.lexists(ours) or not _xattrs_work(tmp_path)


def _xattrs_work(folder: Path) -> bool:
    from scripts.lib.temps import is_our_temp, mark_temp

    probe = folder / ".xattr-probe"
    probe.write_text("", encoding="utf-8")
    mark_temp(probe)
    return is_our_temp(probe)


# ---------------------------------------------------------------- B7: one run into an output folder at a time


class Held:
    """A chat server that holds every request until `release` is set (the first run is mid-request)."""

    def __init__(self):
        self.release = threading.Event()
        self.received = 0
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                held.received += 1
                held.release.wait(60)
                content = "1. a red kite over a grey sea at dawn\n2. a small boat in fog"
                send_json(self, 200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

        self.server = Loopback(Handler)


def _subprocess(root: Path, *argv: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SECOND_RUNS = {  # stage, the first run's entry and output, the second's
    "synthesize-same-entry": ("synthesize", ("t", "out"), ("t", "out")),
    "synthesize-other-entry-dot-slash": ("synthesize", ("t", "out"), ("u", "./out/")),
    "synthesize-absolute-path": ("synthesize", ("t", "out"), ("t", "{root}/out")),
    "caption-same-entry": ("caption", ("t", "out"), ("t", "out")),
}


@pytest.mark.parametrize("case", sorted(SECOND_RUNS))
def test_a_second_run_into_the_same_output_fails_at_once_without_a_request(tmp_path, case):
    stage, first, second = SECOND_RUNS[case]
    held = Held()
    try:
        if stage == "synthesize":
            entry = synth_entry(held.server.base_url, requests=2)
            write_params(tmp_path, "synthesize", {"t": entry, "u": {**entry, "examples": [], "seed": 7}})
        else:
            setup_stage(tmp_path, "caption", held.server.base_url, max_images=None)
        one = _subprocess(tmp_path, stage, *first)
        deadline = time.monotonic() + 60
        while held.received < 1 and one.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.received == 1, one.communicate()
        two = _subprocess(tmp_path, stage, second[0], second[1].format(root=tmp_path))
        started = time.monotonic()
        while two.poll() is None and held.received == 1 and time.monotonic() - started < 30:
            time.sleep(0.05)
        paid_twice = held.received > 1
        if two.poll() is None:
            two.kill()
        _, err = two.communicate()
        held.release.set()
        one.communicate(timeout=60)
    finally:
        held.release.set()
        held.server.close()
    assert not paid_twice, "the second run sent a request the first is already paying for"
    assert two.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "another run is writing it" in lines[-1], err
    assert "Traceback" not in err and time.monotonic() - started < 30
    assert one.returncode == 0


# ---------------------------------------------------------------- B12: the key in any shape a server echoes


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in text)


ECHOES = {  # how a server (or a proxy) wrote the key back
    "base64-of-the-header": lambda k: base64.b64encode(f"Bearer {k}".encode()).decode(),
    "base64-at-offset-2": lambda k: base64.b64encode(b"k=" + k.encode()).decode(),
    "base64-url-safe-at-offset-1": lambda k: base64.urlsafe_b64encode(b"\xff" + k.encode()).decode(),
    "zero-width-spaces": lambda k: "\u200b".join(k),
    "zero-width-joiners": lambda k: "\u200d".join(k),
    "dot-separated": lambda k: ".".join(k),
    "html-decimal-entities": lambda k: "".join(f"&#{ord(c)};" for c in k),
    "html-hex-entities": lambda k: "".join(f"&#x{ord(c):X};" for c in k),
    "utf16-hex": lambda k: k.encode("utf-16-be").hex(),
    "utf16-hex-spaced": lambda k: " ".join(f"{ord(c):04X}" for c in k),
    "backslash-u-escapes": lambda k: "".join(f"\\u{ord(c):04x}" for c in k),
    "backslash-x-escapes": lambda k: "".join(f"\\x{ord(c):02x}" for c in k),
    "fullwidth": _fullwidth,
    "rot13": lambda k: codecs.encode(k, "rot13"),
    "rot13-reversed": lambda k: codecs.encode(k[::-1], "rot13"),
    "base32": lambda k: base64.b32encode(b"Bearer " + k.encode()).decode(),
    "decimal-codes": lambda k: ",".join(str(ord(c)) for c in k),
    "combining-strokes": lambda k: "\u0336".join(k) + "\u0336",
}
GROQ_KEY = "gsk_Q7xV2mLp9RtY3wZ8kN4bH6jF1cD5sA0e"


def _windows(echo: str, n: int = 12) -> set[str]:
    return {echo[i : i + n] for i in range(len(echo) - n + 1)} or {echo}


@pytest.mark.parametrize("key", [KEY, GROQ_KEY], ids=["openai-style", "groq-style"])
@pytest.mark.parametrize("form", sorted(ECHOES))
def test_a_key_echoed_in_any_encoding_is_redacted(form, key):
    from scripts.lib.key_redaction import redact_key

    echo = ECHOES[form](key)
    said = redact_key(f"HTTP 401: bad key {echo} (try again)", key)
    assert said.startswith("HTTP 401: bad key ") and said.endswith(" (try again)"), said
    assert not any(piece in said for piece in _windows(echo)), said
    stored = json.dumps(redact_key({"choices": [{"message": {"content": f"a kite {echo}\nmore"}}]}, key))
    assert not any(json.dumps(piece)[1:-1] in stored for piece in _windows(echo)), stored


def _echo_server(status: int, shape):
    """Echoes the Authorization header's key (or the whole header value) in `shape`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            header = self.headers.get("Authorization", "")
            echo = shape(header.removeprefix("Bearer "))
            if status == 200:
                content = f"1. a prompt {echo}\n2. a small boat in fog"
                send_json(self, 200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
            else:
                send_json(self, status, {"error": {"message": f"invalid credentials, header was {echo}"}})

    return Loopback(Handler)


SERVER_ECHOES = {  # status, echo: what the server sends back
    "401-base64-of-the-header": (401, lambda k: base64.b64encode(f"Bearer {k}".encode()).decode()),
    "200-base64-of-the-header": (200, lambda k: base64.b64encode(f"Bearer {k}".encode()).decode()),
    "200-html-entities": (200, ECHOES["html-hex-entities"]),
    "200-fullwidth": (200, _fullwidth),
    "401-zero-width": (401, ECHOES["zero-width-spaces"]),
    "200-backslash-u": (200, ECHOES["backslash-u-escapes"]),
}


@pytest.mark.parametrize("case", sorted(SERVER_ECHOES))
def test_a_key_a_server_echoes_encoded_reaches_no_error_line_and_no_file(tmp_path, monkeypatch, capfd, case):
    status, shape = SERVER_ECHOES[case]
    server = _echo_server(status, shape)
    try:
        setup_stage(tmp_path, "synthesize", server.base_url, requests=1, api_key_env="T2I_HOSTILE_KEY")
        monkeypatch.setenv("T2I_HOSTILE_KEY", KEY)
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    echo = shape(KEY)
    pieces = _windows(echo) | {json.dumps(piece)[1:-1] for piece in _windows(echo)}
    if status == 200:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out" / "prompts.txt").read_text(encoding="utf-8").count("\n") == 2
    else:
        one_error_line(result)
    assert not any(piece in result.stdout + result.stderr for piece in pieces), result.stderr
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not any(piece in text for piece in pieces), (path, text)


SPLIT_REPLIES = {  # a reply holding the key only across JSON strings: no string holds a piece of it
    "list-of-short-pieces": lambda k: {"pieces": [k[i : i + 5] for i in range(0, len(k), 5)]},
    "key-and-value": lambda k: {"meta": {k[:6]: k[6:12], k[12:18]: k[18:]}},
    "content-and-sibling": lambda k: {"note": [k[:7], k[7:14], k[14:21], k[21:]]},
}


@pytest.mark.parametrize("case", sorted(SPLIT_REPLIES))
def test_a_reply_that_cannot_be_proven_clean_is_refused_not_stored(tmp_path, monkeypatch, capfd, case):
    extra = SPLIT_REPLIES[case]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            reply = {"choices": [{"message": {"role": "assistant", "content": "1. a kite"}}], **extra(key)}
            send_json(self, 200, reply)

    server = Loopback(Handler)
    try:
        setup_stage(tmp_path, "synthesize", server.base_url, requests=1, api_key_env="T2I_HOSTILE_KEY")
        monkeypatch.setenv("T2I_HOSTILE_KEY", KEY)
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    finally:
        server.close()
    line = one_error_line(result)
    assert "holds the API key" in line and "not stored" in line, line
    assert not list((tmp_path / "out" / "cache").glob("*.json"))


KEY_SHAPED_PARAMS = {  # (stage, key, value): a credential where params.yaml (and dvc.lock) would hold it
    "synthesize-groq-key-as-env-name": ("synthesize", "api_key_env", GROQ_KEY),
    "synthesize-replicate-key-as-env-name": ("synthesize", "api_key_env", "r8_Hq2Lm9Xv4Tb7Kd1Wz6Pn3Rc8Yf5"),
    "synthesize-lower-case-token-as-env-name": ("synthesize", "api_key_env", "xai_k3Jd9fQ2m8Lp4Zr7Vx1c"),
    "caption-groq-key-as-env-name": ("caption", "api_key_env", GROQ_KEY),
    "synthesize-api-key-in-query": ("synthesize", "base_url", "http://127.0.0.1:9/v1?api_key=Zq8Rw2Lx5Vn7Kc3H"),
    "synthesize-key-in-fragment": ("synthesize", "base_url", "https://api.example.com/v1#token=Zq8Rw2Lx5Vn7"),
    "caption-key-in-query": ("caption", "base_url", "https://openrouter.example/api/v1?key=Hb9Tm4Qa7Ws2"),
}


@pytest.mark.parametrize("case", sorted(KEY_SHAPED_PARAMS))
def test_a_key_shaped_api_key_env_or_a_base_url_query_is_refused_unprinted(tmp_path, monkeypatch, capfd, case):
    stage, key, value = KEY_SHAPED_PARAMS[case]
    if key == "base_url":
        setup_stage(tmp_path, stage, value)
    else:
        setup_stage(tmp_path, stage, **{key: value})
    result = cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)
    line = one_error_line(result)
    assert line.startswith(f"error: params.yaml: {stage}.t.{key}: "), line
    secret = value.split("=")[-1] if key == "base_url" else value
    assert secret[4:] not in result.stdout + result.stderr, line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- B13: extra_body holds JSON values only

NOT_JSON = {  # (stage, extra_body in YAML, the key path named)
    "synthesize-date": ("synthesize", "{when: 2024-01-01}", "when"),
    "synthesize-date-in-a-list": ("synthesize", "{stop: [a, 2024-01-01]}", "stop[1]"),
    "synthesize-binary": ("synthesize", "{blob: !!binary aGVsbG8=}", "blob"),
    "synthesize-set-nested": ("synthesize", "{opts: {tags: !!set {x, y}}}", "opts.tags"),
    "synthesize-nan": ("synthesize", "{top_p: .nan}", "top_p"),
    "synthesize-int-key": ("synthesize", "{logit_bias: {50256: -100, 2024-01-01: 1}}", "logit_bias"),
    "caption-date": ("caption", "{when: 2024-01-01}", "when"),
    "caption-binary": ("caption", "{blob: !!binary aGVsbG8=}", "blob"),
    "caption-set": ("caption", "{tags: !!set {x}}", "tags"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_extra_body_that_is_not_json_is_refused_when_params_are_read(tmp_path, monkeypatch, capfd, case):
    stage, extra_body, where = NOT_JSON[case]
    setup_stage(tmp_path, stage, **({"requests": 1} if stage == "synthesize" else {"max_images": 1}))
    text = (tmp_path / "params.yaml").read_text(encoding="utf-8")
    assert text.endswith("    timeout_s: 30.0\n")  # the entry's last key: extra_body goes after it
    (tmp_path / "params.yaml").write_text(text + f"    extra_body: {extra_body}\n", encoding="utf-8")
    result = cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)
    line = one_error_line(result)
    assert line.startswith(f"error: params.yaml: {stage}.t.extra_body: {where}"), line
    assert "JSON" in line, line
    assert not (tmp_path / "out").exists()
