"""A real HTTP image host for tests (pytest-httpserver on loopback): PNGs of any size and the failure modes."""

from __future__ import annotations

import re

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tools.imagepaths import png  # one PNG builder for the tests and the benchmarks' image host

__all__ = ["png", "serve_images"]


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
