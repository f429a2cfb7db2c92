"""Schema migrations (Alembic), run by `feedworker migrate` and by every process at start.

Several workers may start at once: on PostgreSQL an advisory lock lets one migrate while the others wait; on
SQLite the migration runs inside a BEGIN IMMEDIATE transaction, which serializes it the same way.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from tasks.private import private_sqlite
from tasks.store.ledger import Store

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x6665_6564  # "feed": the advisory lock every migrating process takes


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


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
        command.upgrade(_config(conn), "head")
