"""Webhooks end to end: a real worker (`celery -A worker worker`, no -Q) delivers the change log to real HTTP
receivers on loopback that check every signature. One endpoint goes down for 30 s: nothing is lost or
reordered. Another refuses everything: it is reported, and holds up neither ingestion nor the first."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update

from tasks.store.changes import read
from tasks.store.engine import now
from tasks.store.ledger import Store
from tasks.store.schema import webhook_state
from tasks.store.webhooks import Endpoint, Result, deliver, ensure, held, sign, states
from tests.changecheck import read_changes, write_drops
from tests.conftest import fresh_pg_database
from tests.hookreceiver import Receiver
from tests.processes import celery_worker, env_for, feedworker, wait_for
from tests.test_store import item, norm, publish

SECRET = "s3cret-for-tests"


def endpoints(*hooks: tuple[str, Receiver]) -> str:
    return json.dumps([{"name": name, "url": r.url, "secret": SECRET} for name, r in hooks])


def check_in_order(got: list[int], expected: list[int]) -> None:
    """At least once, in order: a cursor comes again only as a resend of what came before; dropping those
    repeats leaves exactly the log."""
    first: list[int] = []
    for c in got:
        if first and c <= first[-1]:
            assert c in first, f"cursor {c} arrived after {first[-1]} and was never sent before"
        else:
            first.append(c)
    assert first == expected


@pytest.mark.slow
def test_signed_in_order_through_an_outage_and_a_dead_endpoint_is_reported(tmp_path: Path, redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    good, dead = Receiver(SECRET.encode()), Receiver(SECRET.encode(), status=500)
    good.start()
    dead.start()
    known: list[str] = []
    with fresh_pg_database() as store:
        env = env_for(redis_url, store, FEEDWORKER_WATCH__BATCH_MAX="10",
                      FEEDWORKER_WEBHOOKS__ENDPOINTS=endpoints(("search", good), ("broken", dead)))
        write_drops(tmp_path / "one", 0, 60, seed=3, known=known)
        with celery_worker(env, tmp_path, concurrency=2):
            feedworker(env, "ingest", str(tmp_path / "one"), "--wait")
            expected = [int(c["cursor"]) for c in read_changes(env)]
            wait_for(lambda: set(good.cursors()) >= set(expected), 30)
            good.stop()  # the endpoint goes away for 30 s; ingestion goes on meanwhile
            down_at = time.monotonic()
            (tmp_path / "two").mkdir()
            for name in known:
                (tmp_path / "two" / name).hardlink_to(tmp_path / "one" / name)
            write_drops(tmp_path / "two", 60, 60, seed=4, known=known)
            for name in known[:60]:
                (tmp_path / "two" / name).unlink()
            second = json.loads(feedworker(env, "ingest", str(tmp_path / "two"), "--wait", "--json").stdout)
            assert second["published"] > 30
            hooks = webhook_status(env)
            assert hooks["search"]["failures"] > 0 and hooks["search"]["behind"] > 0
            time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
            good.start()  # back on the same port
            expected = [int(c["cursor"]) for c in read_changes(env)]
            wait_for(lambda: set(good.cursors()) >= set(expected), 90)
            hooks = webhook_status(env)
            table = feedworker(env, "status", check=False).stdout
    good.stop()
    dead.stop()
    check_in_order(good.cursors(), expected)
    assert good.refused == [] and dead.refused == []  # every request carried a good signature
    assert hooks["search"]["failures"] == 0 and hooks["search"]["behind"] == 0
    assert hooks["broken"]["failures"] >= 3 and hooks["broken"]["last_error"] == "HTTP 500"
    assert hooks["broken"]["behind"] == len(expected) and hooks["broken"]["failing_since"].endswith("Z")
    assert "webhook broken" in table and "FAILING since" in table


def webhook_status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    data = json.loads(feedworker(env, "status", "--json", check=False).stdout)
    return {w["endpoint"]: w for w in data["webhooks"]}


def test_a_receiver_refuses_a_wrong_secret_or_an_old_timestamp() -> None:
    r = Receiver(SECRET.encode())
    body, now = b'{"changes": []}', str(int(time.time()))
    assert r.check(now, sign(SECRET.encode(), now, body), body) is None
    assert r.check(now, sign(b"another secret", now, body), body) == "bad signature"
    assert r.check(now, sign(SECRET.encode(), now, body + b" "), body) == "bad signature"
    old = str(int(time.time()) - 3600)
    assert r.check(old, sign(SECRET.encode(), old, body), body) == "stale timestamp"


def test_deliver_in_process_on_both_backends(store: Store) -> None:
    """The delivery itself (no Celery): batches in order, a failure keeps the cursor and holds the endpoint
    until its backoff ends, a second delivery can't run beside the first."""
    receiver = Receiver(SECRET.encode())
    receiver.start()
    try:
        for n in range(1, 6):
            publish(store, norm(item(f"https://x.test/{n}"), n))
        ep = Endpoint("search", receiver.url, SECRET.encode(), batch_max=2, timeout=5, retry_max=0.2)
        ensure(store, ["search"])
        assert deliver(store, ep) == Result("done", sent=5)
        assert [len(b) for b in receiver.batches] == [2, 2, 1] and receiver.cursors() == sorted(receiver.cursors())
        receiver.stop()
        publish(store, norm(item("https://x.test/6"), 6))
        failed = deliver(store, ep)
        assert (failed.state, failed.failures) == ("failed", 1) and failed.retry_in is not None
        state = states(store)[0]
        assert state["behind"] == 1 and state["failures"] == 1 and state["last_error"].startswith("ConnectError")
        receiver.start()
        time.sleep(failed.retry_in + 0.05)  # the backoff (at most retry_max) is over
        assert held(store) == set()
        assert deliver(store, ep) == Result("done", sent=1)
        assert states(store)[0]["failures"] == 0 and states(store)[0]["behind"] == 0
        assert receiver.cursors() == [int(c["cursor"]) for c in read(store, None, 100)]
        assert receiver.refused == []
    finally:
        receiver.stop()


def test_one_delivery_per_endpoint_at_a_time(store: Store) -> None:
    receiver = Receiver(SECRET.encode())
    receiver.start()
    try:
        publish(store, norm(item("https://x.test/1"), 1))
        ensure(store, ["search"])
        with store.engine.begin() as conn:  # a delivery holds the lease (its worker died mid-POST, say)
            conn.execute(update(webhook_state).values(lease_token="x" * 32, lease_until=now() + timedelta(seconds=30)))
        ep = Endpoint("search", receiver.url, SECRET.encode())
        assert held(store) == {"search"}
        busy = deliver(store, ep)
        assert busy.state == "busy" and busy.retry_in is not None and 25 < busy.retry_in <= 30  # one follow-up...
        assert deliver(store, ep) == Result("busy")  # ...per lease
        assert receiver.batches == []
    finally:
        receiver.stop()
