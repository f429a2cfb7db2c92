"""The change log (outbox), its pruning watermark, and webhook endpoints' cursors.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
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
    op.create_table(
        "webhook_state",
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        sa.Column("lease_token", sa.String(32)),
        sa.Column("lease_until", Ts),
        sa.Column("followup_token", sa.String(32)),
        sa.Column("delivered_at", Ts),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("failing_since", Ts),
        sa.Column("last_error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("webhook_state")
    op.drop_table("change_log")
    op.drop_table("changes")
