"""generate with `allow_download: true` fetches its model through huggingface_hub, whose user agent, unless
telemetry is off, fetched `{HF_ENDPOINT}/api/agent-harnesses` (a request never asked for) and wrote
`HF_HOME/.agent_harnesses.json` (a file outside every output, its content the endpoint's). Round 36d turned that
off for publish; render.download_model now does the same before its first request. Each row runs the download
against a loopback endpoint that has no model (the download then fails in its one line) and failed before.
slow: the row imports diffusers in a child process.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from helpers import REPO
from helpers.children import scripts_env

pytestmark = pytest.mark.slow

CHILD = """
from scripts.lib.errors import DataError
from scripts.lib.params import Generate
from scripts.lib.render import download_model
try:
    download_model(Generate(model="someone/no-such-model", allow_download=True))
except DataError as exc:
    print("refused:", exc)
"""


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self):  # http.server's name
        self.seen.append(self.path)
        body = b'{"harnesses": {"t2i": {"envVars": {"T2I": "*"}}}, "standardEnvVars": ["AI_AGENT"]}'
        self.send_response(200 if self.path.startswith("/api/agent-harnesses") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "env",
    [{}, {"HF_HUB_DISABLE_TELEMETRY": "0"}, {"AI_AGENT": "t2i"}],
    ids=["plain", "telemetry asked for", "an agent's variable set"],
)
def test_a_model_download_sends_no_telemetry_and_writes_nothing_in_hf_home(tmp_path: Path, env):
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=REPO,
            env={
                **scripts_env(),
                "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
                "HF_HOME": str(hf_home),
                "HF_HUB_CACHE": str(tmp_path / "cache"),
                "NO_PROXY": "127.0.0.1",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
    assert "refused: generate.model=someone/no-such-model: cannot download" in done.stdout, done.stderr[-2000:]
    assert Recorder.seen and not [path for path in Recorder.seen if "agent-harnesses" in path], Recorder.seen
    assert sorted(p.name for p in hf_home.rglob("*")) == []
