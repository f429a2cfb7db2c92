"""What the broker holds, asked the same way on Redis and on RabbitMQ: one module for `status`, the health checks,
the metrics and the watcher's "workers behind" check.

- **reachable**: a Redis PING on Redis URLs; on any other (``amqp://``, ``pyamqp://``...) an AMQP connection
  handshake through kombu, so a wrong password or vhost counts as unreachable too.
- **queue depth**: kombu's ``queue_declare(passive=True)``: the messages waiting, not counting those delivered to a
  worker. Exact on both brokers (Redis: the list's length; RabbitMQ: the queue's ready messages).
- **in flight** (delivered to a worker, not yet acknowledged): on Redis kombu keeps them in one hash, and its
  length is exact (it also counts a dead worker's messages until they are restored). AMQP has no such count;
  the Celery way is to ask the workers (``inspect().active()`` + ``reserved()``): what live workers hold. That
  is the whole answer on RabbitMQ, which hands a dead consumer's messages back the moment its connection drops.
- **workers**: the workers that answer ``inspect().active_queues()`` within the timeout.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")


def is_redis(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def is_amqp(url: str | None) -> bool:
    """An AMQP (RabbitMQ) broker URL, as Celery spells them."""
    return bool(url) and str(url).startswith(("amqp://", "amqps://", "pyamqp://", "librabbitmq://"))


def ping(url: str, timeout: float = 1.0) -> bool:
    """Whether the broker at ``url`` answers (bounded by ``timeout``; never retries)."""
    if is_redis(url):
        return _redis_ping(url, timeout)
    from kombu import connection

    connect: Any = connection.Connection  # untyped
    try:
        with connect(url, connect_timeout=timeout) as conn:
            conn.connect()
            return bool(conn.connected)
    except Exception:  # refused, timed out, access refused (password, vhost), a bad URL: all "no answer"
        return False


def _redis_ping(url: str, timeout: float) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def queue_depth(conn: Any, queue: str) -> int:
    """Messages waiting in ``queue`` on an open kombu connection; 0 before the queue exists. On AMQP a channel of its
    own, as a passive declare of a missing queue closes the channel it was sent on; on Redis the connection's
    default channel (a new kombu Redis channel is a new connection pool: the watcher asks often)."""
    reuse = getattr(conn.transport, "driver_type", "") == "redis"
    channel = conn.default_channel if reuse else conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:
        return 0  # not declared yet: nothing was ever sent to it
    finally:
        if not reuse:
            with contextlib.suppress(Exception):
                channel.close()


def redis_unacked(conn: Any) -> int | None:
    """Messages kombu's Redis transport has delivered and not seen acknowledged (None on other transports)."""
    channel = conn.default_channel
    key = getattr(channel, "unacked_key", None)
    if key is None:
        return None
    try:
        return int(channel.client.hlen(key))
    except Exception:
        return None


@dataclass
class BrokerView:
    reachable: bool
    queues: dict[str, int] = field(default_factory=dict)  # messages waiting, per queue
    in_flight: int | None = None  # delivered to a worker, not yet acknowledged (see the module's docstring)
    workers: list[str] = field(default_factory=list)  # workers that answered, with the queues they consume


def broker_view(app: Celery, url: str | None, timeout: float = 1.0, ask_workers: bool = True) -> BrokerView:
    """Queue depths, messages in flight and the workers that answer, read from the broker at ``url``."""
    if url is None or not ping(url, timeout):
        return BrokerView(reachable=False)
    listed = {q.name for q in app.conf.task_queues or ()} | {app.conf.task_default_queue}
    app = _app_for(app, url)
    replies: dict[str, Any] = {}
    if ask_workers:
        with app.connection_for_write(url) as conn:
            replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    names = listed | {q["name"] for qs in replies.values() for q in qs or ()}
    with app.connection_for_write(url) as conn:  # a fresh one: after a broadcast its client answers None
        queues = {name: queue_depth(conn, name) for name in sorted(names)}
        flight = redis_unacked(conn) if is_redis(url) else None
    if flight is None and ask_workers:
        flight = held_by_workers(app, url, sorted(replies), timeout)
    return BrokerView(True, queues, flight, sorted(replies))


def _app_for(app: Celery, url: str) -> Celery:
    """An app whose own broker is ``url``: Celery's control commands publish through the app's producer pool
    whatever connection they are handed, so asking workers on another broker needs an app of its own."""
    if app.conf.broker_url == url:
        return app
    return _control_app(url, tuple(app.conf.accept_content), app.conf.task_serializer)


@functools.lru_cache(maxsize=4)
def _control_app(url: str, accept: tuple[str, ...], serializer: str) -> Celery:
    ctl = Celery("feedworker-probe", broker=url, set_as_current=False)
    ctl.conf.update(accept_content=list(accept), task_serializer=serializer)  # workers answer in the codec
    return ctl


def held_by_workers(app: Celery, url: str, workers: list[str], timeout: float) -> int:
    """Tasks the answering workers run or hold prefetched (``inspect active`` + ``reserved``). Asked of exactly
    the workers that answered before, so each broadcast ends as soon as they have all replied."""
    if not workers:
        return 0
    held = 0
    for method in ("active", "reserved"):
        with _inspect(app, url, workers, timeout) as inspect:
            replies = getattr(inspect, method)() or {}
        held += sum(len(tasks or ()) for tasks in replies.values())
    return held


@contextlib.contextmanager
def _inspect(app: Celery, url: str, workers: list[str], timeout: float) -> Iterator[Any]:
    with app.connection_for_write(url) as conn:
        yield app.control.inspect(destination=workers, limit=len(workers), timeout=timeout, connection=conn)
