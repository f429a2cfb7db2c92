"""Webhook delivery as Celery tasks on a queue of their own (``feedworker.webhooks``), see tasks/store/webhooks.py.

- Sent after every publish that logged changes (one task per endpoint; off, and free, with no endpoint set).
- A task that finds the endpoint's lease held leaves the work to the holder, which reads on until it is caught
  up; the first to find a lease held schedules one follow-up for when it ends, in case the holder died.
- A failure is retried by a new task after a backoff with full jitter (0.5 s doubling, capped at
  ``webhooks.retry_max_seconds``, below the broker's visibility timeout so a waiting retry is never sent twice).
- A dead endpoint costs one short failed POST per retry: it holds no worker, no other endpoint, no ingestion.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import shared_task

from tasks.store import webhooks
from tasks.store.ledger import Store
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)
QUEUE = "feedworker.webhooks"
_BUDGET = 20.0  # seconds one task delivers before handing on to a fresh task (task time limits are ~45 s)
_process: dict[str, Any] = {}


@shared_task(name="feedworker.webhooks.deliver", ignore_result=True)
def deliver(name: str) -> str:
    settings = get_settings()
    ep = _endpoint(settings, name)
    if ep is None:  # removed from the configuration since this task was sent
        return "unknown"
    result = webhooks.deliver(_store(settings), ep, budget=_BUDGET)
    if result.state == "more":
        send(name)
    elif result.state == "failed":
        delay = (result.retry_in or 0.0) + 1.0  # just after the lease it keeps until then (clock skew: 1 s)
        logger.warning("webhook %s failed (%d in a row), retrying in %.1f s", name, result.failures, delay,
                       extra={"endpoint": name})
        send(name, countdown=delay)
    elif result.state == "busy" and result.retry_in is not None:
        send(name, countdown=result.retry_in + 1.0)
    return result.state


def after_publish(store: Store, settings: Settings | None = None) -> None:
    """Wake each endpoint's delivery (publish stage, after a publish that logged changes), but one that is
    running: it will see these changes (a holder that died loses its lease; its task is delivered again)."""
    endpoints = (settings or get_settings()).webhooks.endpoints
    if not endpoints:
        return
    running = webhooks.held(store)
    for ep in endpoints:
        if ep.name not in running:
            send(ep.name)


def send(name: str, countdown: float | None = None) -> None:
    deliver.apply_async((name,), queue=QUEUE, countdown=countdown)


def _endpoint(settings: Settings, name: str) -> webhooks.Endpoint | None:
    for ep in settings.webhooks.endpoints:
        if ep.name == name:
            return webhooks.Endpoint(ep.name, ep.url, ep.secret.get_secret_value().encode(), ep.batch_max,
                                     settings.webhooks.timeout_seconds, settings.webhooks.retry_max_seconds)
    return None


def _store(settings: Settings) -> Store:
    """One store per process, made after fork; the endpoints' rows made once."""
    if _process.get("pid") != os.getpid():
        from worker.celeryapp.resources import make_store

        store = make_store(settings)
        webhooks.ensure(store, [ep.name for ep in settings.webhooks.endpoints])
        _process.update(pid=os.getpid(), store=store)
    store_: Store = _process["store"]
    return store_
