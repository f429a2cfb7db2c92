"""Image URL checks: is it an image, and what is its real size. Safe (``guard.py``), bounded, fast, cached.

``ImageChecker.check_many`` is a synchronous facade (a Celery task calls it; no Celery here). The work runs on an
event loop the checker owns, in a background thread started on first use in each process, so one aiohttp session
and its pooled connections serve every call. Its resolver hook and socket factory are where addresses are judged
and pinned (guard.py). Requests go to aiohttp directly: through httpx's request and response objects (over the
``httpx_aiohttp`` transport) a check cost 174-180 us of CPU here, against 85-87 us straight (4,000 loopback GETs,
one core); httpx's own transport was ~10x slower still. httpx stays where it carries its weight: parsing, judging
and joining URLs (guard.py's ``judge_url``, a redirect's Location).

One URL, at most ``limits.timeout_seconds`` in all (redirects, retries, a server dripping a byte at a time)::

    judge_url -> [host slot, then process slot] -> GET with Range: bytes=0-(max_bytes-1), Accept-Encoding: identity
      3xx: judge the Location like a new URL, follow by hand (at most max_redirects)
      4xx/5xx: broken (408, 429 and 5xx are retried with backoff and jitter, 429/503 after their Retry-After)
      2xx: read until sniff.py knows (or max_bytes): ok with the real size, or not_image
      refused by policy: blocked; DNS failure, refused, reset, timeout, too many redirects: unreachable

Example::

    checker = ImageChecker(ImageLimits(allow_networks=["127.0.0.1/32"]))
    checker.check_many(["http://127.0.0.1:8765/ok/640/360/a.png"])
      -> {"http://...a.png": {"status": "ok", "width": 640, "height": 360, "http_status": 206, ...}}
    checker.close()

Over 300 lines on purpose: one request's life (guarded connect, ranged GET, retries with Retry-After, the
verdict from the bytes) reads best in one place; the guard, the sniffer and the cache are modules of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver

from tasks.errors import ChecksTimedOut
from tasks.images.guard import GuardedResolver, PolicyRefusal, Target, guarded_socket, judge_url, spell_ports
from tasks.images.sniff import ImageSize, NotAnImage, Sniffer
from tasks.limits import ImageLimits
from tasks.shapes import ImageResult, ImageStatus

if TYPE_CHECKING:
    from tasks.images.cache import OutcomeCache

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _result(status: ImageStatus, reason: str | None = None, response: aiohttp.ClientResponse | None = None,
            size: ImageSize | None = None) -> ImageResult:
    return ImageResult(status=status, width=size.width if size else None, height=size.height if size else None,
                       http_status=response.status if response is not None else None,
                       content_type=response.headers.get("content-type") if response is not None else None,
                       reason=reason)


class ImageChecker:
    """Checks image URLs; one per worker process, made after fork. ``close()`` when done (or use ``with``)."""

    def __init__(self, limits: ImageLimits, cache: OutcomeCache | None = None, *,
                 resolver: AbstractResolver | None = None) -> None:
        self.limits, self.cache = limits, cache
        self._resolver = resolver  # tests give a static one; default: the system's, in a thread
        self._scope = "allow=" + ",".join(sorted(str(n) for n in limits.allow_networks))
        if limits.allow_networks:  # what an allowed network may be reached on changes the answers too
            self._scope += ";" + spell_ports(limits.allow_ports)
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._fetcher: _Fetcher | None = None

    def check_many(self, urls: Iterable[str], deadline: float | None = None) -> dict[str, ImageResult]:
        """Check each distinct URL once: cached answers first (one MGET), the rest concurrently, then cache them.
        Raises ChecksTimedOut if they are not all answered within ``deadline`` seconds (unfinished ones cancelled).
        Any number of threads may call it at once: their checks share this process's loop, client and limits."""
        unique = list(dict.fromkeys(urls))
        results = self.cache.get_many(unique, self._scope) if self.cache else {}
        todo = [u for u in unique if u not in results]
        if todo:
            runner, fetcher = self._started()
            fresh = runner.run(fetcher.check_all(todo), deadline)
            if self.cache:
                self.cache.put_many(fresh, self._scope)
            results.update(fresh)
        logger.debug("checked %d image URLs (%d from cache)", len(unique), len(unique) - len(todo))
        return {u: results[u] for u in unique}

    def close(self) -> None:
        with self._lock:
            runner, fetcher, self._runner, self._fetcher = self._runner, self._fetcher, None, None
        if runner is not None and fetcher is not None and runner.pid == os.getpid():
            runner.run(fetcher.aclose())
            runner.stop()

    def __enter__(self) -> ImageChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _started(self) -> tuple[_LoopThread, _Fetcher]:
        """The loop thread and client of this process (a forked child starts its own: threads don't survive fork)."""
        with self._lock:
            if self._runner is None or self._fetcher is None or self._runner.pid != os.getpid():
                self._runner = _LoopThread()
                self._fetcher = self._runner.run(_Fetcher.create(self.limits, self._resolver))
            return self._runner, self._fetcher


