"""The pipeline stages as Celery tasks: thin wrappers over tasks.pipeline, one task per stage per batch.

parse (read + validate + normalize) -> verify (image checks) -> publish (link + store), chained per batch.
Payloads travel sealed: Flower and the worker log show a task's file names, never the drop's contents
(the ``secured`` blob included), because the repr of a ``Sealed`` value lists only names.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import chain, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.utils.json import register_type

from tasks.errors import TransientError
from tasks.pipeline import Batch, failure, parse_batch, publish_batch, verify_batch
from tasks.records import image_urls
from tasks.store import Store
from worker import metrics

logger = logging.getLogger(__name__)


class Sealed:
    """A batch between stages. JSON on the wire (registered with kombu); its repr names files only.
    ``started`` (epoch seconds, when parsing began) gives each drop's logged duration."""

    __slots__ = ("data", "started")

    def __init__(self, data: Batch, started: float | None = None) -> None:
        self.data, self.started = data, started

    def __repr__(self) -> str:
        names = [n["drop"]["name"] for n in self.data["ok"]] + [f["name"] for f in self.data["failed"]]
        return describe(names)

    def __json__(self) -> dict[str, Any]:
        """Its JSON form: a plain mapping (kombu's encoder and worker.codec both honour ``__json__``)."""
        return _encode(self)

    @classmethod
    def of(cls, value: Sealed | dict[str, Any]) -> Sealed:
        """A task's argument as received: worker.codec gives the plain mapping back, kombu's json a Sealed."""
        return value if isinstance(value, Sealed) else _decode(value)


def _encode(s: Sealed) -> dict[str, Any]:
    return {**s.data, "started": s.started}


def _decode(d: dict[str, Any]) -> Sealed:
    return Sealed(Batch(ok=d["ok"], failed=d["failed"]), d.get("started"))


register_type(Sealed, "feedworker.batch", _encode, _decode)


def describe(names: list[str]) -> str:
    """What Flower shows as a batch's arguments: its size and first file names."""
    head = ", ".join(names[:3])
    return f"<{len(names)} drops: {head}{', ...' if len(names) > 3 else ''}>"


class _Resources:
    """Per-process store and image checker, made after fork (connections don't survive a fork)."""

    pid = -1
    store: Store
    checker: Any

    @classmethod
    def get(cls) -> type[_Resources]:
        if cls.pid != os.getpid():
            from worker.resources import make_checker, make_store

            cls.store, cls.checker, cls.pid = make_store(), make_checker(), os.getpid()
        return cls


def warm_up() -> None:
    """Make this process's resources now (called as a pool child starts), not on its first task."""
    _Resources.get()


def _settings() -> Any:
    from worker.settings import get_settings

    return get_settings()


@shared_task(name="feedworker.parse")
def parse(wire: list[dict[str, Any]]) -> Sealed:
    started, clock = time.time(), time.perf_counter()
    with metrics.timed_stage("parse"):
        try:
            batch = parse_batch(wire, _settings().parse)
        except SoftTimeLimitExceeded:
            # Bounded input can't hang the parser; if something still does, fail the batch's drops, don't loop.
            batch = Batch(ok=[], failed=[failure(w, "parse", "timed out while parsing") for w in wire])
    logger.info("parse: %d ok, %d refused in %.3fs", len(batch["ok"]), len(batch["failed"]),
                time.perf_counter() - clock)
    return Sealed(batch, started)


@shared_task(name="feedworker.verify")
def verify(received: Sealed | dict[str, Any]) -> Sealed:
    sealed = Sealed.of(received)
    try:
        with metrics.timed_stage("verify"):
            counts = verify_batch(sealed.data, _Resources.get().checker)
    except SoftTimeLimitExceeded:
        return _checks_ran_out_of_time(sealed)
    metrics.image_checks(counts)
    logger.info("verify: images %s", counts)
    return sealed


def _checks_ran_out_of_time(sealed: Sealed) -> Sealed:
    """The batch's image checks passed the soft time limit (many images on hosts that stall). Raising would end
    the chain and leave its drops queued, to be sent again and stall again, for ever. Instead a batch of several
    drops is split (each drop verified and published alone, so the others land) and a drop alone is failed
    with the reason, for a replay once those hosts answer."""
    ok, failed = sealed.data["ok"], sealed.data["failed"]
    if len(ok) > 1:
        logger.warning("verify: image checks of %d drops ran out of time; checking each drop alone", len(ok))
        for n in ok:
            label = describe([n["drop"]["name"]])
            alone = Sealed(Batch(ok=[n], failed=[]), sealed.started)
            chain(verify.s(alone).set(argsrepr=label), publish.s().set(argsrepr=label)).apply_async()
        return Sealed(Batch(ok=[], failed=failed), sealed.started)
    urls = len({u for n in ok for u in image_urls(n)})
    reason = (f"its image checks did not finish within the {_settings().task_soft_time_limit} s time limit "
              f"({urls} image URLs; their hosts stall): not published; replay it once they answer")
    return Sealed(Batch(ok=[], failed=[*failed, *(failure(n["drop"], "verify", reason) for n in ok)]),
                  sealed.started)


@shared_task(name="feedworker.publish", bind=True, autoretry_for=(TransientError,), retry_backoff=1,
             retry_backoff_max=20, retry_jitter=True, max_retries=30)
def publish(self: Any, received: Sealed | dict[str, Any]) -> dict[str, int]:
    sealed = Sealed.of(received)
    with metrics.timed_stage("publish"), metrics.timed_store_write("publish"):
        outcomes = publish_batch(_Resources.get().store, sealed.data)
    summary: dict[str, int] = {}
    for outcome in outcomes.values():
        summary[outcome] = summary.get(outcome, 0) + 1
    log_outcomes(sealed, outcomes)
    if "published" in summary:  # changes were logged: wake the webhook deliveries (none configured: no-op)
        from worker.webhooks import after_publish

        after_publish(_Resources.get().store)
    return summary


def log_outcomes(sealed: Sealed, outcomes: dict[str, str]) -> None:
    """One line and one count per drop this delivery finished (a redelivered batch finishes none: counted once).
    The line holds file, outcome, stage, duration and record URL: never the drop's contents."""
    duration = round(time.time() - sealed.started, 3) if sealed.started else None
    for n in sealed.data["ok"]:
        outcome = outcomes.get(n["drop"]["key"])
        if outcome is not None:
            metrics.drop_finished(outcome, "publish")
            logger.info("drop %s", outcome, extra={"file": n["drop"]["name"], "outcome": outcome, "stage": "publish",
                                                   "duration": duration, "url": n["record"]["url"]})
    for f in sealed.data["failed"]:
        if outcomes.get(f["key"]) == "failed":
            metrics.drop_finished("failed", f["stage"])
            logger.warning("drop failed", extra={"file": f["name"], "outcome": "failed", "stage": f["stage"],
                                                 "duration": duration, "reason": f["reason"]})


def pipeline(wire: list[dict[str, Any]]) -> Any:
    """The chain for one batch of wire drops, with readable arguments in Flower."""
    label = describe([w["name"] for w in wire])
    return chain(parse.s(wire).set(argsrepr=label), verify.s().set(argsrepr=label),
                 publish.s().set(argsrepr=label))
