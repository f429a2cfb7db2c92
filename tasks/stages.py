"""The pipeline stages as Celery tasks: thin wrappers over tasks.pipeline, one task per stage per batch.

parse (read + validate + normalize) -> verify (image checks) -> publish (link + store), chained per batch.
Payloads travel sealed: Flower and the worker log show a task's file names, never the drop's contents
(the ``secured`` blob included), because the repr of a ``Sealed`` value lists only names.

Each stage first counts its delivery (tasks/store/deliveries.py): a batch delivered again after its worker died,
or one whose parse or verify passed the soft time limit, is split in two, each half a chain of its own, until
the culprit is alone and failed (docs/delivery.md).

This is the one module under tasks/ that knows Celery. It imports nothing from worker/: what the tasks need of the
process that runs them (settings, metrics, the store and checker, webhook wake-ups) is a ``Runtime``
(tasks/runtime.py) that the worker installs when it makes its Celery app (``install``, from
worker/celeryapp/celery_app.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from celery import chain, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.utils.json import register_type

from tasks.errors import ChecksTimedOut, TransientError
from tasks.link.records import image_urls
from tasks.pipeline import Batch, failure, parse_batch, publish_batch, verify_batch
from tasks.queues import BACKFILL, queue_for
from tasks.runtime import Runtime, StageSettings
from tasks.shapes import Checker, Outcome, WireDrop
from tasks.store import deliveries as delivery
from tasks.store.deliveries import BatchTag
from tasks.store.ledger import Store

logger = logging.getLogger(__name__)


class _Installed:
    runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Give the stage tasks their runtime (worker/celeryapp/celery_app.py does, as it makes the app)."""
    _Installed.runtime = runtime


def _rt() -> Runtime:
    if _Installed.runtime is None:
        raise RuntimeError("the stage tasks have no runtime: make the worker's Celery app first (worker.app)")
    return _Installed.runtime


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
        """Its JSON form: a plain mapping (kombu's encoder and worker.celeryapp.codec both honour ``__json__``)."""
        return _encode(self)

    @classmethod
    def of(cls, value: Sealed | dict[str, Any]) -> Sealed:
        """A task's argument as received: worker.celeryapp.codec gives the plain mapping back, kombu's json a Sealed."""
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
    checker: Checker
    lock = threading.Lock()  # the verify worker's threads pool asks from many threads at once

    @classmethod
    def get(cls) -> type[_Resources]:
        if cls.pid != os.getpid():
            with cls.lock:
                if cls.pid != os.getpid():
                    rt = _rt()
                    cls.store, cls.checker = rt.make_store(), rt.make_checker()
                    cls.pid = os.getpid()
        return cls


def warm_up() -> None:
    """Make this process's resources now (called as a pool child starts), not on its first task."""
    _Resources.get()


def _settings() -> StageSettings:
    return _rt().settings()


# The worker's main process notes a dead pool process (a class named by its path: tasks/ imports no worker module).
_COUNTED = {"bind": True, "Request": "worker.celeryapp.delivery:LostRequest"}


@shared_task(name="feedworker.parse", **_COUNTED)
def parse(self: Any, wire: list[WireDrop], batch: BatchTag | None = None) -> Sealed:
    tag = delivery.tag_of(self, batch)
    verdict = _decide(self, tag, "parse", [w["key"] for w in wire])
    if verdict.action != "run":
        poisoned = Sealed(Batch(ok=[], failed=[failure(w, "parse", verdict.reason) for w in wire]), time.time())
        return _not_run(self, tag, verdict, "parse", wire, poisoned)
    started, clock = time.time(), time.perf_counter()
    with _rt().metrics.timed_stage("parse"):
        try:
            parsed = parse_batch(wire, _settings().parse, interrupts=(SoftTimeLimitExceeded,))
        except SoftTimeLimitExceeded:
            if len(wire) > 1:  # one slow drop must not fail its batch-mates: halve until it is alone
                return _split(self, tag, "parse", wire)
            reason = (f"its parsing did not finish within the {_settings().task_soft_time_limit} s time limit: "
                      "not published; replay it once the cause is fixed")
            parsed = Batch(ok=[], failed=[failure(w, "parse", reason) for w in wire])
    logger.info("parse: %d ok, %d refused in %.3fs", len(parsed["ok"]), len(parsed["failed"]),
                time.perf_counter() - clock)
    return Sealed(parsed, started)


