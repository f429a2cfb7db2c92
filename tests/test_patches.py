"""The two patches of Celery's stack, fast: each shows its effect on the real thing in a second, and each refuses
to apply on a version it was not written for (the slow proof is tests/test_faults_redis.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis

from worker.celeryapp.patches import kombufix, softlimit

CHANNEL: Any = kombu_redis.Channel  # kombu's private parts are what the patch is about: untyped


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
