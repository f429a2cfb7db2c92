"""The patches of Celery's stack, fast: each shows its effect on the real thing in a second, and each refuses
to apply on a version it was not written for (the slow proof is tests/test_faults_redis.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from worker.celeryapp.patches import envelope, kombufix, poolstop, softlimit

CHANNEL: Any = kombu_redis.Channel  # kombu's private parts are what the patch is about: untyped
TRANSPORT: Any = kombu_redis
KOMBU_JSON: Any = kombu_json  # kombu's JSON functions are untyped


def polling_channel(redis_url: str) -> tuple[Any, Any]:
    """A kombu Redis channel waiting in BRPOP whose connection the server has just closed (Redis went away)."""
    conn: Any = Connection(redis_url)  # type: ignore[no-untyped-call]
    chan: Any = conn.default_channel
    chan.queue_declare("feedworker-patch-test")
    chan.basic_consume("feedworker-patch-test", False, lambda _m: None, "patch-test")
    chan.connection.cycle._register_BRPOP(chan)
    chan._brpop_start()
    assert chan._in_poll
    chan.client.connection._sock.shutdown(socket.SHUT_RDWR)
    return conn, chan


def test_kombufix_closes_a_channel_whose_poll_lost_its_connection(redis_url: str) -> None:
    assert kombufix.apply()
    patched = CHANNEL.close
    original = patched.__wrapped__
    conn, chan = polling_channel(redis_url)
    with pytest.raises(chan.connection_errors):
        original(chan)  # kombu alone: the read fails and the channel is left open (a second close then fails)
    assert not chan.closed
    conn.release()
    conn, chan = polling_channel(redis_url)
    patched(chan)  # with the fix: closed, no error for Celery to take as fatal
    assert chan.closed
    conn.release()


def test_kombufix_applies_only_to_the_kombu_it_was_written_for() -> None:
    assert kombufix.applies_to("5.7.0", CHANNEL)
    assert not kombufix.applies_to("5.8.0", CHANNEL)
    assert not kombufix.applies_to("5.7.0", type("Channel", (), {}))  # no private _in_poll: not the code we read


def test_kombufix_refuses_an_unknown_kombu_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    fresh: Any = type("Channel", (), {"_in_poll": False, "close": lambda self: None})
    monkeypatch.setattr(kombu_redis, "Channel", fresh)
    monkeypatch.setattr(kombufix, "version", lambda _name: "6.0.1")
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.patches.kombufix"):
        assert not kombufix.apply()
    assert not hasattr(fresh.close, "__wrapped__")
    assert "not applied: written for kombu 5.7.x, found 6.0.1" in caplog.text


@pytest.fixture
def billiard_handler() -> Iterator[list[int]]:
    """billiard's soft-limit handler on SIGUSR1, as a pool child has it; the handler of the test restored after."""
    from billiard.pool import soft_timeout_sighandler

    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    softlimit._Guard.running = 0
    try:
        yield []
    finally:
        signal.signal(signal.SIGUSR1, before)
        softlimit._Guard.running = 0