@shared_task(name="feedworker.verify", **_COUNTED)
def verify(self: Any, received: Sealed | dict[str, Any], batch: BatchTag | None = None) -> Sealed:
    sealed = Sealed.of(received)
    tag = delivery.tag_of(self, batch)
    verdict = _decide(self, tag, "verify", _keys(sealed))
    if verdict.action != "run":
        return _not_run(self, tag, verdict, "verify", sealed, _poisoned(sealed, "verify", verdict.reason))
    try:
        with _rt().metrics.timed_stage("verify"):
            # The checks' own deadline: a verify worker on the threads pool has no soft time limit (prefork has
            # both; whichever comes first splits the batch).
            counts = verify_batch(sealed.data, _Resources.get().checker, _settings().task_soft_time_limit)
    except (SoftTimeLimitExceeded, ChecksTimedOut):
        return _checks_ran_out_of_time(self, tag, sealed)
    _rt().metrics.image_checks(counts)
    logger.info("verify: images %s", counts)
    return sealed


def _checks_ran_out_of_time(task: Any, tag: BatchTag, sealed: Sealed) -> Sealed:
    """The batch's image checks passed the soft time limit (many images on hosts that stall). Raising would end
    the chain and leave its drops queued, to be sent again and stall again, for ever. Instead a batch of several
    drops is split in two (each half verified and published on its own, halved again if it stalls again, so the
    others land) and a drop alone is failed with the reason, for a replay once those hosts answer."""
    ok, failed = sealed.data["ok"], sealed.data["failed"]
    if len(ok) > 1:
        logger.warning("verify: image checks of %d drops ran out of time; splitting the batch", len(ok))
        return _split(task, tag, "verify", sealed)
    urls = len({u for n in ok for u in image_urls(n)})
    reason = (f"its image checks did not finish within the {_settings().task_soft_time_limit} s time limit "
              f"({urls} image URLs; their hosts stall): not published; replay it once they answer")
    return Sealed(Batch(ok=[], failed=[*failed, *(failure(n["drop"], "verify", reason) for n in ok)]),
                  sealed.started)


@shared_task(name="feedworker.publish", autoretry_for=(TransientError,), retry_backoff=1,
             retry_backoff_max=20, retry_jitter=True, max_retries=30, **_COUNTED)
def publish(self: Any, received: Sealed | dict[str, Any], batch: BatchTag | None = None) -> dict[str, int]:
    sealed = Sealed.of(received)
    tag = delivery.tag_of(self, batch)
    verdict = _decide(self, tag, "publish", _keys(sealed))
    if verdict.action == "split":
        _split(self, tag, "publish", sealed)
        return {}
    if verdict.action == "poison":
        _rt().metrics.poison_failed("publish")
        sealed = _poisoned(sealed, "publish", verdict.reason)
    with _rt().metrics.timed_stage("publish"), _rt().metrics.timed_store_write("publish"):
        outcomes = publish_batch(_Resources.get().store, sealed.data)
    summary: dict[str, int] = {}
    for outcome in outcomes.values():
        summary[outcome] = summary.get(outcome, 0) + 1
    log_outcomes(sealed, outcomes)
    if "published" in summary:  # changes were logged: wake the webhook deliveries (none configured: no-op)
        _rt().after_publish(_Resources.get().store)
    return summary


# -- deliveries: counting, splitting, failing the culprit (tasks/store/deliveries.py, docs/delivery.md) ---------


def _decide(task: Any, tag: BatchTag, stage: str, keys: list[str]) -> delivery.Verdict:
    return delivery.decide(_Resources.get().store, task, tag, stage, keys, _settings().max_worker_deaths,
                           _rt().metrics.redelivered)


def _keys(sealed: Sealed) -> list[str]:
    return [n["drop"]["key"] for n in sealed.data["ok"]] + [f["key"] for f in sealed.data["failed"]]


def _poisoned(sealed: Sealed, stage: str, reason: str) -> Sealed:
    """The batch with its drops (one: the culprit) failed with ``reason``."""
    failed = [*sealed.data["failed"], *(failure(n["drop"], stage, reason) for n in sealed.data["ok"])]
    return Sealed(Batch(ok=[], failed=failed), sealed.started)


