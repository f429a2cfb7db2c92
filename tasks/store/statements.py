"""The statements the ledger runs for many rows at once, built once from the schema's table and column names:
portable ones (SQLAlchemy) and PostgreSQL's own (one ``jsonb_to_recordset`` parameter for a whole batch, so the
statement text is the same whatever the count). The ledger picks between them by dialect."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, text, update
from sqlalchemy.dialects import postgresql

from tasks.store.schema import drops, items

# Statements executed for many rows at once; ``b_*`` names the WHERE parameter (SQLAlchemy reserves column names).
_UPDATED_COLUMNS = ("stub", "version", "content_sha256", "order_mtime_ns", "order_name", "title", "published_at",
                    "source_id", "secured", "body", "updated_at")  # all but url, id and first_seen_at
_UPDATE_ITEM = update(items).where(items.c.url == bindparam("b_url")).values(
    {c: bindparam(c) for c in _UPDATED_COLUMNS})
_REORDER_ITEM = update(items).where(items.c.url == bindparam("b_url")).values(
    order_mtime_ns=bindparam("order_mtime_ns"), order_name=bindparam("order_name"))
_FINISH_DROP = update(drops).where(drops.c.key == bindparam("b_key")).values(
    {c: bindparam(c) for c in ("state", "stage", "reason", "item_url", "finished_at")})


_LOCKED_COLUMNS = ("url", "stub", "version", "content_sha256", "order_mtime_ns", "order_name")
_ITEM_COLUMNS = ("url", *_LOCKED_COLUMNS[1:], "title", "published_at", "source_id", "secured", "body",
                 "first_seen_at", "updated_at")
_REGISTER_COLUMNS = ("key", "run_id", "origin", "name", "path", "size", "mtime_ns", "state", "attempts",
                     "discovered_at", "queued_at")
_FINISH_COLUMNS = ("state", "stage", "reason", "item_url", "finished_at")


def _recordset(table: Any, columns: Iterable[str], where: tuple[str, str] | None = None) -> str:
    """``jsonb_to_recordset(:rows) AS r(...)`` with the table's own column types; ``where``: (parameter name,
    column) of the row's identity, for an UPDATE ... FROM."""
    fields = [f'"{c}" {_pg_type(table.c[c])}' for c in columns]
    if where is not None:
        fields.insert(0, f'"{where[0]}" {_pg_type(table.c[where[1]])}')
    return f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({', '.join(fields)})"


def _pg_type(column: Any) -> str:
    """The column's PostgreSQL type; a length-limited text as TEXT, so that a value too long for its column is
    refused when assigned (as a bound parameter is), never cut short by a conversion."""
    name = str(column.type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    return "TEXT" if name.startswith("VARCHAR") else name


# The statements below are built once, from the schema's own table and column names: no input reaches their text.
def _pg_insert(table: Any, columns: Sequence[str], unique: str) -> Any:
    names = ", ".join(f'"{c}"' for c in columns)
    return text(f'INSERT INTO {table.name} ({names}) SELECT {names} FROM {_recordset(table, columns)} '  # noqa: S608
                f'ON CONFLICT ("{unique}") DO NOTHING RETURNING "{unique}"')


def _pg_update(table: Any, columns: Sequence[str], param: str, column: str) -> Any:
    sets = ", ".join(f'"{c}" = r."{c}"' for c in columns)
    return text(f'UPDATE {table.name} SET {sets} FROM {_recordset(table, columns, (param, column))} '  # noqa: S608
                f'WHERE {table.name}."{column}" = r."{param}"')


_PG_REGISTER = _pg_insert(drops, _REGISTER_COLUMNS, "key")
_PG_INSERT_ITEMS = _pg_insert(items, _ITEM_COLUMNS, "url")
_PG_UPDATE_ITEMS = _pg_update(items, _UPDATED_COLUMNS, "b_url", "url")
_PG_REORDER_ITEMS = _pg_update(items, ("order_mtime_ns", "order_name"), "b_url", "url")
_PG_FINISH_DROPS = _pg_update(drops, _FINISH_COLUMNS, "b_key", "key")
_PG_LEDGER_STATES = text('SELECT "key", state FROM drops WHERE "key" = ANY(:keys)')
_PG_LOCK_ITEMS = text(f'SELECT {", ".join(_LOCKED_COLUMNS)} FROM items WHERE url = ANY(:urls) '  # noqa: S608
                      "ORDER BY url FOR UPDATE")


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON array for ``jsonb_to_recordset`` (timestamps as ISO 8601 with their offset)."""
    try:
        return orjson.dumps(rows).decode("utf-8")
    except TypeError:  # what orjson refuses (integers past 64 bits in a body): the stdlib, same data
        return json.dumps(rows, default=lambda v: v.isoformat())
