"""Alembic environment: run against the connection that tasks.store.migrate hands over (see tasks/store/migrate.py)."""

from __future__ import annotations

from alembic import context

from tasks.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
