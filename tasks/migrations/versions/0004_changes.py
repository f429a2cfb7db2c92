"""The change log (outbox) and its pruning watermark.

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("stub", sa.Boolean, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("secured", sa.Text),
        sa.Column("body", Json, nullable=False),
        sa.Column("first_seen_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("changes_updated", "changes", ["updated_at"])
    op.create_table(
        "change_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pruned_through", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO change_log (id, pruned_through) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("change_log")
    op.drop_table("changes")
