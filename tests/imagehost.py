"""A real HTTP image host for tests (pytest-httpserver on loopback): PNGs of any size and the failure modes."""

from __future__ import annotations

import re
import struct
import zlib

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


def png(width: int, height: int) -> bytes:
    """A valid PNG of the given size (grey rows, compressed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = (b"\x00" + b"\x80" * width) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _ok(request: Request) -> Response:
    m = re.match(r"/ok/(\d+)/(\d+)/", request.path)
    assert m is not None
    return Response(png(int(m[1]), int(m[2])), content_type="image/png")


def serve_images(server: HTTPServer) -> str:
    """Register the paths; return the base URL. /ok/W/H/x.png, /status/CODE/x.png, /html/x.png."""
    server.expect_request(re.compile(r"^/ok/\d+/\d+/.*")).respond_with_handler(_ok)
    server.expect_request(re.compile(r"^/status/404/.*")).respond_with_data("gone", status=404)
    server.expect_request(re.compile(r"^/html/.*")).respond_with_data("<html>not an image</html>",
                                                                      content_type="text/html")
    return server.url_for("").rstrip("/")
