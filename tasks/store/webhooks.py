"""Webhook delivery of the change log: batches of changes POSTed to operator-configured endpoints, signed.

In order per endpoint: one delivery at a time holds the endpoint's lease (a row in ``webhook_state``, claimed with
a conditional UPDATE, so it works alike on PostgreSQL and SQLite and holds no transaction open across the HTTP
call); the endpoint's cursor moves only after a 2xx answer. At least once: a POST answered but not recorded (a
crash between the two) is sent again, so receivers drop a change whose cursor they have seen.

Signature: ``X-Feedworker-Signature: sha256=HEX``, HMAC-SHA256 with the endpoint's secret over
``TIMESTAMP + "." + BODY``, with ``X-Feedworker-Timestamp: TIMESTAMP`` (Unix seconds): a receiver recomputes it
and refuses an old timestamp, so a captured request can't be replayed later.

The Celery task that runs this (scheduling, retries with backoff and jitter) is worker/celeryapp/webhooks.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Connection, and_, or_, select, update

from tasks.store.changes import read
from tasks.store.schema import change_log, changes, webhook_state

if TYPE_CHECKING:
    from tasks.store.ledger import Store

logger = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Feedworker-Signature"
TIMESTAMP_HEADER = "X-Feedworker-Timestamp"


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    secret: bytes
    batch_max: int = 100
    timeout: float = 10.0
    retry_max: float = 50.0  # backoff cap


@dataclass(frozen=True)
class Result:
    """What one delivery run did: ``state`` is done | more (call again now) | busy | failed."""

    state: str
    sent: int = 0
    failures: int = 0
    retry_in: float | None = None  # busy: when the holder's lease ends (a follow-up is due then); failed: backoff


class DeliveryError(Exception):
    """The endpoint did not take the batch (no answer, or not 2xx)."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post(ep: Endpoint, batch: list[dict[str, Any]]) -> None:
    """POST one batch; redirects are not followed (an endpoint must not bounce the changes elsewhere)."""
    from tasks.store.engine import json_text

    body = json_text({"endpoint": ep.name, "changes": batch}).encode()
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
               SIGNATURE_HEADER: sign(ep.secret, stamp, body)}
    try:
        answer = _client().post(ep.url, content=body, headers=headers, timeout=ep.timeout)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if not 200 <= answer.status_code < 300:
        raise DeliveryError(f"HTTP {answer.status_code}")


def _client() -> httpx.Client:
    """One client per process: its connection pool and TLS context are made once, not per POST (both cost
    more CPU than the POST itself)."""
    if _clients.get("pid") != os.getpid():
        _clients.update(pid=os.getpid(), client=httpx.Client(follow_redirects=False))
    client: httpx.Client = _clients["client"]
    return client


_clients: dict[str, Any] = {}


def held(store: Store) -> set[str]:
    """The endpoints whose delivery is running now (a valid lease): their holder reads on to the end, and
    checks for more after it lets go, so waking it again would only cost a task."""
    from tasks.store.engine import now

    with store.engine.connect() as conn:
        rows = conn.execute(select(webhook_state.c.endpoint).where(webhook_state.c.lease_until > now()))
        return {n for (n,) in rows}


def deliver(store: Store, ep: Endpoint, budget: float = 20.0) -> Result:
    """Send the endpoint every change after its cursor, in batches, while it takes them (for about ``budget``
    seconds: then ``more``, and the caller goes on in a fresh task)."""
    deadline = time.monotonic() + budget
    lease = timedelta(seconds=ep.timeout * 2 + 10)
    token = secrets.token_hex(16)
    cursor = _claim(store, ep.name, token, lease)
    if cursor is None:
        return Result("busy", retry_in=_follow_up(store, ep.name))
    cursor, sent = _past_pruned(store, ep.name, cursor), 0
    try:
        while True:
            batch = read(store, cursor or None, ep.batch_max, check=False)  # _past_pruned checked it
            if not batch:
                break
            post(ep, batch)
            cursor, sent = int(batch[-1]["cursor"]), sent + len(batch)
            _advance(store, ep.name, token, cursor, lease)
            if time.monotonic() > deadline:
                break
    except DeliveryError as exc:
        failures, delay = _fail(store, ep, token, str(exc))
        return Result("failed", sent, failures, retry_in=delay)
    _release(store, ep.name, token)
    return Result("more" if _pending(store, cursor) else "done", sent)


# -- the endpoint's row --------------------------------------------------------------------------------------------

def ensure(store: Store, names: list[str]) -> None:
    """A row for each configured endpoint (a new one starts at the beginning of the kept log)."""
    def work(conn: Connection) -> None:
        known = {n for (n,) in conn.execute(select(webhook_state.c.endpoint))}
        new = [{"endpoint": n, "cursor": 0, "failures": 0} for n in names if n not in known]
        if new:
            conn.execute(webhook_state.insert(), new)

    store.transaction(work)


