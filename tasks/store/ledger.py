"""The store's ledger and records: registering drops, publishing batches, reading records back. PostgreSQL in
production, SQLite embedded, behind the same code (the connection set-up is in engine.py; the statements run for
many rows at once, PostgreSQL's own included, in statements.py).

Publishing is one transaction per batch: the records and the ledger outcomes of its drops commit together, so a
crash leaves either all of a batch or none of it, and a redelivered batch finds its drops done and changes nothing.
Concurrency: rows are locked in URL order (SELECT ... FOR UPDATE on PostgreSQL; SQLite serializes writers with
BEGIN IMMEDIATE); two batches creating the same new URL at once collide on the unique index and the loser retries.

Over 300 lines on purpose: ``Store`` is one API over one transaction discipline (register, publish, requeue,
read back); the helpers it needs that stand alone are in engine.py and statements.py.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tasks.errors import StoreUnavailable
from tasks.link.merge import Applied, apply_drafts
from tasks.link.records import Draft, Normalized
from tasks.shapes import Failure, Outcome
from tasks.store.changes import DEFAULT_RETENTION, log_changes, prune_now_and_then
from tasks.store.engine import _parse_ts, _utc, exported_record, make_engine, now
from tasks.store.schema import DONE_STATES, drops, items
from tasks.store.statements import (
    _FINISH_DROP,
    _LOCKED_COLUMNS,
    _PG_FINISH_DROPS,
    _PG_INSERT_ITEMS,
    _PG_LEDGER_STATES,
    _PG_LOCK_ITEMS,
    _PG_REGISTER,
    _PG_REORDER_ITEMS,
    _PG_UPDATE_ITEMS,
    _REORDER_ITEM,
    _UPDATE_ITEM,
    _UPDATED_COLUMNS,
    _rows_json,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class _Collision(Exception):
    """Another transaction created one of our new URLs first: start over."""


class Store:
    """Records and the drop ledger, in one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self.changes_retention = DEFAULT_RETENTION  # the change log's (tasks/store/changes.py); set from the settings
        self._pruned: dict[str, float] = {}

    def dispose(self) -> None:
        self.engine.dispose()

    # -- transactions -------------------------------------------------------------------------------------------

    def transaction(self, work: Callable[[Connection], T], attempts: int = 6) -> T:
        """Run ``work`` in a transaction, retrying collisions, deadlocks and dropped connections with backoff."""
        for attempt in range(1, attempts + 1):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except _Collision:
                logger.debug("store: url collision, retrying (attempt %d)", attempt)
            except OperationalError as exc:
                if attempt == attempts:
                    raise StoreUnavailable(f"store: {_short(exc)}") from exc
                logger.warning("store: transient error, retrying (attempt %d): %s", attempt, _short(exc))
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
        raise StoreUnavailable("store: gave up after repeated collisions")

    # -- the ledger ----------------------------------------------------------------------------------------------

    def register_drops(self, rows: Sequence[Mapping[str, Any]], run_id: str, origin: str) -> list[str]:
        """Insert drops as queued, skipping keys already known; return the keys this call inserted."""
        if not rows:
            return []
        stamp = now()
        values = [{**r, "run_id": run_id, "origin": origin, "state": "queued", "attempts": 1,
                   "discovered_at": stamp, "queued_at": stamp} for r in rows]

        def work(conn: Connection) -> list[str]:
            stmt = self._insert(drops).on_conflict_do_nothing(index_elements=["key"]).returning(drops.c.key)
            return [k for (k,) in self._many(conn, stmt, _PG_REGISTER, values)]

        return self.transaction(work)

    def requeue(self, keys: Sequence[str], state: str | None = None) -> list[str]:
        """Mark drops queued again (a lost task, or a replay), clearing their outcome; return the keys marked.

        With ``state``, only the drops still in that state: a drop whose task finished since the caller read it
        keeps its outcome (a "lost" drop published meanwhile must not be reset, sent again and counted twice).
        """
        if not keys:
            return []
        stmt = update(drops).where(drops.c.key.in_(keys))
        if state is not None:
            stmt = stmt.where(drops.c.state == state)
        stmt = stmt.values(state="queued", stage=None, reason=None, queued_at=now(), finished_at=None,
                           finalized_at=None, attempts=drops.c.attempts + 1).returning(drops.c.key)
        return self.transaction(lambda conn: [k for (k,) in conn.execute(stmt)])

    def stale_queued(self, older_than: datetime, limit: int = 1000, *, under: str | None = None,
                     run_id: str | None = None) -> list[dict[str, Any]]:
        """Drops queued before ``older_than`` with no outcome: their task may have been lost. ``under``: only
        files below that folder path; ``run_id``: only that run's drops."""
        stmt = select(drops).where(drops.c.state == "queued", drops.c.queued_at < older_than)
        if under is not None:
            stmt = stmt.where(drops.c.path.startswith(under, autoescape=True))
        if run_id is not None:
            stmt = stmt.where(drops.c.run_id == run_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(drops.c.queued_at).limit(limit))
            return [dict(r._mapping) for r in rows]

    def failed_drops(self) -> list[dict[str, Any]]:
        """Drops whose latest outcome is failed, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(drops).where(drops.c.state == "failed").order_by(drops.c.finished_at))
            return [dict(r._mapping) for r in rows]

    def run_counts(self, run_id: str) -> Counter[str]:
        """Drops of one run by state."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(drops.c.state, func.count()).where(drops.c.run_id == run_id)
                                .group_by(drops.c.state))
            return Counter({state: n for state, n in rows})

    def state_counts(self, since: datetime | None = None) -> Counter[str]:
        """All drops by state (finished since ``since``, for the finished states, when given)."""
        stmt = select(drops.c.state, func.count()).group_by(drops.c.state)
        if since is not None:
            stmt = stmt.where((drops.c.finished_at >= since) | (drops.c.state.not_in(DONE_STATES)))
        with self.engine.connect() as conn:
            return Counter({state: n for state, n in conn.execute(stmt)})

    def oldest_queued(self) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(func.min(drops.c.queued_at)).where(drops.c.state == "queued")).scalar()
        return _utc(value)

    def recent_failures(self, limit: int = 5) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(drops.c.name, drops.c.stage, drops.c.reason, drops.c.finished_at)
                                .where(drops.c.state == "failed").order_by(drops.c.finished_at.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def finished_unfinalized(self, origin: str, limit: int = 500, *, under: str | None = None
                             ) -> list[dict[str, Any]]:
        """Done drops whose file has not been moved yet (the watcher moves them only after this commit);
        ``under``: only files below that folder path."""
        stmt = select(drops).where(drops.c.origin == origin, drops.c.finalized_at.is_(None),
                                   drops.c.state.in_(DONE_STATES))
        if under is not None:
            stmt = stmt.where(drops.c.path.startswith(under, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.limit(limit))
            return [dict(r._mapping) for r in rows]

    def mark_finalized(self, key: str, final_path: str | None) -> None:
        self.mark_finalized_many([(key, final_path)])

    def mark_finalized_many(self, done: Sequence[tuple[str, str | None]]) -> None:
        """Drops put away (key, where the file is now): one transaction for a watcher's whole pass, so that a pass
        costs one commit, not one a drop, on the loop that also takes new drops."""
        if not done:
            return
        stmt = (update(drops).where(drops.c.key == bindparam("k"))
                .values(finalized_at=bindparam("at"), final_path=bindparam("p")))
        at = now()
        self.transaction(lambda conn: conn.execute(stmt, [{"k": k, "p": p, "at": at} for k, p in done]))

    def known_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        with self.engine.connect() as conn:
            return {k for (k,) in conn.execute(select(drops.c.key).where(drops.c.key.in_(keys)))}

    # -- publishing ----------------------------------------------------------------------------------------------

    def publish(self, batch: Sequence[Normalized], failures: Sequence[Failure]) -> dict[str, Outcome]:
        """Write a batch's records and every drop's outcome in one transaction; return key -> outcome.

        Drops already finished (a redelivered task) are skipped: a task delivered twice counts once.
        A batch that the database refuses as data (not as an outage) is split, so one bad drop fails alone.
        """
        try:
            outcomes = self.transaction(lambda conn: self._publish(conn, batch, failures))
        except (IntegrityError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or len(batch) + len(failures) <= 1:
                raise
            logger.warning("store: batch refused (%s); publishing its drops one by one", _short(exc))
            return self._publish_one_by_one(batch, failures)
        prune_now_and_then(self, self.changes_retention, self._pruned)
        return outcomes

    def _publish_one_by_one(self, batch: Sequence[Normalized], failures: Sequence[Failure]) -> dict[str, Outcome]:
        outcomes = self.publish([], failures) if failures else {}
        for n in batch:
            try:
                outcomes.update(self.publish([n], []))
            except (IntegrityError, DBAPIError) as exc:
                if isinstance(exc, OperationalError):
                    raise
                fail = Failure(**n["drop"], stage="publish", reason=f"the store refused the record: {_short(exc)}")
                outcomes.update(self.publish([], [fail]))
        return outcomes

    def _publish(self, conn: Connection, batch: Sequence[Normalized], failures: Sequence[Failure]
                 ) -> dict[str, Outcome]:
        keys = [n["drop"]["key"] for n in batch] + [f["key"] for f in failures]
        states = self._ledger_states(conn, keys)
        finished = {k for k, state in states.items() if state in DONE_STATES}
        todo = [n for n in batch if n["drop"]["key"] not in finished]
        stamp = now()
        current = self._lock_items(conn, todo)
        applied = apply_drafts(current, todo)
        self._write_items(conn, applied, stamp)
        outcomes: dict[str, Outcome] = {}
        ends: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for n in todo:
            key = n["drop"]["key"]
            outcomes[key] = applied.outcomes[key]
            ends.append((n["drop"], _ending(key, outcomes[key], stamp, item_url=n["record"]["url"])))
        for f in failures:
            if f["key"] not in finished:
                outcomes[f["key"]] = "failed"
                ends.append((f, _ending(f["key"], "failed", stamp, stage=f["stage"], reason=f["reason"])))
        self._finish_drops(conn, ends, states, stamp)
        log_changes(conn, self.dialect, applied.changes)  # last: it holds the change log's lock until commit
        return outcomes

    def _ledger_states(self, conn: Connection, keys: list[str]) -> dict[str, str]:
        """The ledger state of each known key among ``keys``."""
        if not keys:
            return {}
        if self.dialect == "postgresql":  # one array parameter: the same statement text whatever the count
            return {k: state for k, state in conn.execute(_PG_LEDGER_STATES, {"keys": keys})}
        return {k: state for k, state in conn.execute(select(drops.c.key, drops.c.state).where(drops.c.key.in_(keys)))}

    def _lock_items(self, conn: Connection, batch: Sequence[Normalized]) -> dict[str, dict[str, Any]]:
        urls = sorted({d["url"] for n in batch for d in (n["record"], *n["stubs"])})
        if not urls:
            return {}
        if self.dialect == "postgresql":
            return {r.url: dict(r._mapping) for r in conn.execute(_PG_LOCK_ITEMS, {"urls": urls})}
        cols = [items.c[c] for c in _LOCKED_COLUMNS]
        stmt = select(*cols).where(items.c.url.in_(urls)).order_by(items.c.url).with_for_update()
        return {r.url: dict(r._mapping) for r in conn.execute(stmt)}

    def _write_items(self, conn: Connection, applied: Applied, stamp: datetime) -> None:
        # One statement per kind of write, each for many rows: compiled once, few round trips, short locks.
        new = [_row(d, version, stamp) for d, version in applied.created]
        if new:
            stmt = self._insert(items).on_conflict_do_nothing(index_elements=["url"]).returning(items.c.url)
            inserted = {u for (u,) in self._many(conn, stmt, _PG_INSERT_ITEMS, new)}
            if len(inserted) != len(new):
                raise _Collision
        changed = [_changed_row(d, version, stamp) for d, version in applied.updated]
        if changed:
            self._many(conn, _UPDATE_ITEM, _PG_UPDATE_ITEMS, changed)
        if applied.reordered:
            self._many(conn, _REORDER_ITEM, _PG_REORDER_ITEMS, [
                {"b_url": url, "order_mtime_ns": order[0], "order_name": order[1]} for url, order in applied.reordered])

    def _finish_drops(self, conn: Connection, ends: list[tuple[Mapping[str, Any], dict[str, Any]]],
                      states: Mapping[str, str], stamp: datetime) -> None:
        """Record each drop's outcome (one UPDATE executed for many rows). A drop enqueued without the ledger
        (e.g. by hand) is inserted first."""
        unknown = [{"key": drop["key"], "run_id": "adhoc", "origin": "adhoc", "name": drop["name"],
                    "path": drop["path"], "size": drop["size"], "mtime_ns": drop["mtime_ns"], "attempts": 1,
                    "discovered_at": stamp, "queued_at": stamp, "state": "queued"}
                   for drop, _ in ends if drop["key"] not in states]
        if unknown:
            conn.execute(self._insert(drops).on_conflict_do_nothing(index_elements=["key"]), unknown)
        if ends:
            self._many(conn, _FINISH_DROP, _PG_FINISH_DROPS, [values for _, values in ends])

    def _many(self, conn: Connection, stmt: Any, pg_stmt: Any, rows: list[dict[str, Any]]) -> Any:
        """Execute a statement for many rows (their keys are the statement's parameters; unique rows).

        PostgreSQL: ``pg_stmt`` reads all the rows from one JSON parameter (``jsonb_to_recordset``): one short
        statement text, parsed and planned once, where the generic form renders (and psycopg parses) a statement
        of rows x columns parameters each time. Elsewhere: ``stmt`` executed for many rows by SQLAlchemy."""
        if self.dialect == "postgresql":
            return conn.execute(pg_stmt, {"rows": _rows_json(rows)})
        return conn.execute(stmt, rows)

    def _insert(self, table: Any) -> Any:
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    # -- reading records -------------------------------------------------------------------------------------------

    def export(self) -> Iterator[dict[str, Any]]:
        """Every record, as the contract's export shape, in creation order."""
        with self.engine.connect() as conn:
            full = {u for (u,) in conn.execute(select(items.c.url).where(items.c.stub.is_(False)))}
            result = conn.execution_options(yield_per=500).execute(select(items).order_by(items.c.id))
            for row in result:
                yield exported_record(row._mapping, full)

    def count_items(self) -> Counter[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(items.c.stub, func.count()).group_by(items.c.stub))
            return Counter({("stubs" if stub else "records"): n for stub, n in rows})


def _ending(key: str, state: str, stamp: datetime, item_url: str | None = None, stage: str | None = None,
            reason: str | None = None) -> dict[str, Any]:
    """The parameters of ``_FINISH_DROP`` for one drop."""
    return {"b_key": key, "state": state, "stage": stage, "reason": reason, "item_url": item_url,
            "finished_at": stamp}


def _changed_row(d: Draft, version: int, stamp: datetime) -> dict[str, Any]:
    """The parameters of ``_UPDATE_ITEM`` for one changed record: exactly its SET columns, ``first_seen_at`` kept."""
    row = _row(d, version, stamp)
    return {"b_url": d["url"], **{c: row[c] for c in _UPDATED_COLUMNS}}


def _row(d: Draft, version: int, stamp: datetime) -> dict[str, Any]:
    body = d["body"]
    return {"url": d["url"], "stub": d["stub"], "version": version, "content_sha256": d["sha256"],
            "order_mtime_ns": d["order_mtime_ns"], "order_name": d["order_name"], "title": body.get("title"),
            "published_at": _parse_ts(body.get("published_at")), "source_id": body.get("source_id"),
            "secured": d["secured"], "body": body, "first_seen_at": stamp, "updated_at": stamp}


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
