"""Counting deliveries and deciding what a redelivered batch does (docs/delivery.md).

Each stage task calls :func:`decide` first. The count is committed before the stage works (tasks/deliveries.py),
so a delivery that kills its pool process is still counted. Then:

- first delivery, or the batch's next stage already started (it finished before; the ack was lost): ``run`` /
  ``done``;
- delivered again after a delivery that died (count - 1 - retries > 0), several drops: ``split`` in two, each
  half sent as a chain of its own, until the culprit is alone;
- a drop alone that died ``max_worker_deaths`` times: ``poison``, failed with its stage and a reason.

The pool process that died can't say how it died; the worker's main process sees it (Celery hands it a
``WorkerLostError`` such as "Worker exited prematurely: signal 9 (SIGKILL)"), and :class:`LostRequest` writes that
into the delivery row, for the reason.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.worker.request import Request

from tasks.deliveries import BatchTag, count_delivery, moved_on, note_lost
from tasks.errors import StoreUnavailable
from tasks.store import Store
from worker import metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")
VERBS = {"parse": "parsing", "verify": "verifying", "publish": "publishing"}


@dataclass(frozen=True)
class Verdict:
    action: Literal["run", "done", "split", "poison"]
    reason: str = ""


def new_tag(first: str = "parse", parent: str | None = None, label: str | None = None) -> BatchTag:
    return BatchTag(id=uuid.uuid4().hex, parent=parent, label=label, first=first)


def tag_of(task: Any, batch: BatchTag | None) -> BatchTag:
    """The message's batch tag; a message sent before tags existed is known by its task id (stable across
    deliveries of one message)."""
    return batch if batch else BatchTag(id=str(task.request.id), parent=None, label=None, first="parse")


def decide(store: Store, task: Any, tag: BatchTag, stage: str, keys: list[str], max_deaths: int) -> Verdict:
    try:
        delivery = count_delivery(store, tag, stage, keys)
    except StoreUnavailable:  # the count is a safety net: a store outage must not also stop parsing and checks
        logger.warning("%s: could not count this delivery (store unavailable); running it uncounted", stage)
        return Verdict("run")
    if delivery.count > 1:
        metrics.redelivered(stage)
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
    return [new_tag(first, tag["id"], f"split {n}/2 of {tag['id'][:8]}") for n in (1, 2)]


class LostRequest(Request):  # type: ignore[misc]
    """Runs in the worker's main process: when a stage's pool process dies (or passes the hard time limit) it
    writes how into the batch's delivery row, before Celery hands the message back."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, WorkerLostError | TimeLimitExceeded):
            _note(self, exc)
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> Any:
        if not soft:  # the pool ends the process; the message is handed back (task_acks_on_timeout off)
            _note(self, TimeLimitExceeded(timeout))
        return super().on_timeout(soft, timeout)


_store: Store | None = None


def _note(request: Any, exc: BaseException) -> None:
    global _store
    try:
        tag = (request.kwargs or {}).get("batch") or {"id": str(request.id)}
        stage = str(request.name).rsplit(".", 1)[-1]
        how = f"time limit ({exc.args[0]} s)" if isinstance(exc, TimeLimitExceeded) else str(exc)
        if _store is None:
            from worker.resources import make_store

            _store = make_store()
        note_lost(_store, tag["id"], stage, how)
    except Exception:  # the count still works without it; the reason then says "was lost"
        logger.warning("could not note how a delivery ended", exc_info=True)
