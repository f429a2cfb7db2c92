"""What the image host (:mod:`tools.imagehost`) answers on each path: pure functions of the request, so the
server module only moves bytes and waits."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

REASONS = {200: "OK", 206: "Partial Content", 302: "Found", 400: "Bad Request", 404: "Not Found"}
PRIVATE_TARGET = "http://169.254.169.254/latest/meta-data/"
MAX_SIDE = 8000


@dataclass
class Stats:
    by_kind: Counter[str]
    by_path: Counter[str]
    killed: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"by_kind": self.by_kind, "by_path": self.by_path, "killed": self.killed}


@dataclass
class Answer:
    """Bytes to send (``data``), or a kind the server streams itself (``huge``, ``stall``, ``kill``)."""

    data: bytes = b""
    kind: str = "bytes"
    delay: float = 0.0  # seconds to wait before answering (/slow)
    head: bool = False
    body: bytes = field(default=b"", repr=False)  # what ``huge`` repeats


@lru_cache(maxsize=4096)
def png(width: int, height: int) -> bytes:
    """A valid PNG of the given size (grey rows, compressed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = (b"\x00" + b"\x80" * width) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def response(status: int, headers: dict[str, str], body: bytes, head: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def image(width: int, height: int, headers: dict[str, str], head: bool) -> bytes:
    body = png(max(1, min(width, MAX_SIDE)), max(1, min(height, MAX_SIDE)))
    ranged = headers.get("range", "")
    if not ranged.startswith("bytes="):
        return response(200, {"Content-Type": "image/png"}, body, head)
    start_s, _, end_s = ranged[6:].partition("-")
    start = int(start_s or 0)
    end = min(int(end_s) if end_s else len(body) - 1, len(body) - 1)
    return response(206, {"Content-Type": "image/png", "Content-Range": f"bytes {start}-{end}/{len(body)}"},
                    body[start:end + 1], head)


def answer(path: str, headers: dict[str, str], head: bool, stats: Stats) -> Answer:
    """The answer to ``path``; a malformed path (a missing size, a code that is no number) is a 400."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    stats.by_kind[parts[0]] += 1
    stats.by_path[path] += 1
    try:
        return _route(parts, path, headers, head, stats)
    except (ValueError, IndexError):
        return Answer(response(400, {"Content-Type": "text/plain"}, b"malformed path\n", head))


def _route(parts: list[str], path: str, headers: dict[str, str], head: bool, stats: Stats) -> Answer:
    kind = parts[0]
    text = {"Content-Type": "text/plain"}
    if kind in ("ok", "slow"):
        w, h = (parts[1], parts[2]) if kind == "ok" else (parts[2], parts[3])
        delay = int(parts[1]) / 1000 if kind == "slow" else 0.0
        return Answer(image(int(w), int(h), headers, head), delay=delay)
    if kind == "canary":
        return Answer(image(10, 10, headers, head))
    if kind == "status":
        return Answer(response(int(parts[1]), text, b"no image here\n", head))
    if kind == "html":
        return Answer(response(200, {"Content-Type": "text/html"}, b"<html><body>not an image</body></html>", head))
    if kind == "liar":
        return Answer(response(200, {"Content-Type": "image/png"}, b"<html><body>surprise</body></html>" * 10, head))
    if kind in ("redirect", "loop", "goto", "to-private"):
        return Answer(response(302, {"Location": _location(kind, parts, path)}, b"", head))
    if kind == "huge":
        return Answer(f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {2 * 1024**3}\r\n\r\n".encode(),
                      "huge", head=head, body=png(100, 100) + b"\x00" * 65536)
    if kind == "stall":
        return Answer(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n", "stall",
                      head=head)
    if kind == "kill":
        return Answer(kind="kill")
    if kind == "__stats":
        return Answer(response(200, {"Content-Type": "application/json"},
                               json.dumps(stats.as_dict()).encode(), head))
    return Answer(response(404, text, b"unknown path\n", head))


def _location(kind: str, parts: list[str], path: str) -> str:
    if kind == "redirect":
        n = int(parts[1])
        if n <= 0:
            return f"/ok/{int(parts[2])}/{int(parts[3])}/{parts[-1]}"
        return f"/redirect/{n - 1}/{int(parts[2])}/{int(parts[3])}/{parts[-1]}"
    if kind == "goto":
        return base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
    return path if kind == "loop" else PRIVATE_TARGET


async def kill_peer(peer: Any) -> list[int]:
    """SIGKILL the local process that owns the client end of this connection (found with ``ss``); its pids."""
    if not peer:
        return []
    proc = await asyncio.create_subprocess_exec("ss", "-tnpH", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    me, killed = f"{peer[0]}:{peer[1]}", []
    for line in out.decode(errors="replace").splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[3] == me:
            for pid in map(int, re.findall(r"pid=(\d+)", line)):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
    return killed
