"""The store's tables (SQLAlchemy Core). A change to them is a new Alembic revision in migrations/versions/."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tasks.shapes import OUTCOMES

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

# One row per item identity (canonical webUrl): a full record, or a stub known only from citations.
items = Table(
    "items",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False, unique=True),
    Column("stub", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    # The drop that last won, for "the later drop wins" (file mtime, then file name).
    Column("order_mtime_ns", BigInteger, nullable=False),
    Column("order_name", Text, nullable=False),
    Column("title", Text),
    Column("published_at", DateTime(timezone=True)),
    Column("source_id", String(64)),
    Column("secured", Text),  # opaque; kept byte for byte, never logged
    Column("body", Json, nullable=False),  # every other record field, as exported
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The ledger: one row per drop (a file seen at a path with a size and mtime), from discovery to its outcome.
drops = Table(
    "drops",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("run_id", String(64), nullable=False),
    Column("origin", String(16), nullable=False),  # watch | ingest
    Column("name", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    # discovered -> queued -> published | unchanged | failed
    Column("state", String(16), nullable=False),
    Column("stage", String(16)),
    Column("reason", Text),
    Column("item_url", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("discovered_at", DateTime(timezone=True), nullable=False),
    Column("queued_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("finalized_at", DateTime(timezone=True)),  # moved to processed/ or failed/ (or kept, or deleted)
    Column("final_path", Text),
)
Index("drops_state", drops.c.state, drops.c.queued_at)
Index("drops_run", drops.c.run_id, drops.c.state)
Index("drops_unfinalized", drops.c.origin, drops.c.finalized_at, drops.c.state)

DONE_STATES = OUTCOMES  # a drop in one of these is finished (tasks/shapes.py)

# Deliveries: one row per batch message and stage, counted at the start of each delivery in its own committed
# transaction, so a count survives a killed worker and a restarted broker (see docs/delivery.md).
deliveries = Table(
    "deliveries",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("parent", String(64)),  # the batch this one was split from
    Column("label", Text),  # e.g. "split 1/2 of 3f2a9c1e"
    Column("size", Integer, nullable=False),
    Column("drop_keys", Text),  # the drops' keys, space-separated, on the first stage of a batch only
    Column("lost", Text),  # how its last delivery ended, when the worker saw it end badly (e.g. signal 9)
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
)
Index("deliveries_parent", deliveries.c.parent)

# The change log (an outbox): one row per record change a publish makes, written in the publish transaction.
# ``seq`` is assigned at the end of that transaction under a lock held until commit, so seq order is commit
# order and a reader past seq N never misses a later commit below N (docs/changes.md). The record as published
# is kept as the items row holds it. AUTOINCREMENT on SQLite: a pruned seq is never handed out again.
changes = Table(
    "changes",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # created | updated | stub_created | stub_upgraded
    Column("url", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("stub", Boolean, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("secured", Text),
    Column("body", Json, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),  # the change's time (its transaction's)
    sqlite_autoincrement=True,
)
Index("changes_updated", changes.c.updated_at)

# One row: the highest seq pruned, so that a cursor older than the retained log is refused, not silently served.
change_log = Table(
    "change_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pruned_through", BigInteger, nullable=False),
)

# Webhook delivery, one row per configured endpoint: its cursor in the change log, the lease of the one task
# delivering to it (in order per endpoint), and its failure streak (status, metrics, alert).
webhook_state = Table(
    "webhook_state",
    metadata,
    Column("endpoint", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False),
    Column("lease_token", String(32)),
    Column("lease_until", DateTime(timezone=True)),
    Column("followup_token", String(32)),  # the lease a follow-up task was scheduled for (one per lease)
    Column("delivered_at", DateTime(timezone=True)),
    Column("failures", Integer, nullable=False),  # consecutive failed attempts
    Column("failing_since", DateTime(timezone=True)),
    Column("last_error", Text),
)
