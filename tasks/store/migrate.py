"""Schema migrations (Alembic), run by `feedworker migrate` and by every process at start.

Several workers may start at once: on PostgreSQL an advisory lock lets one migrate while the others wait; on
SQLite the migration runs inside a BEGIN IMMEDIATE transaction, which serializes it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from tasks.private import private_sqlite
from tasks.store.ledger import Store

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision under migrations/versions: what a current store's alembic_version holds. Known here so that
# a process whose store is current (every start but the first) never imports Alembic, ~0.15 s of CPU a command.
# tests/test_store.py holds it to Alembic's own answer, so a new migration cannot be forgotten here.
HEAD = "0003"
_LOCK_ID = 0x6665_6564  # "feed": the advisory lock every migrating process takes


def _config(conn: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    return HEAD


def current_revision(store: Store) -> str | None:
    """The revision the store's schema is at (Alembic's version table), None for a store never migrated."""
    with store.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def is_current(store: Store) -> bool:
    return current_revision(store) == head_revision()


def upgrade(store: Store) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    private_sqlite(store.url)  # before the first connection makes the file (this is where every process starts)
    if is_current(store):
        return
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        from alembic import command

        command.upgrade(_config(conn), "head")