def _claim(store: Store, name: str, token: str, lease: timedelta) -> int | None:
    from tasks.store.engine import now

    stamp = now()
    stmt = (update(webhook_state)
            .where(webhook_state.c.endpoint == name,
                   or_(webhook_state.c.lease_until.is_(None), webhook_state.c.lease_until < stamp))
            .values(lease_token=token, lease_until=stamp + lease).returning(webhook_state.c.cursor))
    return store.transaction(lambda conn: conn.execute(stmt).scalar())


def _follow_up(store: Store, name: str) -> float | None:
    """Seconds until the holder's lease ends, the first time a caller finds this lease held (so one follow-up
    per lease is scheduled: it takes over if the holder died); None otherwise."""
    from tasks.store.engine import _utc, now

    w = webhook_state.c

    def work(conn: Connection) -> float | None:
        row = conn.execute(update(webhook_state).where(
            w.endpoint == name, w.lease_token.is_not(None), or_(w.followup_token.is_(None),
                                                                 w.followup_token != w.lease_token))
            .values(followup_token=w.lease_token).returning(w.lease_until)).scalar()
        until = _utc(row)
        return None if until is None else max(0.0, (until - now()).total_seconds())

    return store.transaction(work)


def _mine(name: str, token: str) -> Any:
    return and_(webhook_state.c.endpoint == name, webhook_state.c.lease_token == token)


def _advance(store: Store, name: str, token: str, cursor: int, lease: timedelta) -> None:
    from tasks.store.engine import now

    stamp = now()
    store.transaction(lambda conn: conn.execute(update(webhook_state).where(_mine(name, token)).values(
        cursor=cursor, lease_until=stamp + lease, delivered_at=stamp, failures=0, failing_since=None,
        last_error=None)))


def _release(store: Store, name: str, token: str) -> None:
    store.transaction(lambda conn: conn.execute(update(webhook_state).where(_mine(name, token)).values(
        lease_token=None, lease_until=None)))


def backoff(failures: int, cap: float) -> float:
    """Full jitter: uniformly up to 0.5 s x 2^failures, capped."""
    return random.uniform(0.0, min(cap, 0.5 * 2 ** min(failures, 16)))  # noqa: S311 (jitter, not crypto)


def _fail(store: Store, ep: Endpoint, token: str, error: str) -> tuple[int, float]:
    """Record the failure; keep the lease, without a holder, until the retry is due (so publishes meanwhile
    don't wake the endpoint early: see ``held``); return its consecutive failures and the backoff."""
    from tasks.store.engine import now

    def work(conn: Connection) -> tuple[int, float]:
        row = conn.execute(select(webhook_state.c.failures, webhook_state.c.failing_since)
                           .where(_mine(ep.name, token))).one_or_none()
        failures = 1 + (row.failures if row is not None else 0)
        delay = backoff(failures, ep.retry_max)
        if row is not None:
            stamp = now()
            conn.execute(update(webhook_state).where(_mine(ep.name, token)).values(
                failures=failures, failing_since=row.failing_since or stamp, last_error=error[:300],
                lease_token=None, lease_until=stamp + timedelta(seconds=delay)))
        return failures, delay

    return store.transaction(work)


def _past_pruned(store: Store, name: str, cursor: int) -> int:
    """An endpoint that fell further behind than the log keeps goes on from the oldest change kept (said in
    the log: its receiver missed changes and should re-read `feedworker export`)."""
    with store.engine.connect() as conn:
        pruned = int(conn.execute(select(change_log.c.pruned_through)).scalar() or 0)
    if cursor < pruned:
        logger.error("webhooks: endpoint %s was behind the change log's retention: changes %d..%d were pruned "
                     "before it took them", name, cursor + 1, pruned)
        return pruned
    return cursor


def _pending(store: Store, cursor: int) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(select(changes.c.seq).where(changes.c.seq > cursor).limit(1)).first() is not None


def states(store: Store) -> list[dict[str, Any]]:
    """Every endpoint's delivery state, with how many changes it is behind (status, metrics)."""
    from sqlalchemy import func

    from tasks.store.engine import _utc

    with store.engine.connect() as conn:
        newest = conn.execute(select(func.max(changes.c.seq))).scalar() or 0
        rows = conn.execute(select(webhook_state).order_by(webhook_state.c.endpoint)).all()
    return [{"endpoint": r.endpoint, "cursor": r.cursor, "behind": max(0, newest - r.cursor),
             "failures": r.failures, "failing_since": _utc(r.failing_since), "last_error": r.last_error,
             "delivered_at": _utc(r.delivered_at)} for r in rows]


def failing_seconds(state: dict[str, Any], at: datetime) -> float:
    since = state["failing_since"]
    return 0.0 if since is None else max(0.0, (at - since).total_seconds())