class _LoopThread:
    """An asyncio loop in a daemon thread; ``run`` submits a coroutine from any other thread and waits for it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="feedworker-images", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ChecksTimedOut(f"image checks unfinished after {timeout} s") from None
        except BaseException:  # e.g. Celery's soft time limit in the caller: stop the work too, don't leave it running
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: ImageResult
    transient: bool = False  # worth another try
    retry_after: float | None = None  # the server's own pause, when it named one


_TRANSIENT_STATUS = frozenset({408, 425, 429})
_DRAIN_LIMIT = 64 * 1024  # past the answer, read up to this much more so the connection can be reused
_CHUNK = 16 * 1024  # bytes read at a time from a body


class _Fetcher:
    """The async side: one aiohttp session (no cookies kept, no environment read, redirects followed by hand),
    slots per process and per host, the per-URL logic."""

    def __init__(self, limits: ImageLimits, session: aiohttp.ClientSession) -> None:
        self.limits, self.session = limits, session
        self.allow, self.ports = list(limits.allow_networks), list(limits.allow_ports)
        self.slots = asyncio.Semaphore(limits.concurrency)
        self.hosts: dict[str, _HostSlot] = {}
        self.headers = {"User-Agent": limits.user_agent, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity",
                        "Range": f"bytes=0-{limits.max_bytes - 1}"}
        # connect: a free slot in the pool and a connection; sock_connect: the TCP (and TLS) handshake alone
        self.timeout = aiohttp.ClientTimeout(total=None, connect=limits.timeout_seconds,
                                             sock_connect=limits.connect_timeout_seconds,
                                             sock_read=limits.timeout_seconds / 2)

    @classmethod
    async def create(cls, limits: ImageLimits, resolver: AbstractResolver | None) -> _Fetcher:
        """Built on the loop (aiohttp wants one running). Nothing here reads the environment (no proxies)."""
        allow, ports = list(limits.allow_networks), list(limits.allow_ports)
        guard = GuardedResolver(resolver or aiohttp.ThreadedResolver(), allow, limits.dns_timeout_seconds, ports)
        connector = aiohttp.TCPConnector(limit=limits.concurrency, limit_per_host=limits.per_host, resolver=guard,
                                         socket_factory=guarded_socket(allow, ports), ttl_dns_cache=60)
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                                        auto_decompress=False)
        return cls(limits, session)

    async def aclose(self) -> None:
        await self.session.close()

    async def check_all(self, urls: list[str]) -> dict[str, ImageResult]:
        results = await asyncio.gather(*(self.check(u) for u in urls))
        return dict(zip(urls, results, strict=True))

    async def check(self, url: str) -> ImageResult:
        try:
            target = judge_url(url, self.allow, self.ports)
        except PolicyRefusal as exc:
            return _result("blocked", exc.reason)
        try:
            async with self._host_slot(target.host), self.slots:  # host first: a slow host can't hold process slots
                deadline = asyncio.timeout(self.limits.timeout_seconds)
                try:
                    async with deadline:
                        return await self._with_retries(target)
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    return _result("unreachable", f"no complete answer within {self.limits.timeout_seconds:g}s")
        except Exception as exc:  # a bug must not sink the batch; the URL says what happened
            logger.exception("image check failed unexpectedly", extra={"url": url})
            return _result("unreachable", f"internal error: {type(exc).__name__}")

    def _host_slot(self, host: str) -> _HostSlot:
        slot = self.hosts.get(host)
        if slot is None:
            slot = self.hosts[host] = _HostSlot(self.hosts, host, self.limits.per_host)
        return slot

    async def _with_retries(self, target: Target) -> ImageResult:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.limits.timeout_seconds
        for attempt in range(self.limits.retries + 1):
            outcome = await self._follow(target)
            if not outcome.transient or attempt == self.limits.retries:
                break
            pause = outcome.retry_after if outcome.retry_after is not None else self._backoff(attempt)
            if loop.time() + pause >= give_up:  # the pause alone would pass the deadline: answer now
                break
            await asyncio.sleep(pause)
        return outcome.result

    def _backoff(self, attempt: int) -> float:
        """Exponential, with jitter so that many workers retrying one host don't march in step."""
        base = self.limits.backoff_seconds * (1 << attempt)
        return base / 2 + random.uniform(0, base / 2)  # noqa: S311 (jitter, not cryptography)

    async def _follow(self, target: Target) -> _Outcome:
        for _ in range(self.limits.max_redirects + 1):
            step = await self._fetch(target)
            if isinstance(step, _Outcome):
                return step
            target = step
        return _Outcome(_result("unreachable", f"more than {self.limits.max_redirects} redirects"))

    async def _fetch(self, target: Target) -> _Outcome | Target:
        """One GET: an outcome, or the next (already judged) target of a redirect."""
        try:  # leaving the block puts the connection back in the pool (a whole body read) or closes it
            async with self.session.get(str(target.url), headers=self.headers, allow_redirects=False,
                                        timeout=self.timeout) as response:
                return await self._answer(target, response)
        except Exception as exc:
            return _failure(exc)

    async def _answer(self, target: Target, response: aiohttp.ClientResponse) -> _Outcome | Target:
        code = response.status
        if 300 <= code < 400 and "location" in response.headers:
            location = response.headers["location"]
            try:
                return judge_url(target.url.join(location), self.allow, self.ports)
            except PolicyRefusal as exc:
                return _Outcome(_result("blocked", f"redirect to {location[:200]!r}: {exc.reason}", response))
        if code >= 300:
            transient = code in _TRANSIENT_STATUS or code >= 500
            reason = f"HTTP {code}" + (" (redirect without Location)" if code < 400 else "")
            return _Outcome(_result("broken", reason, response), transient, _retry_after(response))
        verdict = await self._judge_body(response)
        if isinstance(verdict, ImageSize):
            return _Outcome(_result("ok", None, response, verdict))
        return _Outcome(_result("not_image", verdict.reason, response))

    async def _judge_body(self, response: aiohttp.ClientResponse) -> ImageSize | NotAnImage:
        """Read until the bytes decide (or the cap); stop there. A small remainder is drained to keep the socket."""
        cap, sniffer, received = self.limits.max_bytes, Sniffer(), 0
        chunks = response.content.iter_chunked(_CHUNK)
        async for chunk in chunks:
            received += len(chunk)
            verdict = await _feed(sniffer, chunk[: cap - len(sniffer.buf)])
            if verdict is None and len(sniffer.buf) >= cap:
                return sniffer.finish()
            if verdict is not None:
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) - received <= _DRAIN_LIMIT:
                    async for _ in chunks:
                        pass
                return verdict
        return sniffer.finish()


