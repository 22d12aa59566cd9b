"""Round 27e: signals mid-work and servers that hang (issue classes 6 and 7).

1. A signal while a command works against a server that answers slowly but steadily (caption's vision
   server, synthesize's chat server, publish's Hub reading an upload slowly): exit 130 / 143 within 2 s,
   the one `interrupted` line, no output but caption's resumable `cache/`, no temp file, and no request
   the server sees after the signal.
2. Two different signals together (SIGTERM right after SIGINT): the first one's line is still written and
   the exit is the first one's (130).
3. A server that hangs a request in any of its parts (headers then a stalled body, an endless chunked body,
   a huge Content-Length trickled a byte a second, a redirect loop, a reset mid-reply, an address that never
   answers) is bounded by `timeout_s` and the reply caps: one line, exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers.children import scripts_env, start_child
from helpers.loopback import Unaccepted
from helpers.repos import REPO
from helpers.tiers import fast_first

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
HF_TOKEN = "hf_" + "Qx7" * 12


# ---------------------------------------------------------------- loopback servers


class Scripted:
    """An HTTP server on 127.0.0.1 made of plain sockets: each request's head is read, its body read at
    `read_rate` bytes a second (None: at once), the time its head arrived recorded in `requests`, and then
    `reply(conn, path, body)` answers it (a class attribute, one per behaviour)."""

    read_rate: float | None = None

    def __init__(self) -> None:
        self.requests: list[tuple[float, str]] = []
        self.closed = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.origin = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.base_url = self.origin + "/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:  # keep-alive: one request after another on this connection
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, body = data.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    self.requests.append((time.monotonic(), lines[0].split(" ")[1]))
                    length = next(
                        (int(v) for k, _, v in (x.partition(":") for x in lines) if k.lower() == "content-length"), 0
                    )
                    while len(body) < length:
                        if self.read_rate:
                            time.sleep(min(65536, length - len(body)) / self.read_rate)
                        chunk = conn.recv(min(65536, length - len(body)))
                        if not chunk:
                            return
                        body += chunk
                    if self.reply(conn, lines[0].split(" ")[1], body) is False:
                        return
            except OSError:
                pass

    def reply(self, conn: socket.socket, path: str, body: bytes):
        raise NotImplementedError

    def after(self, moment: float) -> int:
        """Requests whose head arrived after `moment` (time.monotonic())."""
        return sum(1 for at, _ in self.requests if at > moment)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def send_json(conn: socket.socket, payload, status: str = "200 OK") -> None:
    raw = json.dumps(payload).encode()
    conn.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode() + raw
    )


def completion(content: str) -> dict:
    return {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class SteadyChat(Scripted):
    """Answers every chat request after 0.2 s, in chunks: slow but steady, never stalled."""

    def reply(self, conn, path, body):
        tag = str(len(self.requests))
        raw = json.dumps(completion(f"1. a copper owl {tag} reading a map\n2. a glass tram {tag} in fog")).encode()
        conn.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
        )
        for start in range(0, len(raw), 64):
            time.sleep(0.2 * 64 / len(raw))
            conn.sendall(raw[start : start + 64])


class SlowHub(Scripted):
    """The Hub endpoints publish uses (as tests/test_publish.py's FakeHub), reading uploads at 200 kB/s."""

    read_rate = 200_000

    def reply(self, conn, path, body):
        path = path.split("?")[0]
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            request = json.loads(body)
            return send_json(conn, {"url": f"{self.origin}/datasets/{request['organization']}/{request['name']}"})
        if path == "/api/validate-yaml":
            return send_json(conn, {"errors": [], "warnings": []})
        if len(parts) >= 6 and parts[:2] == ["api", "datasets"]:
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                answer = [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                ]
                return send_json(conn, {"files": answer})
            if parts[4] == "commit":
                return send_json(conn, {"commitUrl": f"{self.origin}/x", "commitOid": "c" * 40})
            if parts[4] == "tag":
                return send_json(conn, {})
        return send_json(conn, {"error": "not found"}, "404 Not Found")


# ---------------------------------------------------------------- workspaces for each command


def chat_params(root: Path, section: str, base_url: str, extra: dict) -> None:
    entry = {"base_url": base_url, "api_key_env": None, "concurrency": 2, "timeout_s": 60}
    entry.update(max_attempts=5, backoff_base_s=30, backoff_cap_s=60, **extra)
    (root / "params.yaml").write_text(yaml.safe_dump({section: {"t": entry}}))


def synthesize_run(root: Path, server: Scripted) -> list[str]:
    chat_params(root, "synthesize", server.base_url, {"model": "m", "requests": 200, "examples": []})
    return ["-m", "scripts", "synthesize", "t", "out"]


def caption_run(root: Path, server: Scripted) -> list[str]:
    from PIL import Image

    (root / "images").mkdir()
    for index in range(60):
        Image.new("RGB", (8, 8), (index * 4, 0, 0)).save(root / "images" / f"{index}.png")
    chat_params(root, "caption", server.base_url, {"images": "images", "max_images": None, "models": [{"model": "m"}]})
    return ["-m", "scripts", "caption", "t", "out"]


def publish_run(root: Path, server: Scripted) -> list[str]:
    """publish of a release whose images make a 3 MB upload (the Hub reads it in 15 s); the git-tag check is
    stubbed (it needs a tagged DVC history), as in tests/test_hostile_classes.py."""
    import shutil

    from PIL import Image

    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    noise = os.urandom(5 * 256 * 256 * 3)
    for split in ("train", "validation"):
        folder = root / "data" / "releases" / "v2" / split
        (folder / "images" / "diffusiondb").mkdir(parents=True)
        lines = []
        for index in range(4 if split == "train" else 1):
            name = f"images/diffusiondb/{index}.png"
            start = index * 256 * 256 * 3
            Image.frombytes("RGB", (256, 256), noise[start : start + 256 * 256 * 3]).save(folder / name)
            record = {"file_name": name, "id": f"{split}{index}", "source": "diffusiondb", "text": "t"}
            lines.append(json.dumps({**record, "orig_text": "t"}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "data" / "releases" / "v2" / "README.md").write_text("---\n---\n# v2\n", encoding="utf-8")
    stub = (
        "import sys; import scripts.tools.publish as p; p.check_tag = lambda tag, name: 'c' * 40\n"
        "from scripts.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return ["-c", stub, "publish", "v2", "--repo-id", "me/v2", "--out", "hub"]


def start(root: Path, argv: list[str], server: Scripted) -> subprocess.Popen:
    extra = {"HF_ENDPOINT": server.origin, "HF_TOKEN": HF_TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1"}
    return start_child([sys.executable, *argv], cwd=root, env=scripts_env(**extra), text=False)


def left_behind(root: Path) -> list[str]:
    """Temp files and outputs a stopped run must not leave (caption's cache/ is its resumable journal)."""
    temps = [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or "staging" in p.name]
    outputs = (
        [str(p.relative_to(root)) for p in (root / "out").glob("*") if p.name != "cache"]
        if (root / "out").exists()
        else []
    )
    return temps + outputs


def stop_and_wait(process: subprocess.Popen, signums: list[int], patience: float = 10) -> tuple[float, str]:
    for signum in signums:
        os.kill(process.pid, signum)
    sent = time.monotonic()
    try:
        process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"still running {patience:.0f} s after the signal")
    return time.monotonic() - sent, process.stderr.read().decode("utf-8", "replace")


# ---------------------------------------------------------------- 1. a signal mid-work

MID_WORK = {  # command: (server, workspace, requests seen before the signal)
    "synthesize": (SteadyChat, synthesize_run, 6),
    "caption": (SteadyChat, caption_run, 6),
    "publish": (SlowHub, publish_run, 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("signame", SIGNALS)
@pytest.mark.parametrize("command", MID_WORK)
def test_a_signal_mid_work_stops_at_once_and_sends_nothing_more(tmp_path, command, signame):
    server_kind, workspace, seen = MID_WORK[command]
    server = server_kind()
    process = start(tmp_path, workspace(tmp_path, server), server)
    try:
        deadline = time.monotonic() + 60
        while len(server.requests) < seen and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert len(server.requests) >= seen and process.poll() is None, (
            process.stderr.read().decode() if process.poll() is not None else "too few requests"
        )
        time.sleep(0.1)  # mid-request: a reply arriving, an upload being read
        took, err = stop_and_wait(process, [SIGNALS[signame]])
        moment = time.monotonic() - took
        time.sleep(0.3)  # what a worker left running would still send
    finally:
        if process.poll() is None:
            process.kill()
        server.close()
    assert process.returncode == 128 + SIGNALS[signame], err
    assert err.splitlines()[-1:] == [f"interrupted ({signame})"] and "Traceback" not in err, err
    assert took < 2.0, took
    assert server.after(moment + 0.02) == 0, server.requests
    assert left_behind(tmp_path) == [], left_behind(tmp_path)


def release_ws(root: Path) -> None:
    from test_round25e import compose_ws

    compose_ws(root)


def summary_inputs(root: Path) -> None:
    from test_round26c import summary_ws

    from helpers.workspace import write_params

    write_params(root)
    summary_ws(root)


def split_inputs(root: Path) -> None:
    from test_round25e import split_ws

    split_ws(root)


def plots_ws(root: Path) -> None:
    from test_round26c import plots_inputs

    plots_inputs(root)


LOCAL = {  # row: (the signal, the call it comes at (module, name), what makes the inputs, argv, the output)
    "split-SIGTERM-mid-chunks": (
        signal.SIGTERM,
        ("scripts.split", "check_table"),
        split_inputs,
        ["split", "s", "in.parquet", "out"],
        "out",
    ),
    "plots-SIGTERM-mid-read": (
        signal.SIGTERM,
        ("scripts.plots", "read_clusters"),
        plots_ws,
        ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"],
        "data/plots",
    ),
    "summary-SIGINT-mid-read": (
        signal.SIGINT,
        ("scripts.summary", "summarise"),
        summary_inputs,
        ["summary", "data/releases", "data/summary.json"],
        "data/summary.json",
    ),
    "release-SIGTERM-mid-write": (
        signal.SIGTERM,
        ("scripts.release", "write_preview"),
        release_ws,
        ["release", "r", "data/splits", "data/releases/r"],
        "data/releases/r",
    ),
    "release-SIGINT-mid-write": (
        signal.SIGINT,
        ("scripts.release", "write_preview"),
        release_ws,
        ["release", "r", "data/splits", "data/releases/r"],
        "data/releases/r",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", LOCAL)
def test_a_signal_mid_work_to_a_local_command_is_one_line_and_no_output(tmp_path, row):
    """plots, summary, split and release, the signal sent by the process itself mid-work (a regression table:
    no break found; tests/test_interrupts.py, test_round25e.py and test_round26c.py hold their other rows)."""
    from test_round26c import SIGNAL_ON_CALL

    from helpers.workspace import leftovers

    signum, (module, name), make, argv, output = LOCAL[row]
    make(tmp_path)
    process = start_child(
        [sys.executable, "-c", SIGNAL_ON_CALL, module, name, str(int(signum)), *argv], cwd=tmp_path, env=scripts_env()
    )
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum and err.splitlines()[-1:] == [
        f"interrupted ({signal.Signals(signum).name})"
    ], err
    assert "Traceback" not in err and leftovers(tmp_path) == [] and not (tmp_path / output).exists(), err


# `python -m scripts ARGV` whose NTH rename of a cache entry into cache/ first sends SIGNUM to the process and
# takes 0.5 s: a signal while a worker thread writes an entry
SIGNAL_AT_ENTRY = """\
import os, runpy, sys, time
signum, nth = int(sys.argv[1]), int(sys.argv[2])
real, calls = os.replace, []
def replace(src, dst, *args, **kwargs):
    if os.path.basename(os.path.dirname(os.fspath(dst))) == "cache":
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signum)
            time.sleep(0.5)
    return real(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = ["scripts", *sys.argv[3:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""

AT_ENTRY = {  # row: (command, signal)
    "synthesize-SIGINT": ("synthesize", signal.SIGINT),
    "caption-SIGTERM": ("caption", signal.SIGTERM),
    "caption-SIGHUP": ("caption", signal.SIGHUP),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", AT_ENTRY)
def test_a_signal_while_a_cache_entry_is_written_leaves_no_temp(tmp_path, case):
    """The run exited at once (os._exit) while a worker renamed its entry in: `.KEY.json.tmp-*` stayed in
    cache/. The stop now waits for that one write (deadline_http.stop_calls) and no entry is written after it."""
    command, signum = AT_ENTRY[case]
    server = SteadyChat()
    workspace = synthesize_run if command == "synthesize" else caption_run
    argv = ["-c", SIGNAL_AT_ENTRY, str(int(signum)), "3", *workspace(tmp_path, server)[2:]]
    process = start(tmp_path, argv, server)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        server.close()
    err = process.stderr.read().decode("utf-8", "replace")
    assert process.returncode == 128 + signum and err.splitlines()[-1:] == [
        f"interrupted ({signal.Signals(signum).name})"
    ], err
    assert left_behind(tmp_path) == [], left_behind(tmp_path)
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) >= 3  # the entry being written is whole


# ---------------------------------------------------------------- 2. two different signals together

# `python -m scripts ARGV` whose cli.WHEN, once called, first sends SIGNUM to the process itself: a second signal
# at that point of the first one's unwinding (a race a real `kill` wins only now and then)
SECOND_SIGNAL_AT = """\
import os, runpy, sys
import scripts.cli as cli
when, signum = sys.argv[1], int(sys.argv[2])
real = getattr(cli, when)
def signalled(*args, **kwargs):
    setattr(cli, when, real)
    if when == "_restore_signal_handlers":
        real(*args, **kwargs)
        os.kill(os.getpid(), signum)
        return None
    os.kill(os.getpid(), signum)
    return real(*args, **kwargs)
setattr(cli, when, signalled)
sys.argv = ["scripts", *sys.argv[3:]]
runpy.run_module("scripts", run_name="__main__", alter_sys=True)
"""

TOGETHER = {  # row: (first signal, second, where the second lands, the exit code)
    "SIGINT-then-SIGTERM-before-the-line": (signal.SIGINT, signal.SIGTERM, "_interrupted", 130),
    "SIGINT-then-SIGQUIT-before-the-line": (signal.SIGINT, signal.SIGQUIT, "_interrupted", 130),
    "SIGTERM-then-SIGHUP-before-the-line": (signal.SIGTERM, signal.SIGHUP, "_interrupted", 143),
    "SIGINT-then-SIGTERM-as-handlers-go-back": (signal.SIGINT, signal.SIGTERM, "_restore_signal_handlers", 130),
}


@pytest.mark.parametrize("case", fast_first(TOGETHER))
def test_two_signals_together_keep_the_first_ones_line_and_code(tmp_path, case):
    """SIGTERM right after a Ctrl-C, before the first line was written, printed only `interrupted again
    (SIGTERM): stopping now` and exited 143; as the command's handlers were put back, a second line and 143.
    The run's line and code are the first signal's."""
    first, second, when, code = TOGETHER[case]
    server = SteadyChat()
    argv = ["-c", SECOND_SIGNAL_AT, when, str(int(second)), *synthesize_run(tmp_path, server)[2:]]
    process = start(tmp_path, argv, server)
    try:
        deadline = time.monotonic() + 60
        while len(server.requests) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        took, err = stop_and_wait(process, [first])
    finally:
        if process.poll() is None:
            process.kill()
        server.close()
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert process.returncode == code and "Traceback" not in err and took < 2.0, (process.returncode, err, took)
    assert len(said) == 1 and said[0].startswith(f"interrupted ({signal.Signals(first).name})"), err
    assert left_behind(tmp_path) == [], left_behind(tmp_path)


# ---------------------------------------------------------------- 3. servers that hang a request


def reset(conn: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed server or a middlebox does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def stalled_body(conn, path, body):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(30)
    return False


def endless_chunks(conn, path, body):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
    for _ in range(100_000):
        conn.sendall(chunk)
    return False


def trickle(conn, path, body):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
    for _ in range(60):
        conn.sendall(b"[")
        time.sleep(1)
    return False


def redirect_loop(conn, path, body):
    conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\n\r\n".encode())


def reset_mid_reply(conn, path, body):
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"choices": [')
    time.sleep(0.05)
    reset(conn)
    return False


HANGS = {
    "headers-then-a-stalled-body": stalled_body,
    "an-endless-chunked-body": endless_chunks,
    "a-huge-length-trickled": trickle,
    "a-redirect-loop": redirect_loop,
    "a-reset-mid-reply": reset_mid_reply,
    "an-address-that-never-answers": None,
}


def hang_server(case: str) -> Scripted:
    return type("Hanging", (Scripted,), {"reply": staticmethod(HANGS[case])})() if HANGS[case] else Unaccepted()


def one_line_in(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode("utf-8", "replace")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in err, (result.returncode, err[-2000:])
    return lines[0]


def bounded_synthesize(root: Path, base_url: str) -> list[str]:
    chat_params(root, "synthesize", base_url, {"model": "m", "requests": 2, "examples": []})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["synthesize"]["t"].update(timeout_s=1, max_attempts=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return ["-m", "scripts", "synthesize", "t", "out"]


@pytest.mark.slow
@pytest.mark.parametrize("client", ["synthesize", "publish"])
@pytest.mark.parametrize("case", HANGS)
def test_a_server_that_hangs_a_request_is_one_line_within_its_timeout(tmp_path, case, client):
    server = hang_server(case)
    origin = server.base_url.removesuffix("/v1")
    argv = bounded_synthesize(tmp_path, server.base_url) if client == "synthesize" else publish_run(tmp_path, server)
    environment = scripts_env(
        HF_ENDPOINT=origin, HF_TOKEN=HF_TOKEN, HF_HUB_DOWNLOAD_TIMEOUT="1", HF_HUB_ETAG_TIMEOUT="1"
    )
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=environment, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{client} hung on a server that hangs a request ({case})")
    finally:
        server.close()
    line = one_line_in(result)
    assert HF_TOKEN[3:12] not in line and time.monotonic() - started < 20, line
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name], list(tmp_path.rglob("*.tmp*"))


# ---------------------------------------------------------------- 3b. a host name that resolves slowly

SLOW_RESOLVER = """\
import os, signal, socket, time

_real = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):  # as the C resolver: no signal handler runs until it returns
    if host == "slow.test":
        open(os.environ["RESOLVING_MARK"], "w").close()
        held = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            time.sleep(20)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        host = "127.0.0.1"
    return _real(host, *args, **kwargs)


socket.getaddrinfo = getaddrinfo
"""


def slow_resolver_env(root: Path, origin: str) -> dict:
    """The environment of a process whose resolver takes 20 s for `slow.test` (a sitecustomize module)."""
    (root / "stub").mkdir()
    (root / "stub" / "sitecustomize.py").write_text(SLOW_RESOLVER)
    slow = origin.replace("127.0.0.1", "slow.test")
    return scripts_env(
        PYTHONPATH=f"{root / 'stub'}{os.pathsep}{REPO}",
        RESOLVING_MARK=str(root / "stub" / "resolving"),
        HF_ENDPOINT=slow,
        HF_TOKEN=HF_TOKEN,
        HF_HUB_DOWNLOAD_TIMEOUT="1",
    )


SLOW_NAMES = {  # case: (command, the signal sent while the name resolves or None: wait for the timeout)
    "synthesize-timeout": ("synthesize", None),
    "publish-timeout": ("publish", None),
    "publish-ctrl-c": ("publish", signal.SIGINT),
    "publish-sigterm": ("publish", signal.SIGTERM),
    "caption-timeout": ("caption", None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_NAMES)
def test_a_host_name_that_resolves_slowly_is_bounded_by_the_timeout_and_the_signal(tmp_path, case):
    """A host name that resolves slowly held the request past `timeout_s` (the resolver's own timeouts),
    and publish's Ctrl-C until it resolved: the lookup now waits by the request's deadline, in slices."""
    command, signum = SLOW_NAMES[case]
    server = SteadyChat() if command != "publish" else SlowHub()
    slow_url = server.base_url.replace("127.0.0.1", "slow.test")
    if command == "synthesize":
        argv = bounded_synthesize(tmp_path, slow_url)
    elif command == "caption":
        argv = caption_run(tmp_path, server)
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        params["caption"]["t"].update(base_url=slow_url, timeout_s=1, max_attempts=1)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    else:
        argv = publish_run(tmp_path, server)
    process = start_child(
        [sys.executable, *argv], cwd=tmp_path, env=slow_resolver_env(tmp_path, server.origin), text=False
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "stub" / "resolving").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert (tmp_path / "stub" / "resolving").exists(), (
            process.stderr.read().decode() if process.poll() is not None else "no lookup"
        )
        if signum is not None:
            time.sleep(0.3)  # well into the 20 s lookup
        took, err = stop_and_wait(process, [signum] if signum else [], patience=15)
    finally:
        if process.poll() is None:
            process.kill()
        server.close()
    assert "Traceback" not in err, err
    if signum is None:
        assert process.returncode == 2 and len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
        assert took < 5, (took, err)  # the lookup began: 1 s of timeout_s, the exit
    else:
        assert (
            process.returncode == 128 + signum
            and err.splitlines()[-1] == f"interrupted ({signal.Signals(signum).name})"
        )
        assert took < 2.0, (took, err)
    assert server.requests == [] and not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def chat_call(url: str, cancel: threading.Event):
    from scripts.lib.chat_client import post_chat

    return lambda: post_chat(url + "/chat/completions", {"model": "m", "messages": []}, None, 0.3, cancel)


def hub_call(url: str, cancel: threading.Event):
    from scripts.tools.hub_http import hub_client_factory

    client = hub_client_factory(0.3)()  # imports httpx and huggingface_hub before the clock starts
    return lambda: client.get(url + "/api/whoami-v2")


IN_PROCESS = {  # row: (the call, cancelled after 0.1 s?, what it raises)
    "chat-timeout": (chat_call, False, "TransientError: no response within 0.3s"),
    "chat-cancelled": (chat_call, True, "Cancelled: "),
    "hub-timeout": (hub_call, False, "ConnectTimeout: request deadline passed while resolving the host name"),
}


@pytest.mark.parametrize("case", IN_PROCESS)
def test_a_slow_host_name_lookup_ends_by_the_requests_deadline(monkeypatch, case):
    """The same in this process (every tier): a lookup that holds its thread 10 s, as the C resolver does."""
    call, cancelled, said = IN_PROCESS[case]
    release, real = threading.Event(), socket.getaddrinfo

    def slow_lookup(host, *args, **kwargs):
        if host == "slow.test":
            release.wait(10)
        return real("127.0.0.1" if host == "slow.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    cancel = threading.Event()
    if cancelled:
        threading.Timer(0.1, cancel.set).start()
    request = call("http://slow.test:9", cancel)
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as caught:
            request()
    finally:
        release.set()
    took = time.monotonic() - started
    assert f"{type(caught.value).__name__}: {caught.value}".startswith(said), repr(caught.value)
    assert took < 0.8, took
