"""A real webhook receiver on loopback for tests: checks each POST's signature and timestamp as the README tells
receivers to, records the batches it took, and can be stopped (connection refused) and started again on the
same port."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, secret: bytes, status: int = 204) -> None:
        self.secret, self.status = secret, status
        self.batches: list[list[dict[str, Any]]] = []
        self.refused: list[str] = []  # why a request was refused (bad signature, stale timestamp)
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                problem = receiver.check(self.headers.get("X-Feedworker-Timestamp", ""),
                                         self.headers.get("X-Feedworker-Signature", ""), body)
                if problem is None and receiver.status < 300:
                    receiver.batches.append(json.loads(body)["changes"])
                elif problem is not None:
                    receiver.refused.append(problem)
                self.send_response(401 if problem else receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def check(self, stamp: str, signature: str, body: bytes) -> str | None:
        """The receiver's check, as in the README."""
        expected = "sha256=" + hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "bad signature"
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return "stale timestamp"
        return None

    def cursors(self) -> list[int]:
        return [int(c["cursor"]) for batch in self.batches for c in batch]