def _not_run(task: Any, tag: BatchTag, verdict: delivery.Verdict, stage: str, payload: Any,
             poisoned: Sealed) -> Sealed:
    """A delivery that does not run its stage: the culprit failed (the chain goes on to record it), or the
    batch split or found finished (the chain stops here)."""
    if verdict.action == "poison":
        _rt().metrics.poison_failed(stage)
        logger.error("%s: a drop failed as poison: %s", stage, verdict.reason)
        return poisoned
    if verdict.action == "split":
        return _split(task, tag, stage, payload)
    task.request.chain = None  # finished in an earlier delivery whose acknowledgement was lost
    return Sealed(Batch(ok=[], failed=[]))


def _split(task: Any, tag: BatchTag, stage: str, payload: list[WireDrop] | Sealed) -> Sealed:
    """Send the batch again as two halves, each a chain of its own from ``stage`` on; end this chain here."""
    parts: list[Any] = split_sealed(payload) if isinstance(payload, Sealed) else delivery.halves(payload)
    for part, child in zip(parts, delivery.split_tags(tag, stage), strict=True):
        pipeline_from(stage, part, child).apply_async()
    _rt().metrics.batch_split(stage)
    task.request.chain = None
    return Sealed(Batch(ok=[], failed=[]))


def split_sealed(sealed: Sealed) -> list[Sealed]:
    """Two halves of a batch past parsing, both non-empty: the parsed drops halved, and the failed ones (carried
    to publish) halved the other way round, so a half that dies again is always smaller than its batch."""
    ok, failed = delivery.halves(sealed.data["ok"]), delivery.halves(sealed.data["failed"])
    return [Sealed(Batch(ok=ok[0], failed=failed[1]), sealed.started),
            Sealed(Batch(ok=ok[1], failed=failed[0]), sealed.started)]


def pipeline_from(stage: str, payload: Any, tag: BatchTag) -> Any:
    """The chain from ``stage`` on for one batch (wire drops for parse, a Sealed batch after), labelled in Flower
    with its split (``split 1/2 of 3f2a9c1e: <50 drops: ...>``)."""
    names = [w["name"] for w in payload] if stage == "parse" else _names(payload)
    label = describe(names) if not tag.get("label") else f"{tag['label']}: {describe(names)}"
    names_from = ["parse", "verify", "publish"][["parse", "verify", "publish"].index(stage):]
    lane = tag.get("lane", BACKFILL)
    return chain(*(_STAGE_TASKS[s].s(*([payload] if i == 0 else []), batch=tag)  # the first takes the batch
                   .set(argsrepr=label, queue=queue_for(s, lane)) for i, s in enumerate(names_from)))


_STAGE_TASKS: dict[str, Any] = {"parse": parse, "verify": verify, "publish": publish}


def _names(sealed: Sealed) -> list[str]:
    return [n["drop"]["name"] for n in sealed.data["ok"]] + [f["name"] for f in sealed.data["failed"]]


def log_outcomes(sealed: Sealed, outcomes: Mapping[str, Outcome]) -> None:
    """One line and one count per drop this delivery finished (a redelivered batch finishes none: counted once).
    The line holds file, outcome, stage, duration and record URL: never the drop's contents."""
    duration = round(time.time() - sealed.started, 3) if sealed.started else None
    for n in sealed.data["ok"]:
        outcome = outcomes.get(n["drop"]["key"])
        if outcome is not None:
            _rt().metrics.drop_finished(outcome, "publish")
            logger.info("drop %s", outcome, extra={"file": n["drop"]["name"], "outcome": outcome, "stage": "publish",
                                                   "duration": duration, "url": n["record"]["url"]})
    for f in sealed.data["failed"]:
        if outcomes.get(f["key"]) == "failed":
            _rt().metrics.drop_finished("failed", f["stage"])
            logger.warning("drop failed", extra={"file": f["name"], "outcome": "failed", "stage": f["stage"],
                                                 "duration": duration, "reason": f["reason"]})


def pipeline(wire: list[WireDrop], lane: str = BACKFILL) -> Any:
    """The chain for one batch of wire drops, with readable arguments in Flower and a batch tag of its own
    (its deliveries are counted under it: tasks/store/deliveries.py); ``lane`` picks its queues (``queue_for``)."""
    return pipeline_from("parse", wire, delivery.new_tag(lane=lane))
