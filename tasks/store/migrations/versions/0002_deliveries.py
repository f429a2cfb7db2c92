"""The deliveries table: a durable count of each batch message's deliveries, per stage.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("stage", sa.String(16), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("parent", sa.String(64)),
        sa.Column("label", sa.Text),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("drop_keys", sa.Text),
        sa.Column("lost", sa.Text),
        sa.Column("first_at", Ts, nullable=False),
        sa.Column("last_at", Ts, nullable=False),
    )
    op.create_index("deliveries_parent", "deliveries", ["parent"])


def downgrade() -> None:
    op.drop_table("deliveries")
