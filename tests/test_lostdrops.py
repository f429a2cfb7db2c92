"""worker/watching/lostdrops.py against a real Redis: which drops the broker's messages still carry, and no
verdict at all while the queue is too long to read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks.shapes import WireDrop
from tests.faults import control_app
from worker.watching import lostdrops


@pytest.fixture
def app(redis_url: str) -> Iterator[Any]:
    redis.Redis.from_url(redis_url).flushdb()
    app = control_app(redis_url)
    yield app
    app.close()
    redis.Redis.from_url(redis_url).flushdb()


def wire(key: str) -> WireDrop:
    return WireDrop(key=key, name=f"{key}.txt", path=f"/d/{key}.txt", size=1, mtime_ns=1, data="")


def test_queued_and_unacked_messages_hold_their_drops(app: Any, redis_url: str) -> None:
    from tasks.stages import pipeline

    app.set_current()
    pipeline([wire("a"), wire("b")]).apply_async()
    client = redis.Redis.from_url(redis_url)
    assert lostdrops.held_keys(app) == {"a", "b"}
    raw = client.rpop("feedworker")  # as a worker takes it: from the queue into the unacked hash
    client.hset("unacked", "tag1", b'[' + raw + b', "", "feedworker"]')  # type: ignore[operator]
    assert lostdrops.held_keys(app) == {"a", "b"}
    rows = [{"key": k} for k in ("a", "b", "c")]
    assert lostdrops.really_lost(app, rows) == [{"key": "c"}]
    client.delete("unacked")
    assert lostdrops.really_lost(app, rows) == rows


def test_a_queue_too_long_to_read_calls_nothing_lost(app: Any, redis_url: str) -> None:
    redis.Redis.from_url(redis_url).lpush("feedworker", *[b"{}"] * (lostdrops.MAX_SCAN + 1))
    assert lostdrops.really_lost(app, [{"key": "c"}]) == []
