"""The store's engine: one per process, with the settings each backend needs for many writers (SQLite: WAL and
BEGIN IMMEDIATE), and the value conversions every store module shares (JSON text, UTC timestamps)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event

from tasks.utc import as_utc


def now() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for many writers."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               json_serializer=json_text)
        _sqlite_serialized_writes(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4, json_serializer=json_text)


def json_text(value: Any) -> str:
    """A record body as JSON text for the ``body`` column: orjson (~4x the stdlib here), the stdlib for what
    orjson refuses (integers past 64 bits, lone surrogates), so the stored data is the same either way.
    Bodies hold no NaN or infinity (``jsonable`` spells them as text), where the two would differ."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return json.dumps(value)


def _sqlite_serialized_writes(engine: Engine) -> None:
    # pysqlite's own transaction handling starts a deferred transaction, which can deadlock two writers that
    # both read first; BEGIN IMMEDIATE takes the write lock up front. WAL lets readers go on meanwhile.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


_utc = as_utc  # the store's readers' name for it


def _iso_us(value: datetime) -> str:
    return _utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


def exported_record(row: Any, full: set[str]) -> dict[str, Any]:
    """An ``items`` row as the contract's record (what `export` and `changes` print); ``full``: the related URLs
    that have a full record of their own (``resolved``)."""
    body = dict(row["body"])
    related = [{**rel, "resolved": rel["url"] in full} for rel in body.pop("related", [])]
    return {"url": row["url"], "stub": row["stub"], **body, "secured": row["secured"], "related": related,
            "version": row["version"], "content_sha256": row["content_sha256"],
            "first_seen_at": _iso_us(row["first_seen_at"]), "updated_at": _iso_us(row["updated_at"])}
