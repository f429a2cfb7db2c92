"""Prometheus metrics: the recording API (correct under Celery's prefork pool: prometheus-client's multiprocess mode).

Counted by the processes that do the work (labels in brackets):

- ``feedworker_drops_discovered_total{origin}``: drops newly registered in the ledger (``watch``, ``ingest``);
- ``feedworker_drops_requeued_total{reason}``: drops sent again: ``lost`` (no outcome in time), ``replay``;
- ``feedworker_drops_total{outcome,stage}``: outcomes: ``published`` and ``unchanged`` (stage ``publish``),
  ``failed`` with the stage that refused the drop (``read``, ``parse``, ``verify``, ``publish``);
- ``feedworker_batch_redeliveries_total{stage}``, ``feedworker_batch_splits_total{stage}``,
  ``feedworker_poison_drops_total{stage}``: deliveries beyond a batch's first, splits, drops failed as poison
  (docs/delivery.md);
- ``feedworker_image_checks_total{status}``: image URL checks by the contract's status (``ok``, ``broken``...);
- ``feedworker_stage_duration_seconds{stage}`` (histogram): one batch through one stage;
- ``feedworker_store_write_seconds{operation}`` (histogram): one store transaction (``publish``, ``register``);
- ``feedworker_stage_in_progress{stage}`` (gauge, summed over live processes): batches running now;
- ``feedworker_reserved_folders_tampered`` (gauge, set by the watcher): reserved folders found to be a link,
  not a folder, or someone else's (worker/watching/tamper.py);

plus gauges read from the ledger and the broker at scrape time by ``LedgerCollector`` (metricserver.py) in the
serving process (backlog, oldest queued drop, queue depth, workers). Label values come from fixed sets (anything else
becomes ``other``): never a file name, a URL or a reason, so the number of series stays bounded.

The values live in prometheus-client's multiprocess files (worker/observing/metricsdir.py) and are served by
worker/observing/metricserver.py.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import ParamSpec

from tasks.shapes import IMAGE_STATUSES, OUTCOMES

logger = logging.getLogger(__name__)
P = ParamSpec("P")

STAGES = ("read", "parse", "verify", "publish")
ORIGINS = ("watch", "ingest", "replay")
REQUEUE_REASONS = ("lost", "replay")
STORE_OPERATIONS = ("publish", "register")
# Batches take milliseconds (parse) to tens of seconds (image checks against slow hosts: the hard limit is 55 s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def bounded(value: str | None, allowed: tuple[str, ...]) -> str:
    """A label value from a fixed set: what is not in it becomes ``other``."""
    return value if value in allowed else "other"


class _Metrics:
    """The metric objects, built on first use (after the multiprocess directory is chosen)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # registry=None: in multiprocess mode the files are the registry; serve() reads them all.
        self.discovered = Counter("feedworker_drops_discovered_total", "Drops newly registered in the ledger.",
                                  ["origin"], registry=None)
        self.requeued = Counter("feedworker_drops_requeued_total", "Drops sent to the workers again.",
                                ["reason"], registry=None)
        self.drops = Counter("feedworker_drops_total", "Drop outcomes, by the stage the drop ended in.",
                             ["outcome", "stage"], registry=None)
        self.images = Counter("feedworker_image_checks_total", "Image URL checks, by status.", ["status"],
                              registry=None)
        self.stage_seconds = Histogram("feedworker_stage_duration_seconds", "One batch through one stage.",
                                       ["stage"], buckets=DURATION_BUCKETS, registry=None)
        self.store_write = Histogram("feedworker_store_write_seconds", "One store write transaction.",
                                     ["operation"], buckets=WRITE_BUCKETS, registry=None)
        self.in_progress = Gauge("feedworker_stage_in_progress", "Batches running now, by stage.", ["stage"],
                                 multiprocess_mode="livesum", registry=None)
        self.tampered = Gauge("feedworker_reserved_folders_tampered", "Reserved folders (processed/, failed/ and "
                              "their subfolders) found not to be the service's own folders.",
                              multiprocess_mode="livemax", registry=None)
        self._delivery_metrics()
        self._zeros()

    def _zeros(self) -> None:
        """Every expected series exists from the start at 0, so rate() and alerts see the first increase."""
        for outcome in ("published", "unchanged"):
            self.drops.labels(outcome, "publish")
        for stage in STAGES:
            self.drops.labels("failed", stage)
        for status in IMAGE_STATUSES:
            self.images.labels(status)
        for stage in STAGES[1:]:
            for counter in (self.redeliveries, self.splits, self.poison):
                counter.labels(stage)

    def _delivery_metrics(self) -> None:
        """Counted by worker/celeryapp/delivery.py and tasks/stages.py (docs/delivery.md)."""
        from prometheus_client import Counter

        self.redeliveries = Counter("feedworker_batch_redeliveries_total",
                                    "Deliveries of a batch message beyond its first, by stage.", ["stage"],
                                    registry=None)
        self.splits = Counter("feedworker_batch_splits_total",
                              "Batches split in two after a worker died or a time limit passed, by stage.",
                              ["stage"], registry=None)
        self.poison = Counter("feedworker_poison_drops_total",
                              "Drops failed alone because their worker process died on them repeatedly, by stage.",
                              ["stage"], registry=None)


