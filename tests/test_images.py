"""The image checker end to end, against real HTTP servers on loopback (started here).

Every refusal test is built so that a broken guard could only reach loopback: the test servers are the only
listeners, the allow-list names 127.0.0.1/32 at most, and names come from a static test resolver or /etc/hosts.
Refusals of non-loopback addresses (metadata, private) are tested on the policy functions (test_netguard.py)
and, end to end, inside a network namespace (test_images_netns.py).

Over 300 lines: one case a test (status, size, retries, limits) against the same loopback image server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import multiprocessing
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image

from tasks.errors import ChecksTimedOut
from tasks.images.checker import ImageChecker
from tasks.limits import ImageLimits
from tasks.shapes import ImageResult
from tests.imagehost import png
from tests.processes import free_port

LOOPBACK = ["127.0.0.1/32"]


def b64(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class Host:
    """A loopback HTTP/1.1 server on its own loop thread: images and every way an image URL goes wrong.

    Counts requests per first path segment (``hits``) and per path (``paths``), connections, the most requests
    in flight at once, and body bytes written by the streaming paths (``sent``).
    """

    def __init__(self, bind: str = "127.0.0.1", drip: float = 0.2) -> None:
        self.bind, self.drip = bind, drip
        self.hits: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.seen: dict[str, dict[str, str]] = {}  # request headers, by path
        self.arrivals: list[tuple[float, str]] = []
        self.connections = self.in_flight = self.max_in_flight = self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, bind, 0), self.loop).result()
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, path: str, host: str | None = None) -> str:
        name = host or (f"[{self.bind}]" if ":" in self.bind else self.bind)
        return f"http://{name}:{self.port}{path}"

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                path = head[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
                parts = path.strip("/").split("/")
                self.hits[parts[0]] += 1
                self.paths[path] += 1
                self.arrivals.append((time.monotonic(), path))
                self.seen[path] = headers
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if not await self._route(parts, path, headers, writer):
                        return
                finally:
                    self.in_flight -= 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _route(self, parts: list[str], path: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        kind, seen = parts[0], self.paths[path]
        if kind in ("ok", "canary"):
            w, h = (int(parts[1]), int(parts[2])) if kind == "ok" else (10, 10)
            self._image(writer, png(w, h), "image/png", headers)
        elif kind == "file":
            body, ctype = self.files[parts[1]]
            self._image(writer, body, ctype, headers)
        elif kind == "status":
            self._send(writer, int(parts[1]), b"no image here\n", {"Content-Type": "text/plain"})
        elif kind == "cookie":
            self._send(writer, 200, png(2, 2), {"Content-Type": "image/png", "Set-Cookie": "track=me; Path=/"})
        elif kind == "html":
            self._send(writer, 200, b"<!doctype html><html><body>a page</body></html>", {"Content-Type": "text/html"})
        elif kind == "liar":
            self._send(writer, 200, b"<html><body>surprise</body></html>" * 10, {"Content-Type": "image/png"})
        elif kind == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            self._image(writer, png(int(parts[2]), int(parts[3])), "image/png", headers)
        elif kind == "redirect":
            n = int(parts[1])
            location = f"/redirect/{n - 1}/{parts[2]}/{parts[3]}/x.png" if n > 0 else f"/ok/{parts[2]}/{parts[3]}/x.png"
            self._send(writer, 302, b"", {"Location": location})
        elif kind == "loop":
            self._send(writer, 302, b"", {"Location": path})
        elif kind == "goto":
            target = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
            self._send(writer, 302, b"", {"Location": target})
        elif kind in ("huge", "endless"):
            await self._stream(writer, kind)
            return False
        elif kind == "stall":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(100_000):
                writer.write(b"\x89")
                await writer.drain()
                await asyncio.sleep(self.drip)
        elif kind == "flaky" and seen <= int(parts[1]):
            self._send(writer, 503, b"busy\n", {"Content-Type": "text/plain"})
        elif kind == "ratelimit" and seen == 1:
            self._send(writer, 429, b"slow down\n", {"Retry-After": parts[1]})
        elif kind == "reset" and seen == 1:
            writer.transport.abort()
            return False
        elif kind in ("flaky", "ratelimit", "reset"):
            self._image(writer, png(7, 5), "image/png", headers)
        else:
            self._send(writer, 404, b"unknown\n", {"Content-Type": "text/plain"})
        await writer.drain()
        return True

    def _image(self, writer: asyncio.StreamWriter, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        if headers.get("range", "").startswith("bytes=0-"):
            end = min(int(headers["range"][8:] or len(body) - 1), len(body) - 1)
            self._send(writer, 206, body[: end + 1], {"Content-Type": ctype,
                                                     "Content-Range": f"bytes 0-{end}/{len(body)}"})
        else:
            self._send(writer, 200, body, {"Content-Type": ctype})

    def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def _stream(self, writer: asyncio.StreamWriter, kind: str) -> None:
        """2 GiB declared: a PNG and zeros (size known at once), or a JPEG whose metadata never ends (no size)."""
        ctype, first = ("image/png", png(100, 100)) if kind == "huge" else ("image/jpeg", b"\xff\xd8")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {2 * 1024**3}\r\n\r\n".encode())
        writer.write(first)
        segment = b"\xff\xe1\xff\xff" + b"\x00" * 65533 if kind == "endless" else b"\x00" * 65536
        while self.sent < 2 * 1024**3:
            writer.write(segment)
            self.sent += len(segment)
            await writer.drain()


class StaticResolver(AbstractResolver):
    """A test DNS: names map to fixed addresses; anything else does not exist. Never sends a packet."""

    def __init__(self, names: dict[str, list[str]], delay: float = 0.0) -> None:
        self.names, self.delay = names, delay
        self.asked: Counter[str] = Counter()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.asked[host] += 1
        await asyncio.sleep(self.delay)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=0) for a in self.names[host]]

    async def close(self) -> None:
        pass


def limits(**kw: Any) -> ImageLimits:
    """Short deadlines and pauses: the whole file runs in seconds."""
    # the test servers listen on random loopback ports: allow them all (tests/test_ports.py holds the port rule)
    base: dict[str, Any] = {"allow_networks": LOOPBACK, "allow_ports": ["1-65535"], "timeout_seconds": 1.0,
                            "connect_timeout_seconds": 0.5,
                            "dns_timeout_seconds": 0.3, "backoff_seconds": 0.02}
    return ImageLimits(**(base | kw))


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host()
    yield h
    h.close()


def check(urls: list[str], resolver: AbstractResolver | None = None, **kw: Any) -> dict[str, ImageResult]:
    with ImageChecker(limits(**kw), resolver=resolver) as checker:
        return checker.check_many(urls)


def check_one(url: str, resolver: AbstractResolver | None = None, **kw: Any) -> ImageResult:
    return check([url], resolver, **kw)[url]


# ------------------------------------------------------------------------------------------------------ statuses
def test_every_status_against_a_real_server(host: Host) -> None:
    urls = {
        "ok": host.url("/ok/640/360/a.png"),
        "broken": host.url("/status/404/a.png"),
        "not_image": host.url("/html/a.png"),
        "unreachable": f"http://127.0.0.1:{free_port()}/a.png",
        "blocked": "ftp://example.com/a.png",
    }
    results = check(list(urls.values()))
    assert {want: results[url]["status"] for want, url in urls.items()} == {k: k for k in urls}
    assert results[urls["ok"]] == {"status": "ok", "width": 640, "height": 360, "http_status": 206,
                                   "content_type": "image/png", "reason": None}
    assert results[urls["broken"]]["http_status"] == 404
    assert results[urls["unreachable"]]["reason"] == "connection refused"


def test_content_type_is_only_a_hint(host: Host) -> None:
    host.files["jpeg-as-text"] = (pillow_bytes("JPEG", (33, 44)), "text/plain")
    liar = check_one(host.url("/liar/1/1/a.png"))
    assert (liar["status"], liar["content_type"], liar["reason"]) == ("not_image", "image/png", "looks like HTML")
    real = check_one(host.url("/file/jpeg-as-text"))
    assert (real["status"], real["width"], real["height"]) == ("ok", 33, 44)


def pillow_bytes(fmt: str, size: tuple[int, int], **kw: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "AVIF"])
def test_each_format_served_has_pillows_size(host: Host, fmt: str) -> None:
    body = pillow_bytes(fmt, (301, 157))
    host.files[fmt] = (body, "application/octet-stream")
    result = check_one(host.url(f"/file/{fmt}"))
    assert (result["status"], result["width"], result["height"]) == ("ok", *Image.open(io.BytesIO(body)).size)


def test_jpeg_with_300_kib_of_metadata_before_its_frame_header(host: Host) -> None:
    body = pillow_bytes("JPEG", (1200, 630), icc_profile=bytes(300 * 1024), exif=Image.Exif().tobytes())
    assert body.index(b"\xff\xc0") > 300 * 1024  # the frame header really is past 300 KiB
    host.files["fat.jpg"] = (body, "image/jpeg")
    result = check_one(host.url("/file/fat.jpg"))
    assert (result["status"], result["width"], result["height"]) == ("ok", 1200, 630)


def test_requests_ask_for_the_first_bytes_unencoded_and_carry_no_cookies(host: Host) -> None:
    results = check([host.url("/cookie/a.png"), host.url("/ok/2/2/b.png")], per_host=1)
    assert {r["status"] for r in results.values()} == {"ok"}
    sent = host.seen["/ok/2/2/b.png"]
    assert sent["range"] == f"bytes=0-{ImageLimits().max_bytes - 1}" and sent["accept-encoding"] == "identity"
    assert sent["user-agent"] == ImageLimits().user_agent and "cookie" not in sent


def test_proxy_settings_in_the_environment_are_ignored(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Host()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url("/"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert check_one(host.url("/ok/3/3/a.png"))["status"] == "ok"
        assert proxy.connections == 0 and host.paths["/ok/3/3/a.png"] == 1
    finally:
        proxy.close()


def test_duplicates_are_checked_once(host: Host) -> None:
    url = host.url("/ok/10/20/same.png")
    results = check([url] * 5)
    assert list(results) == [url] and host.paths["/ok/10/20/same.png"] == 1


# ----------------------------------------------------------------------------------------------------- redirects
def test_redirect_chain_within_the_limit(host: Host) -> None:
    result = check_one(host.url("/redirect/3/50/60/a.png"))
    assert (result["status"], result["width"], result["height"]) == ("ok", 50, 60)
    assert host.hits["redirect"] == 4 and host.hits["ok"] == 1


def test_too_many_redirects_and_loops_are_unreachable(host: Host) -> None:
    chain = check_one(host.url("/redirect/6/5/5/a.png"), max_redirects=5)
    loop = check_one(host.url("/loop/a.png"), max_redirects=5)
    assert chain["status"] == loop["status"] == "unreachable"
    assert loop["reason"] == "more than 5 redirects" and host.hits["loop"] == 6 and host.hits["ok"] == 0


def test_redirect_to_another_scheme_is_blocked(host: Host) -> None:
    result = check_one(host.url(f"/goto/{b64('file:///etc/passwd')}/a.png"))
    assert result["status"] == "blocked" and "scheme 'file'" in (result["reason"] or "")


def test_redirect_to_a_loopback_address_outside_the_allow_list_never_reaches_it(host: Host) -> None:
    canary = Host("127.0.0.2")
    try:
        for target in (canary.url("/canary/x.png"), canary.url("/canary/x.png", host="0x7f000002"),
                       canary.url("/canary/x.png", host="[::ffff:127.0.0.2]")):
            result = check_one(host.url(f"/goto/{b64(target)}/a.png"))
            assert result["status"] == "blocked" and "127.0.0.2" in (result["reason"] or ""), result
        assert canary.hits == Counter() and canary.connections == 0
    finally:
        canary.close()


def test_redirect_to_a_name_that_resolves_outside_the_allow_list(host: Host) -> None:
    resolver = StaticResolver({"inside.test": ["127.0.0.1"], "rebind.test": ["127.0.0.1", "127.0.0.2"]})
    ok = check_one(host.url("/ok/3/4/a.png", host="inside.test"), resolver)
    assert (ok["status"], ok["width"]) == ("ok", 3)
    target = host.url("/canary/x.png", host="rebind.test")
    result = check_one(host.url(f"/goto/{b64(target)}/a.png"), resolver)
    assert result["status"] == "blocked"
    assert result["reason"] == "rebind.test resolves to a refused address: 127.0.0.2 is loopback"
    assert host.hits["canary"] == 0


# ------------------------------------------------------------------------------------- the guard before any I/O
LOOPBACK_SPELLINGS = ["127.0.0.1", "localhost", "LOCALHOST", "0x7f000001", "2130706433", "127.1", "0x7f.1",
                      "017700000001", "127.000.000.001", "127.0.0.1.", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                      "[0:0:0:0:0:ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[::1]"]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_without_the_allow_list_no_spelling_of_loopback_reaches_the_canary(spelling: str) -> None:
    canary, canary6 = Host(), Host("::1")
    try:
        port = canary6.port if spelling == "[::1]" else canary.port
        result = check_one(f"http://{spelling}:{port}/canary/x.png", allow_networks=[])
        assert result["status"] == "blocked", result
        assert canary.connections == canary6.connections == 0
    finally:
        canary.close()
        canary6.close()


def test_allowed_loopback_beside_a_refused_address_is_still_refused() -> None:
    resolver = StaticResolver({"both.test": ["127.0.0.1", "::1"]})
    canary = Host()
    try:
        result = check_one(canary.url("/canary/x.png", host="both.test"), resolver)
        assert result["status"] == "blocked"
        assert result["reason"] == "both.test resolves to a refused address: ::1 is loopback"
        assert canary.connections == 0
    finally:
        canary.close()


def test_userinfo_and_odd_schemes_are_blocked_without_io(host: Host) -> None:
    urls = [host.url("/ok/1/1/a.png").replace("http://", "http://user:pw@"), "file:///etc/passwd",
            "gopher://127.0.0.1/", "data:image/png;base64,iVBORw0KGgo=", "/relative.png", "http://%31%32%37.0.0.1/"]
    results = check(urls)
    assert {r["status"] for r in results.values()} == {"blocked"}
    assert host.connections == 0


# ------------------------------------------------------------------------------------- DNS, bounds and deadlines
def test_dns_failure_is_unreachable_and_asked_once(host: Host) -> None:
    resolver = StaticResolver({})
    result = check_one("http://nowhere.test/a.png", resolver)
    assert (result["status"], result["reason"]) == ("unreachable", "DNS: Name or service not known")
    assert resolver.asked["nowhere.test"] == 1


def test_a_dns_answer_that_never_comes_is_cut_by_the_dns_deadline() -> None:
    resolver = StaticResolver({"slowdns.test": ["127.0.0.1"]}, delay=5)
    started = time.monotonic()
    result = check_one("http://slowdns.test/a.png", resolver, dns_timeout_seconds=0.2, timeout_seconds=1.0)
    assert result["status"] == "unreachable" and time.monotonic() - started < 2.5  # not the resolver's 5 s


def test_huge_body_costs_only_the_first_bytes(host: Host) -> None:
    started = time.monotonic()
    result = check_one(host.url("/huge/a.png"))
    assert (result["status"], result["width"]) == ("ok", 100)
    assert time.monotonic() - started < 3 and host.sent < 64 * 1024**2  # of 2 GiB declared


def test_metadata_without_end_stops_at_the_byte_cap(host: Host) -> None:
    result = check_one(host.url("/endless/a.jpg"), max_bytes=256 * 1024)
    assert result["status"] == "not_image"
    assert result["reason"] == "truncated or oversized image header (262144 bytes read)"


def test_slow_drip_cannot_stretch_the_deadline() -> None:
    dripping = Host(drip=0.1)  # a byte every 0.1 s: no single read ever waits long
    try:
        started = time.monotonic()
        result = check_one(dripping.url("/stall/a.png"), timeout_seconds=0.8)
        elapsed = time.monotonic() - started
        assert result["status"] == "unreachable" and result["reason"] == "no complete answer within 0.8s"
        assert 0.7 < elapsed < 2.0  # 100,000 bytes at 0.1 s each would take hours
    finally:
        dripping.close()


# ------------------------------------------------------------------------------------------------------ retries
def test_404_is_not_retried_500_is(host: Host) -> None:
    results = check([host.url("/status/404/a.png"), host.url("/status/500/a.png")], retries=2)
    assert results[host.url("/status/404/a.png")]["status"] == "broken"
    assert results[host.url("/status/500/a.png")] == {"status": "broken", "width": None, "height": None,
                                                      "http_status": 500, "content_type": "text/plain",
                                                      "reason": "HTTP 500"}
    assert host.paths["/status/404/a.png"] == 1 and host.paths["/status/500/a.png"] == 3


def test_a_transient_503_then_an_image(host: Host) -> None:
    result = check_one(host.url("/flaky/1/a.png"))
    assert (result["status"], result["width"]) == ("ok", 7) and host.paths["/flaky/1/a.png"] == 2


def test_a_dropped_connection_is_retried(host: Host) -> None:
    result = check_one(host.url("/reset/a.png"))
    assert result["status"] == "ok" and host.paths["/reset/a.png"] == 2


def test_429_waits_for_retry_after(host: Host) -> None:
    started = time.monotonic()
    result = check_one(host.url("/ratelimit/1/a.png"), timeout_seconds=3.0)
    assert result["status"] == "ok" and host.paths["/ratelimit/1/a.png"] == 2
    assert time.monotonic() - started >= 1.0


def test_429_asking_past_the_deadline_is_answered_at_once(host: Host) -> None:
    started = time.monotonic()
    result = check_one(host.url("/ratelimit/120/a.png"), timeout_seconds=3.0)
    assert (result["status"], result["http_status"]) == ("broken", 429)
    assert host.paths["/ratelimit/120/a.png"] == 1 and time.monotonic() - started < 2


def test_policy_refusals_are_not_retried(host: Host) -> None:
    resolver = StaticResolver({"loop.test": ["127.0.0.1"]})
    check_one(host.url("/ok/1/1/a.png", host="loop.test"), resolver, allow_networks=[], retries=3)
    assert resolver.asked["loop.test"] == 1 and host.connections == 0


def test_an_untrusted_certificate_is_unreachable_and_not_retried(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days",
                    "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        handshakes = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                handshakes.append(1)
                try:
                    context.wrap_socket(conn, server_side=True).close()
                except (ssl.SSLError, OSError):
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()
        result = check_one(f"https://127.0.0.1:{listener.getsockname()[1]}/a.png", retries=2)
    assert result["status"] == "unreachable" and (result["reason"] or "").startswith("TLS: ")
    assert "CERTIFICATE_VERIFY_FAILED" in (result["reason"] or "") and len(handshakes) == 1


# -------------------------------------------------------------------------------- concurrency and connections
def test_per_host_bound_and_a_slow_host_does_not_starve_others(host: Host) -> None:
    resolver = StaticResolver({"slow.test": ["127.0.0.1"], "fast.test": ["127.0.0.1"]})
    slow = [host.url(f"/slow/300/5/5/{i}.png", host="slow.test") for i in range(12)]
    fast = [host.url(f"/ok/5/5/{i}.png", host="fast.test") for i in range(6)]
    results = check(slow + fast, resolver, concurrency=4, per_host=2, timeout_seconds=3.0)
    assert {r["status"] for r in results.values()} == {"ok"}
    first_slow = min(t for t, path in host.arrivals if path.startswith("/slow/"))
    last_fast = max(t for t, path in host.arrivals if path.startswith("/ok/"))
    assert last_fast < first_slow + 0.3  # all served before even the first slow answer: not queued behind them
    assert host.max_in_flight <= 4


def test_connections_are_reused_across_calls(host: Host) -> None:
    with ImageChecker(limits(per_host=4)) as checker:
        for batch in range(3):
            results = checker.check_many([host.url(f"/ok/5/5/{batch}-{i}.png") for i in range(40)])
            assert {r["status"] for r in results.values()} == {"ok"}
    assert host.hits["ok"] == 120 and host.connections <= 4


def test_many_threads_share_one_checker_and_its_connections(host: Host) -> None:
    """The verify worker runs on Celery's threads pool: many batches call one checker at once. Every answer is
    right, the per-host limit holds across the calls, and they share the connections."""
    with ImageChecker(limits(per_host=4)) as checker:
        answers: dict[int, dict[str, ImageResult]] = {}

        def one(batch: int) -> None:
            answers[batch] = checker.check_many([host.url(f"/slow/50/5/{batch + 1}/{i}.png") for i in range(10)])

        threads = [threading.Thread(target=one, args=(b,)) for b in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert sorted(answers) == list(range(8))
    assert all(r["status"] == "ok" and r["height"] == b + 1 for b, rs in answers.items() for r in rs.values())
    assert host.max_in_flight <= 4 and host.connections <= 4


def test_checks_past_their_deadline_raise_and_are_cancelled(host: Host) -> None:
    """A deadline of the checker's own (no signal: the threads pool has no soft time limit): the call raises
    ChecksTimedOut in time, and the checks it abandoned stop (the checker still answers the next call)."""
    with ImageChecker(limits(timeout_seconds=30.0)) as checker:
        started = time.monotonic()
        with pytest.raises(ChecksTimedOut):
            checker.check_many([host.url("/stall/a.png"), host.url("/ok/5/5/b.png")], deadline=0.5)
        assert time.monotonic() - started < 2.0
        assert checker.check_many([host.url("/ok/5/5/c.png")], deadline=5)[host.url("/ok/5/5/c.png")]["status"] == "ok"


def _in_child(url: str, out: Any) -> None:
    out.put(CHECKER.check_many([url])[url]["status"])


CHECKER: ImageChecker


def test_a_forked_child_starts_its_own_loop(host: Host) -> None:
    global CHECKER
    CHECKER = ImageChecker(limits())
    try:
        assert CHECKER.check_many([host.url("/ok/1/1/parent.png")])[host.url("/ok/1/1/parent.png")]["status"] == "ok"
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_in_child, args=(host.url("/ok/1/1/child.png"), out))
        child.start()
        assert out.get(timeout=10) == "ok"
        child.join(10)
    finally:
        CHECKER.close()
