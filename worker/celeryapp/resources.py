"""The long-lived things a process builds from the settings: the store, the image checker and its cache."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis

from tasks.images.cache import MemoryOutcomeCache, OutcomeCache
from tasks.images.checker import ImageChecker
from tasks.store.ledger import Store
from worker.settings import Settings, broker_url, get_settings

logger = logging.getLogger(__name__)
MEMORY_CACHE_ENTRIES = 10_000  # per process; ~0.5 KiB an entry (measured): ~5 MiB at most


def make_store(settings: Settings | None = None) -> Store:
    settings = settings or get_settings()
    store = Store(settings.store_url)
    store.changes_retention = timedelta(days=settings.changes.retention_days)
    return store


def cache_url(settings: Settings) -> str | None:
    """Image outcomes are cached in Redis: the configured cache, else the broker when it speaks Redis."""
    if settings.cache_url:
        return settings.cache_url
    try:
        url = broker_url(settings)
    except Exception:
        return None
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def make_checker(settings: Settings | None = None) -> ImageChecker:
    settings = settings or get_settings()
    url = cache_url(settings)
    ok_ttl, gone_ttl = settings.images.cache_ok_seconds, settings.images.cache_gone_seconds
    cache: OutcomeCache
    if url:
        # Short timeouts: the cache is an optimization; a slow or absent Redis must not stall image checks.
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        cache = OutcomeCache(client, ok_ttl=ok_ttl, gone_ttl=gone_ttl)
    else:  # no Redis anywhere (a RabbitMQ broker, no cache_url): each process keeps its own, bounded
        cache = MemoryOutcomeCache(MEMORY_CACHE_ENTRIES, ok_ttl=ok_ttl, gone_ttl=gone_ttl)
    return ImageChecker(settings.images, cache)
