"""Round 8: `runtime.ray_address` naming a cluster that is not there, or is not Ray. Every row failed before
its fix: Ray retried its GCS connect for minutes, a Ctrl-C waited up to 40 s inside Ray's C++, and Ray's C++
log lines (`rpc_client.h: Failed to connect to GCS ...`) went straight to stderr. Now: one line and exit 2
within runtime.connect_timeout_s (8 s) and the command's start, or 130 within 2 s of a Ctrl-C; no Ray
process left, no output. Each row runs the real `dedup` command on Ray with a hard timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.children import start_scripts
from helpers.ray_runs import session_processes
from helpers.tiers import fast_first

FAIL_WITHIN_S = 20  # connect_timeout_s (8) plus the command's imports of Ray on a loaded two-core machine
INTERRUPT_WITHIN_S = 2
HARD_TIMEOUT_S = 90  # the run before the fix: minutes; it is killed (with its session) and the row fails


class CountingHTTPServer(ThreadingHTTPServer):
    """Listens and answers HTTP, never Ray; counts connections (the first is the command's own probe)."""

    connections = 0

    def verify_request(self, request, client_address) -> bool:
        self.connections += 1
        return True


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # gRPC's preface is a bad request: no log line for it
        pass


@pytest.fixture
def http_server() -> Iterator[CountingHTTPServer]:
    # on every interface: Ray turns 127.0.0.1 into this machine's address before it connects
    server = CountingHTTPServer(("0.0.0.0", 0), QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ADDRESSES = {
    "closed_port": lambda server: f"127.0.0.1:{closed_port()}",
    # TEST-NET-3: never routed (dropped, or answered by something that is not Ray, as in a sandbox)
    "unroutable": lambda server: "203.0.113.1:6379",
    "http_server": lambda server: f"127.0.0.1:{server.server_address[1]}",
}

CASES = {
    "closed_port": ("closed_port", False),
    "unroutable": ("unroutable", False),
    "http_server": ("http_server", False),
    "ctrl_c_while_joining_an_http_server": ("http_server", True),
}


def workspace(root: Path, address: str) -> Path:
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "text": ["a red fox", "a red fox runs", "a grey wolf"]}), root / "in.parquet"
    )
    (root / "params.yaml").write_text(
        f'dedup: {{threshold: 0.7}}\nruntime: {{engine: ray, ray_address: "{address}"}}\n', encoding="utf-8"
    )
    (root / "out").mkdir()
    return root


def start(root: Path) -> subprocess.Popen:
    return start_scripts(root, "dedup", "s", "in.parquet", "out/s.parquet")


def finish(process: subprocess.Popen, timeout: float) -> str:
    """The run's stderr; a run past `timeout` is killed, its session with it, and the row fails."""
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"still running after {timeout} s")


def wait_until_joining(process: subprocess.Popen, server: CountingHTTPServer) -> None:
    """Ray is connecting: the server has had a connection beyond the command's first."""
    deadline = time.monotonic() + HARD_TIMEOUT_S
    while server.connections < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None and server.connections >= 2, "the run never tried to join"


@pytest.mark.parametrize("target, interrupt", fast_first([pytest.param(*row, id=name) for name, row in CASES.items()]))
def test_a_cluster_that_is_not_there_is_one_line_in_bounded_time(tmp_path, http_server, target, interrupt):
    address = ADDRESSES[target](http_server)
    root = workspace(tmp_path, address)
    began = time.monotonic()
    process = start(root)
    if interrupt:
        wait_until_joining(process, http_server)
        os.killpg(process.pid, signal.SIGINT)
        began = time.monotonic()
    err = finish(process, INTERRUPT_WITHIN_S + 30 if interrupt else HARD_TIMEOUT_S)
    took = time.monotonic() - began
    lines = err.strip().splitlines()
    assert process.returncode == (130 if interrupt else 2), err
    assert len(lines) == 1, err
    if not interrupt:
        assert lines[0].startswith(f"error: runtime.ray_address='{address}': cannot start or join Ray ("), err
    assert took <= (INTERRUPT_WITHIN_S if interrupt else FAIL_WITHIN_S), f"{took:.1f} s"
    assert not session_processes(process.pid), "processes of the run still alive"
    assert not list((root / "out").iterdir())
