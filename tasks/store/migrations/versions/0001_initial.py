"""The items table and the drop ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False, unique=True),
        sa.Column("stub", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("order_mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("order_name", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("published_at", Ts),
        sa.Column("source_id", sa.String(64)),
        sa.Column("secured", sa.Text),
        sa.Column("body", Json, nullable=False),
        sa.Column("first_seen_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
    )
    op.create_table(
        "drops",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("item_url", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("discovered_at", Ts, nullable=False),
        sa.Column("queued_at", Ts),
        sa.Column("finished_at", Ts),
        sa.Column("finalized_at", Ts),
        sa.Column("final_path", sa.Text),
    )
    op.create_index("drops_state", "drops", ["state", "queued_at"])
    op.create_index("drops_run", "drops", ["run_id", "state"])
    op.create_index("drops_unfinalized", "drops", ["origin", "finalized_at", "state"])


def downgrade() -> None:
    op.drop_table("drops")
    op.drop_table("items")
