"""Webhook receivers for bench/e2e.py --webhooks N: loopback HTTP servers that answer 204 and count changes.

They run in the bench process (on the same 2 cores as everything else, so their CPU is part of the figure:
an upper bound on what webhooks cost ingestion)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Sink:
    def __init__(self) -> None:
        self.changes = 0
        self.lock = threading.Lock()


@contextmanager
def sinks(n: int, secret: str = "bench-secret") -> Iterator[tuple[str, list[Sink]]]:
    """``n`` receivers; yields the FEEDWORKER_WEBHOOKS__ENDPOINTS value naming them, and their counters."""
    servers, found = [], []
    for _ in range(n):
        sink = Sink()

        class Handler(BaseHTTPRequestHandler):
            target = sink

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with self.target.lock:
                    self.target.changes += len(json.loads(body)["changes"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        found.append(sink)
    endpoints = [{"name": f"bench{i}", "url": f"http://127.0.0.1:{s.server_address[1]}/", "secret": secret}
                 for i, s in enumerate(servers)]
    try:
        yield json.dumps(endpoints), found
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
