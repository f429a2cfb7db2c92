"""Finding drops whose task message is really gone: for the watcher, `ingest --wait` and the workers' sweep.

A drop queued longer than ``watch.requeue_after_seconds`` with no outcome is only a candidate: it may simply wait
behind a long backlog. It is lost only when no message in the broker carries it: not in the queue, not unacked
(delivered to a worker: prefetched, running or retrying; Celery's acks_late keeps a running task unacked), which
the broker is asked twice, a moment apart, because a message being delivered moves from the queue to the unacked
hash in two steps. Resending only those never resends a drop waiting behind a backlog.

The workers' sweep (worker/celeryapp/sweep.py) sends lost drops again whichever
command sent them first (the watcher, `ingest` with or without `--wait`, `replay`), reading their files anew; a
drop whose file this machine cannot see is left to the watcher or `ingest --wait` that sent it.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
from celery import Celery
from kombu.serialization import loads

from tasks.queues import STAGE_QUEUES

logger = logging.getLogger(__name__)
RECHECK_SECONDS = 0.5  # between the two looks at the broker
MAX_SCAN = 2000  # queued messages read at most (~200,000 drops): past that, nothing is called lost this turn


class QueueTooLong(Exception):
    """The queue holds more than MAX_SCAN messages: too many to read now, so no drop is called lost."""


def held_keys(app: Celery, queues: tuple[str, ...] = STAGE_QUEUES) -> set[str] | None:
    """Keys of every drop a message in the broker carries (queued or unacked); None: this broker can't say.
    Raises QueueTooLong when reading them all would cost too much (a huge backlog)."""
    with app.connection_for_write() as conn:
        client = getattr(conn.default_channel, "client", None)
        if client is None or not hasattr(client, "hvals"):
            return None
        keys: set[str] = set()
        for raw in client.hvals("unacked"):
            keys.update(_message_keys(orjson.loads(raw)[0]))
        depths = {q: int(client.llen(q)) for q in queues}
        if sum(depths.values()) > MAX_SCAN:
            raise QueueTooLong(sum(depths.values()))
        for queue, depth in depths.items():
            for start in range(0, depth, 200):
                for raw in client.lrange(queue, start, start + 199):
                    keys.update(_message_keys(orjson.loads(raw)))
        return keys


def _message_keys(message: dict[str, Any]) -> Iterator[str]:
    """The drop keys in one kombu message of a stage task (anything else carries none)."""
    if not str(message.get("headers", {}).get("task", "")).startswith("feedworker."):
        return
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = loads(body, message["content-type"], message["content-encoding"])[0]  # type: ignore[no-untyped-call]
    batch = args[0] if args else None
    if isinstance(batch, list):  # parse: wire drops
        yield from (w["key"] for w in batch)
    elif isinstance(batch, dict):  # verify, publish: a sealed batch
        yield from (n["drop"]["key"] for n in batch.get("ok", []))
        yield from (f["key"] for f in batch.get("failed", []))


def really_lost(app: Celery, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of ``rows`` (drops queued too long), those no broker message carries, in two looks; all of them when the
    broker can't be asked (then the ledger's age is all there is to go by); none while the queue is too long to
    read (a drop lost meanwhile is found once it is shorter)."""
    if not rows:
        return []
    for _ in range(2):
        try:
            held = held_keys(app)
        except QueueTooLong as exc:
            logger.info("lost drops: %s messages queued, too many to read; looking again later", exc.args[0])
            return []
        if held is None:
            return rows
        rows = [r for r in rows if r["key"] not in held]
        if not rows:
            break
        time.sleep(RECHECK_SECONDS)
    return rows
