"""Counting deliveries and deciding what a redelivered batch does (docs/delivery.md).

Each stage task calls ``decide`` (tasks/store/deliveries.py: the policy; this module is its Celery side) first.
The count is committed before the stage works, so a delivery that kills its pool process is still counted. Then:

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
from typing import Any

from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.worker.request import Request

from tasks.store.deliveries import note_lost
from tasks.store.ledger import Store

logger = logging.getLogger(__name__)


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
            from worker.celeryapp.resources import make_store

            _store = make_store()
        note_lost(_store, tag["id"], stage, how)
    except Exception:  # the count still works without it; the reason then says "was lost"
        logger.warning("could not note how a delivery ended", exc_info=True)
