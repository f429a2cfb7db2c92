"""The change log (outbox): written by the publish transaction, read by `feedworker changes` and webhooks.

Why cursors never skip (docs/changes.md): the log rows get their ``seq`` as the last thing a publish does, under
a transaction-scoped lock that only its commit releases. On PostgreSQL that is an advisory lock; a transaction
becomes visible before its locks are released, so when a reader sees seq N, every seq below N has committed (or
rolled back, leaving a gap that stays a gap). On SQLite every write transaction holds the database's one write
lock from BEGIN IMMEDIATE, which gives the same order for free. A reader's cursor is then just the last seq.

Each row keeps the record as the items row held it at that version; ``resolved`` on related entries is decided
when the change is read, as `feedworker export` decides it, so the latest change per URL equals the export.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import Connection, Engine, Text, cast, func, select, text, update

from tasks.errors import FeedworkerError
from tasks.link.merge import Change
from tasks.store.engine import _iso_us, exported_record, now
from tasks.store.schema import change_log, changes, items

T = TypeVar("T")


class Store(Protocol):
    """What the change log needs of a store (tasks.store.ledger.Store, which calls in here when it publishes: a
    protocol, not an import, so the two modules do not import each other)."""

    engine: Engine
    dialect: str

    def transaction(self, work: Callable[[Connection], T], attempts: int = ...) -> T: ...

logger = logging.getLogger(__name__)

CHANNEL = "feedworker_changes"  # PostgreSQL NOTIFY channel: sent in the publish transaction, so at its commit
_SEQ_LOCK = 0x6665_6564_6367  # the advisory lock that orders seq assignment with commits ("feedcg")
DEFAULT_RETENTION = timedelta(days=30)
PRUNE_EVERY = 600.0  # seconds between opportunistic prunes by one process's publishes


class BadCursor(FeedworkerError):
    """A cursor that is not one of ours, or older than the retained log."""


def parse_cursor(value: str) -> int:
    """A cursor as the log's seq; it is a decimal number today, but callers must treat it as opaque."""
    if not value.isdecimal() or len(value) > 19:
        raise BadCursor(f"not a change cursor: {value[:40]!r} (pass the \"cursor\" of a line `changes` printed)")
    return int(value)


# -- writing (inside the publish transaction) -----------------------------------------------------------------

def log_changes(conn: Connection, dialect: str, batch: Sequence[Change]) -> None:
    """Append the batch's changes. Must be the publish transaction's last statement: on PostgreSQL it takes the
    lock that orders seq with commit, held until the commit."""
    if not batch:
        return
    rows = [_param(i, c) for i, c in enumerate(batch)]
    if dialect == "postgresql":
        conn.execute(_PG_LOCK_AND_NOTIFY, {"k": _SEQ_LOCK, "channel": CHANNEL})
        from tasks.store.statements import _rows_json

        conn.execute(_PG_LOG, {"rows": _rows_json(rows)})
    else:
        from tasks.store.engine import json_text

        conn.execute(_SQLITE_LOG, [{**r, "body": None if r["body"] is None else json_text(r["body"])} for r in rows])


def _param(n: int, c: Change) -> dict[str, Any]:
    """A final version is copied from its items row, written just before; an intermediate one from its draft."""
    if c.final:
        return {"n": n, "kind": c.kind, "url": c.url, "final": True, "version": None, "stub": None,
                "content_sha256": None, "secured": None, "body": None}
    d = c.draft
    return {"n": n, "kind": c.kind, "url": c.url, "final": False, "version": c.version, "stub": d["stub"],
            "content_sha256": d["sha256"], "secured": d["secured"], "body": d["body"]}


_COPY = """SELECT r.kind, i.url,
  CASE WHEN r.final THEN i.version ELSE r.version END, CASE WHEN r.final THEN i.stub ELSE r.stub END,
  CASE WHEN r.final THEN i.content_sha256 ELSE r.content_sha256 END,
  CASE WHEN r.final THEN i.secured ELSE r.secured END, CASE WHEN r.final THEN i.body ELSE r.body END,
  i.first_seen_at, i.updated_at"""
_INTO = "INSERT INTO changes (kind, url, version, stub, content_sha256, secured, body, first_seen_at, updated_at) "
_PG_LOCK_AND_NOTIFY = text("SELECT pg_advisory_xact_lock(:k), pg_notify(:channel, '')")
_PG_LOG = text(_INTO + _COPY + " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(n int, kind text, url text, "
               "final boolean, version int, stub boolean, content_sha256 text, secured text, body jsonb) "
               "JOIN items i ON i.url = r.url ORDER BY r.n")
