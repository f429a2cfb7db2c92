"""Image check outcomes cached in Redis, keyed by URL, so an image shared by a thousand items is fetched once.
Where there is no Redis (a RabbitMQ broker and no ``cache_url``), :class:`MemoryOutcomeCache` keeps them in the
worker process instead: bounded, the same rules, but each pool process learns on its own.

What is kept, and for how long (the answer, not the way it was reached, decides):

    ok, not_image          a server's settled answer about its bytes      ok_ttl   (a day)
    broken 404 / 410       gone                                           gone_ttl (an hour)
    anything else          transient (timeouts, 5xx, 429), or a policy    never
                           decision (blocked) that a config change must
                           be able to undo at once

One MGET per batch to read, one pipeline to write. Redis trouble never fails a check: the cache is skipped, the
reason logged, and the cache left alone for ``pause`` seconds (redis-py's default client retries a refused
connection ten times, ~4 s, on every call: without the pause each batch would pay that twice).

Keys are ``prefix + sha256(scope + url)``: fixed length whatever the URL; ``scope`` (the checker passes its
allow-list) keeps answers reached under one policy from being served under another.

Example::

    cache = OutcomeCache(redis.Redis.from_url("redis://127.0.0.1:6379/0"))
    cache.put_many({"https://h/a.png": result})
    cache.get_many(["https://h/a.png", "https://h/b.png"])  -> {"https://h/a.png": result}
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis

from tasks.shapes import IMAGE_STATUSES, ImageResult

logger = logging.getLogger(__name__)

_FIELDS = ("status", "width", "height", "http_status", "content_type", "reason")
_STATUSES = frozenset(IMAGE_STATUSES)


class OutcomeCache:
    """Cached image outcomes in Redis (a client the caller made, after fork)."""

    def __init__(self, client: redis.Redis, prefix: str = "feedworker:img:", ok_ttl: int = 86400,
                 gone_ttl: int = 3600, pause: float = 30.0) -> None:
        self.client, self.prefix, self.ok_ttl, self.gone_ttl, self.pause = client, prefix, ok_ttl, gone_ttl, pause
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, doing: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.pause
        logger.warning("image cache unavailable (%s), skipped for %.0fs: %s", doing, self.pause, exc)

    def key(self, url: str, scope: str = "") -> str:
        return self.prefix + hashlib.sha256(f"{scope}\n{url}".encode()).hexdigest()

    def ttl_for(self, result: ImageResult) -> int | None:
        """Seconds to keep this outcome, or None when it must not be cached."""
        if result["status"] in ("ok", "not_image"):
            return self.ok_ttl
        if result["status"] == "broken" and result["http_status"] in (404, 410):
            return self.gone_ttl
        return None

    def get_many(self, urls: Sequence[str], scope: str = "") -> dict[str, ImageResult]:
        """The cached outcomes among ``urls`` (one MGET); an unreadable entry is a miss."""
        if not urls or not self.available:
            return {}
        try:
            values = self.client.mget([self.key(u, scope) for u in urls])
        except redis.RedisError as exc:
            self._failed("read", exc)
            return {}
        found: dict[str, ImageResult] = {}
        for url, raw in zip(urls, cast("list[Any]", values), strict=True):
            result = _decode(raw) if raw is not None else None
            if result is not None:
                found[url] = result
        return found

    def put_many(self, results: Mapping[str, ImageResult], scope: str = "") -> int:
        """Store the cacheable outcomes (one pipeline); return how many were written."""
        pipe = self.client.pipeline(transaction=False)
        written = 0
        for url, result in results.items():
            ttl = self.ttl_for(result)
            if ttl:
                pipe.set(self.key(url, scope), json.dumps({f: result.get(f) for f in _FIELDS}), ex=ttl)
                written += 1
        if not written or not self.available:
            return 0
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._failed("write", exc)
            return 0
        return written


class MemoryOutcomeCache(OutcomeCache):
    """The same cache in this process's memory: the ``max_entries`` most recently used outcomes (least recently
    used go first), each until its time to live. Nothing is shared between processes or kept across restarts:
    an image shared by many items is fetched once per pool process (per day), not once overall. Locked: a verify
    worker on Celery's threads pool calls it from many threads at once."""

    def __init__(self, max_entries: int = 10_000, ok_ttl: int = 86400, gone_ttl: int = 3600) -> None:
        super().__init__(cast("redis.Redis", None), prefix="", ok_ttl=ok_ttl, gone_ttl=gone_ttl)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, ImageResult]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, urls: Sequence[str], scope: str = "") -> dict[str, ImageResult]:
        with self._lock:
            return self._get_many(urls, scope)

    def put_many(self, results: Mapping[str, ImageResult], scope: str = "") -> int:
        with self._lock:
            return self._put_many(results, scope)

    def _get_many(self, urls: Sequence[str], scope: str) -> dict[str, ImageResult]:
        found: dict[str, ImageResult] = {}
        stamp = time.monotonic()
        for url in urls:
            key = self.key(url, scope)
            entry = self._entries.get(key)
            if entry is None:
                continue
            if entry[0] <= stamp:
                del self._entries[key]
                continue
            self._entries.move_to_end(key)
            found[url] = cast("ImageResult", dict(entry[1]))
        return found

    def _put_many(self, results: Mapping[str, ImageResult], scope: str) -> int:
        written = 0
        stamp = time.monotonic()
        for url, result in results.items():
            ttl = self.ttl_for(result)
            if ttl:
                key = self.key(url, scope)
                self._entries[key] = (stamp + ttl, cast("ImageResult", {f: result.get(f) for f in _FIELDS}))
                self._entries.move_to_end(key)
                written += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return written


def _decode(raw: bytes | str) -> ImageResult | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or value.get("status") not in _STATUSES or set(value) != set(_FIELDS):
        return None
    return cast("ImageResult", value)
