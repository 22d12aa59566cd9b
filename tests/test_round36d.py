"""Round 36d: what the Hub client does besides the requests publish asks of it; every row failed before its fix.

A  huggingface_hub's user agent fetched `{HF_ENDPOINT}/api/agent-harnesses` (a request never asked for, to whatever
   endpoint is set; HF_HUB_DISABLE_TELEMETRY=0 or an agent variable too); now its telemetry is off in publish
B  it wrote that answer to HF_HOME/.agent_harnesses.json (refreshing a day-old one): a file outside any output;
   now HF_HOME gains no file and one there is left as it was
C  the endpoint chose that registry: a list answer failed every later request (`Hub: 'list' object has no
   attribute 'get'`), HTML or megabytes were fetched; now never asked for, the upload goes through
D  HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) with an upload: the tag checked and the folder written before every
   request failed; now one line naming the variable, before any work
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_publish import TOKEN, FakeHub, tiny_release

from helpers import REPO, env

REGISTRY = "/api/agent-harnesses"


class RegistryHub(FakeHub):
    """test_publish's fake Hub, answering its agent-harness registry with `registry` (raw bytes, JSON)."""

    registry = b'{"standardEnvVars": ["AI_AGENT"], "harnesses": {}}'

    def _handle(self) -> None:
        if self.path.split("?")[0] != REGISTRY:
            return super()._handle()
        self.requests.append((self.command, self.path, {}, b""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.registry)))
        self.end_headers()
        self.wfile.write(self.registry)

    do_GET = do_POST = do_PUT = do_PATCH = _handle


UPLOAD = """
import sys
from pathlib import Path
from scripts.lib.errors import DataError
from scripts.tools.publish import upload
try:
    print(upload(Path(sys.argv[1]), "my-org/t2i-v2", "v2", "c" * 40, private=False))
except DataError as exc:
    sys.exit(f"error: {exc}")
"""


def upload_through(tmp_path: Path, registry: bytes | None = None, **extra: str):
    """A real process uploading a two-file folder to a loopback Hub: (result, paths requested, HF_HOME)."""
    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# card\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["a picture"]}), folder / "data" / "train-00000-of-00001.parquet")
    RegistryHub.requests, RegistryHub.files = [], {}
    if registry is not None:
        RegistryHub.registry = registry
    server = ThreadingHTTPServer(("127.0.0.1", 0), RegistryHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = Path(extra.pop("HF_HOME", tmp_path / "hf-home"))
    environ = {k: v for k, v in env().items() if not k.startswith("HF_") and "TELEMETRY" not in k}
    environ.update(
        HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
        HF_TOKEN=TOKEN,
        HF_HOME=str(home),
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
        **extra,
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", UPLOAD, str(folder)],
            cwd=REPO,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
        server.server_close()
    paths = [path.split("?")[0] for _, path, _, _ in RegistryHub.requests]
    return result, paths, home


def files_under(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*")}


def uploaded(result: subprocess.CompletedProcess, paths: list[str]) -> None:
    assert result.returncode == 0 and "c" * 12 in result.stdout, result.stdout + result.stderr
    assert paths[-1].startswith("/api/datasets/my-org/t2i-v2/tag/"), paths


# --- A: no request outside the publish protocol ------------------------------------------------------------

ENVIRONMENTS = {  # what the user's environment says; none asks for the registry to be fetched
    "defaults": {},
    "telemetry-explicitly-on": {"HF_HUB_DISABLE_TELEMETRY": "0"},
    "disable-telemetry-false": {"DISABLE_TELEMETRY": "false"},
    "an-agent-variable": {"AI_AGENT": "claude-code", "AGENT": "x"},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ENVIRONMENTS))
def test_a_publish_sends_only_the_requests_of_its_protocol(tmp_path, case):
    result, paths, _ = upload_through(tmp_path, **ENVIRONMENTS[case])
    uploaded(result, paths)
    assert REGISTRY not in paths, paths
    assert all(p.startswith(("/api/repos/create", "/api/datasets/my-org/t2i-v2/", "/api/validate-yaml")) for p in paths)


# --- B: HF_HOME gains no file ------------------------------------------------------------------------------


def stale_registry(home: Path) -> None:
    home.mkdir(parents=True)
    (home / ".agent_harnesses.json").write_text('{"standardEnvVars": [], "harnesses": {}}', encoding="utf-8")
    os.utime(home / ".agent_harnesses.json", (1_000_000_000, 1_000_000_000))  # older than its day


HOMES = {  # HF_HOME before the run
    "absent": lambda home: None,
    "empty": lambda home: home.mkdir(parents=True),
    "a-day-old-registry": stale_registry,
    "a-token-file": lambda home: (home.mkdir(parents=True), (home / "token").write_text("hf_" + "s" * 34)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HOMES))
def test_b_hf_home_gains_no_file_and_keeps_its_own(tmp_path, case):
    home = tmp_path / "hf-home"
    HOMES[case](home)
    before = files_under(home) if home.exists() else None
    result, paths, _ = upload_through(tmp_path, HF_HOME=str(home))
    uploaded(result, paths)
    assert (files_under(home) if home.exists() else None) == before


# --- C: whatever the endpoint would answer as a registry changes nothing ----------------------------------

REGISTRIES = {
    "a-list": b'[{"harnesses": {}}]',
    "html": b"<html><body>Hub maintenance</body></html>",
    "megabytes": b'{"standardEnvVars": ["' + b"A" * 4_000_000 + b'"], "harnesses": {}}',
    "harnesses-a-list": b'{"standardEnvVars": "AI_AGENT", "harnesses": ["x"]}',
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REGISTRIES))
def test_c_a_hostile_registry_answer_changes_nothing(tmp_path, case):
    result, paths, home = upload_through(tmp_path, REGISTRIES[case], AI_AGENT="claude-code")
    uploaded(result, paths)
    assert REGISTRY not in paths and not home.exists(), paths
    assert "{}".join(sorted(RegistryHub.files)) == "README.md{}data/train-00000-of-00001.parquet"


# --- D: an upload while the Hub client is told to stay offline --------------------------------------------

OFFLINE = {
    "hf-hub-offline-1": {"HF_HUB_OFFLINE": "1"},
    "hf-hub-offline-true": {"HF_HUB_OFFLINE": "True"},
    "transformers-offline": {"TRANSFORMERS_OFFLINE": "yes"},
}


@pytest.mark.parametrize("case", sorted(OFFLINE))
def test_d_an_offline_upload_is_one_line_before_any_work(tmp_path, case):
    root = tiny_release(tmp_path / "repo")
    environ = {k: v for k, v in env().items() if not k.endswith("_OFFLINE")}
    environ.update(PYTHONPATH=str(REPO), HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf-home"), **OFFLINE[case])
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "publish", "v2", "--repo-id", "my-org/t2i-v2", "--out", "hub"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert next(iter(OFFLINE[case])) in lines[0] and "--dry-run" in lines[0], lines
    assert not (root / "hub").exists() and not (tmp_path / "hf-home").exists()
    assert TOKEN not in result.stdout + result.stderr
