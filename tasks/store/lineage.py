"""One drop's lineage from the ledger, for `feedworker trace`: its ledger row, the record it wrote and every
delivery of every batch that carried it (tasks/store/deliveries.py)."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import or_, select

from tasks.names import escape, escaped_path, unescape
from tasks.store.deliveries import for_drop
from tasks.store.ledger import Store
from tasks.store.schema import drops, items


def find_drops(store: Store, name_or_path: str, limit: int = 20) -> list[dict[str, Any]]:
    """The drops known by that file name, or at that path (where it was dropped or where it was put), newest
    first."""
    # The ledger keeps names and paths escaped (tasks/names.py): the query matches as typed (the escaped form
    # `failures` shows) and as the OS would spell it (a raw name on the command line).
    names = {name_or_path, escape(name_or_path)}
    paths = {escaped_path(os.path.abspath(n)) for n in (name_or_path, unescape(name_or_path))}
    where = or_(drops.c.name.in_(names), drops.c.path.in_(paths), drops.c.final_path.in_(paths))
    with store.engine.connect() as conn:
        rows = conn.execute(select(drops).where(where).order_by(drops.c.discovered_at.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]


def lineage(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a drop) with its record (URL, current version) and its deliveries, oldest first."""
    record = None
    if row.get("item_url"):
        with store.engine.connect() as conn:
            found = conn.execute(select(items.c.url, items.c.version, items.c.updated_at)
                                 .where(items.c.url == row["item_url"])).first()
        record = dict(found._mapping) if found is not None else None
    return {"drop": row, "record": record, "deliveries": for_drop(store, row["key"])}
