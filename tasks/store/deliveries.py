"""The delivery count: how many times each batch message has been delivered to a worker, per stage.

A batch message carries its batch id (``BatchTag``). Each stage counts its delivery first thing, in a
transaction of its own that commits before any work starts, so the count survives whatever ends the delivery
(a killed pool process, a killed worker, Redis restarted). It lives in the store, beside the drop ledger, because
the store is the one part that must be durable anyway; Redis may be restarted empty, and Celery's
``redelivered`` flag says only "at least once more", not how many times.

A count above one with no later stage started means the earlier deliveries ended without finishing: the caller
(tasks/stages.py) splits the batch or, for a drop alone, fails it after enough deaths (docs/delivery.md).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tasks.errors import StoreUnavailable
from tasks.queues import BACKFILL
from tasks.store.engine import now
from tasks.store.ledger import Store
from tasks.store.schema import deliveries

logger = logging.getLogger(__name__)
T = TypeVar("T")
VERBS = {"parse": "parsing", "verify": "verifying", "publish": "publishing"}
NEXT_STAGE = {"parse": "verify", "verify": "publish"}


class BatchTag(TypedDict, total=False):
    """What a batch message says about itself: its id, the batch it was split from, a label for Flower and
    trace (``split 1/2 of 3f2a9c1e``), and the stage its chain starts at (its drops' keys are kept there)."""

    id: str
    parent: str | None
    label: str | None
    first: str
    lane: str


@dataclass(frozen=True)
class Delivery:
    count: int  # this delivery's number: 1 the first time
    lost: str | None  # how an earlier delivery ended, when the worker saw it end (e.g. "signal 9 (SIGKILL)")


def count_delivery(store: Store, tag: BatchTag, stage: str, keys: Sequence[str]) -> Delivery:
    """Count one delivery of ``tag``'s batch at ``stage``, committed before the stage does any work."""
    stamp = now()
    values = {"batch_id": tag["id"], "stage": stage, "count": 1, "parent": tag.get("parent"),
              "label": tag.get("label"), "size": len(keys), "first_at": stamp, "last_at": stamp,
              "drop_keys": " ".join(keys) if tag.get("first", "parse") == stage else None}
    dialect = postgresql if store.dialect == "postgresql" else sqlite
    stmt = dialect.insert(deliveries).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["batch_id", "stage"],
        set_={"count": deliveries.c.count + 1, "last_at": stamp}).returning(deliveries.c.count, deliveries.c.lost)

    def work(conn: Connection) -> Delivery:
        count, lost = conn.execute(stmt).one()
        return Delivery(int(count), lost)

    return store.transaction(work)


def note_lost(store: Store, batch_id: str, stage: str, how: str) -> None:
    """Say how a delivery ended when the worker saw it end badly (its pool process died, or the hard limit)."""
    stmt = update(deliveries).where(deliveries.c.batch_id == batch_id, deliveries.c.stage == stage)
    store.transaction(lambda conn: conn.execute(stmt.values(lost=how[:500])))


def moved_on(store: Store, batch_id: str, stage: str) -> bool:
    """Whether the batch's next stage has started: this stage finished in an earlier delivery."""
    nxt = NEXT_STAGE.get(stage)
    if nxt is None:
        return False
    with store.engine.connect() as conn:
        found = conn.execute(select(deliveries.c.count).where(deliveries.c.batch_id == batch_id,
                                                              deliveries.c.stage == nxt)).first()
    return found is not None


def for_drop(store: Store, key: str) -> list[dict[str, Any]]:
    """Every delivery row of every batch that carried the drop ``key``, oldest first."""
    with store.engine.connect() as conn:
        ids = [b for (b,) in conn.execute(select(deliveries.c.batch_id).where(
            deliveries.c.drop_keys.contains(key, autoescape=True)))]
        if not ids:
            return []
        rows = conn.execute(select(deliveries.c.batch_id, deliveries.c.stage, deliveries.c.count,
                                   deliveries.c.parent, deliveries.c.label, deliveries.c.size, deliveries.c.lost,
                                   deliveries.c.first_at, deliveries.c.last_at)
                            .where(deliveries.c.batch_id.in_(ids)).order_by(deliveries.c.first_at))
        return [dict(r._mapping) for r in rows]


# -- what a delivery does: run, done, split or poison (docs/delivery.md) ------------------------------------------


@dataclass(frozen=True)
class Verdict:
    action: Literal["run", "done", "split", "poison"]
    reason: str = ""


def new_tag(first: str = "parse", parent: str | None = None, label: str | None = None,
            lane: str = BACKFILL) -> BatchTag:
    return BatchTag(id=uuid.uuid4().hex, parent=parent, label=label, first=first, lane=lane)


def tag_of(task: Any, batch: BatchTag | None) -> BatchTag:
    """The message's batch tag; a message sent before tags existed is known by its task id (stable across
    deliveries of one message)."""
    return batch if batch else BatchTag(id=str(task.request.id), parent=None, label=None, first="parse")


def decide(store: Store, task: Any, tag: BatchTag, stage: str, keys: list[str], max_deaths: int,
           redelivered: Callable[[str], None]) -> Verdict:
    """What this delivery does: run, done, split or poison (docs/delivery.md); ``redelivered`` counts a repeat."""
    try:
        delivery = count_delivery(store, tag, stage, keys)
    except StoreUnavailable:  # the count is a safety net: a store outage must not also stop parsing and checks
        logger.warning("%s: could not count this delivery (store unavailable); running it uncounted", stage)
        return Verdict("run")
    if delivery.count > 1:
        redelivered(stage)
    deaths = delivery.count - 1 - int(task.request.retries or 0)  # a retry is a new message, not a death
    if deaths <= 0:
        return Verdict("run")
    if moved_on(store, tag["id"], stage):
        return Verdict("done")
    if len(keys) > 1:
        logger.warning("%s: batch %s (%d drops) delivered again after its worker died; splitting it",
                       stage, tag["id"][:8], len(keys))
        return Verdict("split")
    if deaths < max_deaths:
        return Verdict("run")
    return Verdict("poison", poison_reason(stage, deaths, delivery.lost))


def poison_reason(stage: str, deaths: int, lost: str | None) -> str:
    """What a person can act on: what happened, how often, in which stage, and how (the signal, when known)."""
    verb = VERBS.get(stage, stage)
    if lost and lost.startswith("time limit"):
        return (f"it ran past the hard time limit {lost[len('time limit'):].strip()} {deaths} times while {verb} "
                "it: not published; replay it once the cause is fixed")
    signal = re.search(r"signal (\d+)(?: \((\w+)\))?", lost or "")
    how = f"died {deaths} times while {verb} it (signal {signal[1]})" if signal else (
        f"was lost {deaths} times while {verb} it")
    return f"its worker process {how}: not published; replay it once the cause is fixed"


def halves(items: list[T]) -> list[list[T]]:
    mid = (len(items) + 1) // 2
    return [items[:mid], items[mid:]]


def split_tags(tag: BatchTag, first: str) -> list[BatchTag]:
    return [new_tag(first, tag["id"], f"split {n}/2 of {tag['id'][:8]}", tag.get("lane", BACKFILL)) for n in (1, 2)]
