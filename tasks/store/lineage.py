"""One drop's lineage from the ledger, for `feedworker trace`: its ledger row, the record it wrote and every
delivery of every batch that carried it (tasks/store/deliveries.py)."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import or_, select

from tasks.store.deliveries import for_drop
from tasks.store.ledger import Store
from tasks.store.schema import drops, items


def find_drops(store: Store, name_or_path: str, limit: int = 20) -> list[dict[str, Any]]:
    """The drops known by that file name, or at that path (where it was dropped or where it was put), newest
    first."""
    absolute = os.path.abspath(name_or_path)
    where = or_(drops.c.name == name_or_path, drops.c.path == absolute, drops.c.final_path == absolute)
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