_SNIFF_STEP = 4 * 1024  # bytes judged between two turns of the loop: ~2 ms at worst (a body of tiny segments)


async def _feed(sniffer: Sniffer, chunk: bytes) -> ImageSize | NotAnImage | None:
    """Feed a chunk in steps, letting the loop's other checks run between them."""
    verdict = None
    for at in range(0, len(chunk), _SNIFF_STEP):
        if at:
            await asyncio.sleep(0)
        verdict = sniffer.feed(chunk[at : at + _SNIFF_STEP])
        if verdict is not None:
            break
    return verdict


class _HostSlot:
    """A per-host semaphore that removes itself from the table when nobody holds or waits for it."""

    def __init__(self, table: dict[str, _HostSlot], host: str, size: int) -> None:
        self.table, self.host, self.sem, self.users = table, host, asyncio.Semaphore(size), 0

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self.sem.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.sem.release()
        self._leave()

    def _leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.table.pop(self.host, None)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), for 429 and 503 only."""
    value = response.headers.get("retry-after")
    if value is None or response.status not in (429, 503):
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (aiohttp wraps the OSError that says what happened)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "os_error", None)]
    return seen


def _failure(exc: BaseException) -> _Outcome:
    """Name what went wrong, and whether another try could help (judged on the root causes: aiohttp's own types
    are coarse, e.g. a refused connection arrives as a ClientConnectorError around the ConnectionRefusedError)."""
    chain = _chain(exc)
    for kinds, outcome in _FAILURES:
        found = next((e for e in chain if isinstance(e, kinds)), None)
        if found is not None:
            return outcome(found)
    return _Outcome(_result("unreachable", f"{type(exc).__name__}: {exc}"[:200]))


def _dns(e: BaseException) -> _Outcome:
    assert isinstance(e, socket.gaierror)
    return _Outcome(_result("unreachable", f"DNS: {e.strerror or e}"), transient=e.errno == socket.EAI_AGAIN)


_Kinds = type[BaseException] | tuple[type[BaseException], ...]
_FAILURES: tuple[tuple[_Kinds, Callable[[BaseException], _Outcome]], ...] = (  # first match wins
    (PolicyRefusal, lambda e: _Outcome(_result("blocked", str(e)))),
    ((aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, httpx.InvalidURL),
     lambda e: _Outcome(_result("blocked", f"invalid URL: {e}"))),
    (socket.gaierror, _dns),
    (ConnectionRefusedError, lambda e: _Outcome(_result("unreachable", "connection refused"))),
    ((ssl.SSLError, ssl.CertificateError), lambda e: _Outcome(_result("unreachable", f"TLS: {e}"[:200]))),
    ((ConnectionResetError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError),
     lambda e: _Outcome(_result("unreachable", f"connection lost ({type(e).__name__})"), transient=True)),
    (TimeoutError, lambda e: _Outcome(_result("unreachable", "timed out"), transient=True)),
    ((OSError, aiohttp.ClientError),
     lambda e: _Outcome(_result("unreachable", f"{type(e).__name__}: {e}"[:200]))),
)
