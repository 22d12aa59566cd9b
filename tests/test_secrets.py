"""Secrets stay secret and code never comes from data: the chat API key never leaves its header (a
redirect, an echoing server, an error quoting it, a key that cannot be a header), a hostile reply is one
line, and static checks over scripts/ keep model folders and data files away from code execution
(no trust_remote_code, safetensors only, no pickle) and credentials out of the committed DVC config.
"""

from __future__ import annotations

import ast
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import parse_python
from helpers.workspace import REPO, error_line, write_params
from scripts.cli import main

pytestmark = pytest.mark.usefixtures("no_proxy")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """A workspace with the repository's params.yaml, as the current folder."""
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


# ---------------------------------------------------------------- secrets: the API key stays in its header

API_KEY = "sk-guarantee-NEVER-WRITE-ME-0123456789"


def fragments(text: str, key: str = API_KEY, n: int = 8) -> list[str]:
    return sorted({key[i : i + n] for i in range(len(key) - n + 1) if key[i : i + n] in text})


class Server:
    """A loopback HTTP server; `respond(handler, body)` answers each POST; every request is recorded."""

    def __init__(self, respond):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                server.requests.append(
                    {"method": self.command, "authorization": self.headers.get("Authorization"), "body": body}
                )
                return body

            def do_POST(self):
                respond(self, self._record())

            do_GET = do_POST

            def send(self, status, payload, headers=()):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(raw))), *headers]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(content: str) -> dict:
    return {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


@pytest.fixture
def servers():
    started: list[Server] = []
    yield lambda respond: started.append(Server(respond)) or started[-1]
    for server in started:
        server.close()


def synthesize_ws(root: Path, base_url: str, monkeypatch, key: str = API_KEY) -> None:
    from test_synthesize import raw_params

    (root / "examples.txt").write_text("".join(f"an example prompt {i}\n" for i in range(10)), encoding="utf-8")
    entry = raw_params(
        f"{base_url}/v1", root / "examples.txt", requests=2, max_attempts=2, api_key_env="T2I_GUARANTEE_KEY"
    )
    write_params(root, synthesize={"t": entry})
    monkeypatch.setenv("T2I_GUARANTEE_KEY", key)


def synthesize_error(err: str) -> str:
    """synthesize logs its progress on stderr; the error is the last line, and the only `error:` one."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


def written_text(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file() and p.name != "params.yaml"
    )


def test_a_redirect_never_carries_the_key_to_another_origin(ws, capsys, monkeypatch, servers):
    elsewhere = servers(lambda h, body: h.send(200, completion("a stolen prompt")))
    configured = servers(lambda h, body: h.send(302, {}, [("Location", f"{elsewhere.url}/v1/chat/completions")]))
    synthesize_ws(ws, configured.url, monkeypatch)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "redirect" in synthesize_error(err), err
    assert [r["authorization"] for r in elsewhere.requests if r["authorization"]] == []
    assert fragments(out + err + written_text(ws)) == []


def test_a_server_echoing_the_key_never_gets_it_written(ws, capsys, monkeypatch, servers):
    def echo(handler, body):
        auth = handler.headers.get("Authorization")
        handler.send(
            200,
            {
                **completion(f"a red fox {auth}\n- a grey owl {API_KEY[3:20]} at dusk\n- a blue jay"),
                "echo": {"headers": {"authorization": auth}},
                auth: "as a key",
            },
        )

    synthesize_ws(ws, servers(echo).url, monkeypatch)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 0, err
    assert (ws / "out/prompts.txt").read_text(encoding="utf-8").count("a blue jay") == 2
    assert fragments(out + err + written_text(ws)) == []


def test_an_error_reply_quoting_part_of_the_key_is_redacted(ws, capsys, monkeypatch, servers):
    server = servers(lambda h, body: h.send(401, {"error": {"message": f"invalid key ...{API_KEY[4:-2]}"}}))
    synthesize_ws(ws, server.url, monkeypatch)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "HTTP 401" in synthesize_error(err)
    assert fragments(out + err + written_text(ws)) == []


@pytest.mark.parametrize(
    "bad_key", [API_KEY + "\r", API_KEY + "\n", "sk-with space-0123456789", "sk-ünïcode-0123456789"]
)
def test_a_key_that_cannot_be_a_header_is_refused_without_printing_it(ws, capsys, monkeypatch, servers, bad_key):
    server = servers(lambda h, body: h.send(200, completion("- a red fox")))
    synthesize_ws(ws, server.url, monkeypatch, key=bad_key)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "T2I_GUARANTEE_KEY" in error_line(err)
    assert fragments(out + err, key=bad_key.strip()) == [] and server.requests == []


def test_a_deeply_nested_reply_is_one_line(ws, capsys, monkeypatch, servers):
    def deep(handler, body):
        raw = _nested().encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    synthesize_ws(ws, servers(deep).url, monkeypatch)
    code, _, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "not JSON" in synthesize_error(err)


# ---------------------------------------------------------------- security invariants of the code
# Static checks over scripts/: hostile model folders and data files must never reach code execution.
# (Secrets: tests/test_synthesize.py proves the API key never reaches stdout, stderr or the cache;
# tests/test_s3_remote.py proves S3 credentials never reach a committed file or a `dvc push -v` log.)


SCRIPTS = sorted((REPO / "scripts").rglob("*.py"))
UNSAFE_LOADS = {
    "pickle.load",
    "pickle.loads",
    "torch.load",
    "joblib.load",
    "dill.load",
    "cloudpickle.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "yaml.unsafe_load",
    "yaml.full_load",
    "marshal.loads",
    "shelve.open",
}


def calls(path: Path):
    for node in ast.walk(parse_python(path)):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_no_trust_remote_code_anywhere():
    """trust_remote_code runs Python shipped inside a model folder: never set, not even to a variable."""
    offenders = [
        f"{p.relative_to(REPO)}:{c.lineno}"
        for p in SCRIPTS
        for c, _ in calls(p)
        if keyword(c, "trust_remote_code") is not None and ast.unparse(keyword(c, "trust_remote_code")) != "False"
    ]
    offenders += [
        str(p.relative_to(REPO))
        for p in SCRIPTS
        if "trust_remote_code=True" in p.read_text(encoding="utf-8").replace(" ", "")
    ]
    assert not offenders, f"trust_remote_code set at {offenders}"


def test_model_weights_load_from_safetensors_only():
    """Every diffusers/transformers model load says use_safetensors=True (a .bin file is a pickle)."""
    loads = [
        (p, c, name)
        for p in SCRIPTS
        for c, name in calls(p)
        if name.endswith(".from_pretrained") and not name.split(".")[-2].endswith(("Tokenizer", "Scheduler", "Config"))
    ]
    assert loads, "no model load found: this check is looking in the wrong place"
    unsafe = [
        f"{p.relative_to(REPO)}:{c.lineno} {name}" for p, c, name in loads if not is_true(keyword(c, "use_safetensors"))
    ]
    assert not unsafe, f"model loads without use_safetensors=True: {unsafe}"
    saves = [
        (p, c)
        for p in SCRIPTS
        for c, name in calls(p)
        if name.endswith(".save_pretrained")
        and not name.split(".")[-2].lower().endswith(("tokenizer", "scheduler", "config"))
    ]  # no weights
    assert all(is_true(keyword(c, "safe_serialization")) for _, c in saves)


def test_no_pickle_loads_of_data():
    offenders = [
        f"{p.relative_to(REPO)}:{c.lineno} {name}" for p in SCRIPTS for c, name in calls(p) if name in UNSAFE_LOADS
    ]
    offenders += [
        f"{p.relative_to(REPO)}:{c.lineno} allow_pickle"
        for p in SCRIPTS
        for c, _ in calls(p)
        if is_true(keyword(c, "allow_pickle"))
    ]
    # PyYAML's load needs a Loader (positional or keyword) and only SafeLoader is safe; a one-argument
    # `.load(text)` is ruamel's YAML() (round-trip, safe), unless it was built with typ="unsafe".
    safe_loaders = ("yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "CSafeLoader")
    for p in SCRIPTS:
        for c, name in calls(p):
            loader = keyword(c, "Loader") or (c.args[1] if len(c.args) > 1 else None)
            if name.endswith("yaml.load") and loader is not None and ast.unparse(loader) not in safe_loaders:
                offenders.append(f"{p.relative_to(REPO)}:{c.lineno} {name} with {ast.unparse(loader)}")
            typ = keyword(c, "typ")
            if name.endswith("YAML") and isinstance(typ, ast.Constant) and typ.value == "unsafe":
                offenders.append(f"{p.relative_to(REPO)}:{c.lineno} YAML(typ='unsafe')")
    assert not offenders, f"unsafe deserialisation: {offenders}"


def test_committed_dvc_config_holds_no_credentials():
    config = (REPO / ".dvc" / "config").read_text(encoding="utf-8")
    for key in (
        "access_key_id",
        "secret_access_key",
        "session_token",
        "password",
        "credentialpath",
        "gdrive_client_secret",
    ):
        assert key not in config, f".dvc/config sets {key}: credentials belong in .dvc/config.local or the environment"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=REPO).returncode
    assert ignored == 0, ".dvc/config.local is not ignored by git"