def test_softlimit_lets_the_signal_interrupt_a_running_task_only(billiard_handler: list[int],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert softlimit.install()
    softlimit._task_started()  # task_prerun: the guard wraps billiard's handler
    with pytest.raises(SoftTimeLimitExceeded):
        os.kill(os.getpid(), signal.SIGUSR1)  # a task past its soft limit is interrupted, as before
    softlimit._task_ended()
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.patches.softlimit"):
        os.kill(os.getpid(), signal.SIGUSR1)  # late, between tasks: billiard would raise here and kill the child
    assert "already finished: ignored" in caplog.text


def test_softlimit_refuses_an_unknown_billiard(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    assert softlimit.applies_to("4.3.2") and not softlimit.applies_to("5.0.0")
    monkeypatch.setattr(softlimit, "version", lambda _name: "5.0.0")
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.patches.softlimit"):
        assert not softlimit.install()
    assert "guard not installed: written for billiard 4.x, found 5.0.0" in caplog.text


# Envelopes orjson writes (the fast path): each reads back through kombu's loads as kombu's own encoding does.
PLAIN_ENVELOPES = [
    {"body": "eyJhIjoxfQ==", "content-encoding": "binary", "content-type": "application/x-feedworker-json",
     "headers": {"lang": "py", "task": "feedworker.parse", "id": "5f0c", "eta": None, "retries": 0,
                 "timelimit": [None, 55], "argsrepr": "(<batch of 2: a.txt, é 東京 🗞.txt>,)", "ignore_result": True},
     "properties": {"delivery_info": {"exchange": "", "routing_key": "feedworker"}, "priority": 0,
                    "body_encoding": "base64", "delivery_tag": "b1e2"}},
    [{"nested": [1, -2, 3.5, 1e-07, -0.0, True, False, None, ("a", "tuple")]}, "", "\\ \" \n \t \u0000 \u2028"],
]
# Envelopes orjson would write differently, or not at all: kombu's own encoder writes them, character for character.
KOMBU_ENVELOPES = [
    {"headers": {"eta": datetime(2026, 12, 4, 12, 0, tzinfo=UTC)}},  # kombu: a typed marker; orjson: text
    {"headers": {"id": uuid.UUID(int=7)}},
    {"headers": {"price": Decimal("1.10")}},
    {"headers": {"x": float("nan"), "y": float("inf")}},  # the stdlib writes NaN; orjson would write null
    {"headers": {"big": 2**70}},  # past 64 bits: orjson refuses
    {"headers": {"text": "\ud800"}},  # a lone surrogate: orjson refuses
    {"headers": {"raw": b"\x00\xff"}},
    {"headers": {type("Key", (str,), {})("k"): 1}},  # a text subclass as a key
    {"headers": {1: "an integer key"}},
]


@pytest.mark.parametrize("value", PLAIN_ENVELOPES)
def test_envelope_writes_plain_envelopes_with_orjson_and_they_read_back_the_same(value: Any) -> None:
    ours = envelope.dumps(value)
    assert isinstance(ours, bytes)  # the fast path was taken
    assert KOMBU_JSON.loads(ours) == KOMBU_JSON.loads(KOMBU_JSON.dumps(value))


@pytest.mark.parametrize("value", KOMBU_ENVELOPES)
def test_envelope_leaves_anything_else_to_kombus_encoder(value: Any) -> None:
    assert envelope.dumps(value) == KOMBU_JSON.dumps(value)


def test_envelope_carries_a_real_task_message_through_redis(redis_url: str) -> None:
    """Celery publishes through the patched transport; a kombu consumer reads the same body and headers back,
    and the raw entry on Redis is orjson's compact JSON."""
    assert envelope.apply()
    assert TRANSPORT.dumps is envelope.dumps
    app = Celery("envelope-test", broker=redis_url)
    queue = "feedworker-envelope-test"
    sent = app.send_task("feedworker.parse", args=[["é 東京 🗞.txt", 3]], queue=queue, serializer="json")
    raw = redis.Redis.from_url(redis_url).lindex(queue, 0)
    assert raw is not None and b'","content-encoding":"' in raw  # no spaces: orjson wrote it
    with Connection(redis_url) as conn:  # type: ignore[no-untyped-call]
        message: Any = conn.SimpleQueue(queue).get(timeout=5)
        assert message.headers["id"] == sent.id and message.headers["task"] == "feedworker.parse"
        assert message.decode() == [[["é 東京 🗞.txt", 3]], {}, {"callbacks": None, "errbacks": None,
                                                              "chain": None, "chord": None}]
        message.ack()


def test_envelope_applies_only_to_the_kombu_it_was_written_for(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    assert envelope.applies_to("5.7.0") and not envelope.applies_to("5.8.0")
    monkeypatch.setattr(kombu_redis, "dumps", KOMBU_JSON.dumps)
    monkeypatch.setattr(envelope, "version", lambda _name: "6.0.1")
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.patches.envelope"):
        assert not envelope.apply()
    assert TRANSPORT.dumps is KOMBU_JSON.dumps
    assert "not applied: written for kombu 5.7.x, found 6.0.1" in caplog.text


def test_poolstop_applies_only_to_the_celery_it_was_written_for(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from celery.concurrency import asynpool

    assert poolstop.applies_to("5.7.0") and not poolstop.applies_to("5.8.0")
    assert poolstop.apply()
    wrapped = asynpool.AsynPool.flush
    assert getattr(wrapped, "_feedworker_poolstop", False)
    assert poolstop.apply() and asynpool.AsynPool.flush is wrapped  # idempotent: never a wrapper of a wrapper
    fresh: Any = type("AsynPool", (), {"flush": lambda self: None, "_stop_task_handler": staticmethod(lambda h: None)})
    monkeypatch.setattr(asynpool, "AsynPool", fresh)
    monkeypatch.setattr(poolstop, "version", lambda _name: "6.0.1")
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.patches.poolstop"):
        assert not poolstop.apply()
    assert not getattr(fresh.flush, "_feedworker_poolstop", False)
    assert "not applied: written for celery 5.7.x, found 6.0.1" in caplog.text