_metrics: _Metrics | None = None


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def _safe(record: Callable[P, None]) -> Callable[P, None]:
    """A metric that can't be written (a full disk) must never cost a drop: log it and go on."""
    @functools.wraps(record)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            logger.debug("metrics: could not record %s", record.__name__, exc_info=True)

    return wrapper


# -- recording (called by the enqueuer, the watcher and the Celery tasks) ------------------------------------------


@_safe
def drops_discovered(origin: str, count: int) -> None:
    if count:
        _get().discovered.labels(bounded(origin, ORIGINS)).inc(count)


@_safe
def drops_requeued(reason: str, count: int) -> None:
    if count:
        _get().requeued.labels(bounded(reason, REQUEUE_REASONS)).inc(count)


@_safe
def drop_finished(outcome: str, stage: str | None) -> None:
    _get().drops.labels(bounded(outcome, OUTCOMES), bounded(stage, STAGES)).inc()


@_safe
def redelivered(stage: str) -> None:
    _get().redeliveries.labels(bounded(stage, STAGES)).inc()


@_safe
def batch_split(stage: str) -> None:
    _get().splits.labels(bounded(stage, STAGES)).inc()


@_safe
def poison_failed(stage: str) -> None:
    _get().poison.labels(bounded(stage, STAGES)).inc()


@_safe
def image_checks(counts: Mapping[str, int]) -> None:
    for status, n in counts.items():
        _get().images.labels(bounded(status, IMAGE_STATUSES)).inc(n)


@_safe
def reserved_folders_tampered(count: int) -> None:
    _get().tampered.set(count)


@contextlib.contextmanager
def timed_stage(stage: str) -> Iterator[None]:
    """Time one batch through ``stage`` and count it as in progress meanwhile."""
    label = bounded(stage, STAGES)
    _gauge_add(label, 1)
    started = time.perf_counter()
    try:
        yield
    finally:
        _observe("stage", label, time.perf_counter() - started)
        _gauge_add(label, -1)


@contextlib.contextmanager
def timed_store_write(operation: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        _observe("store", bounded(operation, STORE_OPERATIONS), time.perf_counter() - started)


@_safe
def _observe(kind: str, label: str, seconds: float) -> None:
    m = _get()
    (m.stage_seconds if kind == "stage" else m.store_write).labels(label).observe(seconds)


@_safe
def _gauge_add(stage: str, amount: float) -> None:
    _get().in_progress.labels(stage).inc(amount)


def forget(quietly: bool = False) -> None:
    """Drop the metric objects: the next record builds them again (the multiprocess directory changed)."""
    global _metrics
    if _metrics is not None and not quietly:
        logger.warning("metrics: values recorded before the metrics directory was set are not served")
    _metrics = None
