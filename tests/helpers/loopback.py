"""An OpenAI-style HTTP server on 127.0.0.1, for the chat client's callers (synthesize, caption), one
that hands each POST's JSON body to a method, and a port there whose connects hang (Ctrl-C tests)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Loopback:
    """A threading HTTP server on a free port answering with `handler` (a BaseHTTPRequestHandler class);
    `base_url` is its OpenAI-style root. Close it with close()."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()


class JsonServer:
    """A Loopback whose every POST's JSON body goes to `answer(handler, body)`, which replies (send_json);
    no request is logged. A server's state is set before this __init__ runs: a request may come at once."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                server.answer(self, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        self.loopback = Loopback(Handler)
        self.base_url = self.loopback.base_url

    def answer(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.loopback.close()


def send_json(handler: BaseHTTPRequestHandler, status: int, payload, headers: dict | None = None) -> None:
    """Reply with `payload` as JSON (or raw bytes); a client that already gave up (a timeout test) is not
    an error."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass


class Unaccepted:
    """A port on 127.0.0.1 where a TCP connect hangs, without any network: a listener with backlog 0
    that never accepts, its queue filled by idle connects, so Linux drops every further SYN and a
    client waits in SYN-SENT until its own timeout. `connecting()` counts such waiting clients."""

    def __init__(self, fillers: int = 4):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.fillers = [_idle_connect(self.port) for _ in range(fillers)]
        time.sleep(0.2)  # the queue is full; the fillers left over wait in SYN-SENT themselves
        self._before = self._syn_sent()

    def _syn_sent(self) -> int:
        """Sockets in SYN-SENT (state 02) towards our port, from /proc/net/tcp."""
        port = f"{self.port:04X}"
        with open("/proc/net/tcp", encoding="ascii") as table:
            return sum(
                1
                for line in table.readlines()[1:]
                if (fields := line.split())[3] == "02" and fields[2].split(":")[1] == port
            )

    def connecting(self) -> int:
        return self._syn_sent() - self._before

    def close(self) -> None:
        for sock in self.fillers:
            sock.close()
        self.listener.close()


def _idle_connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect(("127.0.0.1", port))
    return sock