_SQLITE_LOG = text(_INTO + _COPY.replace("r.", ":") + " FROM items i WHERE i.url = :url")


# -- reading ----------------------------------------------------------------------------------------------------

def read(store: Store, since: int | None, limit: int, check: bool = True) -> list[dict[str, Any]]:
    """Up to ``limit`` changes after cursor ``since`` (from the oldest kept without one), as printed lines.
    ``check``: refuse a cursor that is not this log's (False: a cursor the caller keeps and checked itself)."""
    with store.engine.connect() as conn:
        if since is not None and check:
            _check_cursor(conn, store.dialect, since)
        stmt = select(*_READ).where(changes.c.seq > (since or 0)).order_by(changes.c.seq).limit(limit)
        rows = [{**r._mapping, "body": _loads(r.body)} for r in conn.execute(stmt)]
        full = _full_urls(conn, {rel["url"] for r in rows for rel in r["body"].get("related") or []})
    return [{"cursor": str(r["seq"]), "kind": r["kind"], "url": r["url"], "version": r["version"],
             "at": _iso_us(r["updated_at"]), "record": exported_record(r, full)} for r in rows]


# The body read as text and parsed here with orjson (~4x the driver's json.loads: most of a read's CPU).
_READ = [*(c for c in changes.c if c.name != "body"), cast(changes.c.body, Text).label("body")]


def _loads(text: str) -> Any:
    # orjson reads an integer past 64 bits as a float: a text with a run of 19+ digits anywhere takes the stdlib
    if _LONG_DIGITS.search(text):
        return json.loads(text)
    return orjson.loads(text)


_LONG_DIGITS = re.compile(r"\d{19,}")


def _check_cursor(conn: Connection, dialect: str, since: int) -> None:
    pruned = conn.execute(select(change_log.c.pruned_through)).scalar() or 0
    if since < pruned:
        raise BadCursor(f"cursor {since} is older than the change log keeps (pruned through {pruned}): "
                        "start again from `feedworker export`, then `changes` without --since")
    newest = conn.execute(_PG_NEWEST if dialect == "postgresql" else _SQLITE_NEWEST).scalar() or 0
    if since > newest:
        raise BadCursor(f"cursor {since} is ahead of this store's change log (newest {newest}): "
                        "a cursor of another store?")


_PG_NEWEST = text("SELECT pg_sequence_last_value(pg_get_serial_sequence('changes', 'seq')::regclass)")
_SQLITE_NEWEST = text("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")


def _full_urls(conn: Connection, urls: set[str]) -> set[str]:
    if not urls:
        return set()
    stmt = select(items.c.url).where(items.c.url.in_(sorted(urls)), items.c.stub.is_(False))
    return {u for (u,) in conn.execute(stmt)}


def stats(store: Store) -> dict[str, Any]:
    """The log's size and its oldest entry's time (for `feedworker status`)."""
    with store.engine.connect() as conn:
        count, oldest = conn.execute(select(func.count(), func.min(changes.c.updated_at))).one()
    return {"count": int(count), "oldest_at": _iso_us(oldest) if oldest is not None else None}


# -- retention --------------------------------------------------------------------------------------------------

def prune(store: Store, older_than: datetime) -> int:
    """Delete the changes from before ``older_than`` and raise the watermark; return how many went."""
    def work(conn: Connection) -> int:
        last = conn.execute(select(func.max(changes.c.seq)).where(changes.c.updated_at < older_than)).scalar()
        if last is None:
            return 0
        gone = conn.execute(changes.delete().where(changes.c.seq <= last)).rowcount
        conn.execute(update(change_log).where(change_log.c.id == 1, change_log.c.pruned_through < last)
                     .values(pruned_through=last))
        return int(gone)

    return store.transaction(work)


def prune_now_and_then(store: Store, retention: timedelta, state: dict[str, float]) -> None:
    """Prune at most every PRUNE_EVERY seconds per process (``state`` remembers when); called after a publish
    committed, in a transaction of its own, so a prune that fails never fails a publish."""
    clock = time.monotonic()
    if clock - state.get("at", -PRUNE_EVERY) < PRUNE_EVERY:
        return
    state["at"] = clock
    try:
        gone = prune(store, now() - retention)
    except Exception as exc:  # the next publish tries again later; the log only grows meanwhile
        logger.warning("changes: pruning failed: %s", type(exc).__name__)
        return
    if gone:
        logger.info("changes: pruned %d changes older than %s", gone, retention)
