"""Prometheus metrics, correct under Celery's prefork pool (prometheus-client's multiprocess mode).

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
  not a folder, or someone else's (worker/tamper.py);

plus gauges read from the ledger and the broker at scrape time by :class:`LedgerCollector` in the serving
process (backlog, oldest queued drop, queue depth, workers). Label values come from fixed sets (anything else
becomes ``other``): never a file name, a URL or a reason, so the number of series stays bounded.

Multiprocess: every process writes its values to small files in ``PROMETHEUS_MULTIPROC_DIR``, and the process that
serves /metrics adds them up. The variable is prometheus-client's own convention and is how forked pool children
and spawned workers find the directory, so it is the one piece of the environment read here. The directory must
be chosen before the first metric exists: :func:`serve` (the `run` / `watch` process) and the Celery worker's
``worker_init`` (before its pool forks) call :func:`prepare_multiprocess`, which makes a private directory when the
variable is unset and removes it again on :func:`release_multiprocess`. A pool child that exits is marked dead
(:func:`process_exited`), which drops its live gauges; counters of exited children stay, so totals never go back.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec

logger = logging.getLogger(__name__)
P = ParamSpec("P")

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "feedworker-metrics-"  # + the creating process's id: a private directory, see prepare_multiprocess
STAGES = ("read", "parse", "verify", "publish")
OUTCOMES = ("published", "unchanged", "failed")
IMAGE_STATUSES = ("ok", "broken", "not_image", "unreachable", "blocked")
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
        """Counted by worker/delivery.py and tasks/stages.py (docs/delivery.md)."""
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
_owned_dir: Path | None = None


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


# -- the multiprocess directory ---------------------------------------------------------------------------------


def prepare_multiprocess() -> Path:
    """Make sure this process (and every child it starts afterwards) writes metrics to one shared directory."""
    global _owned_dir, _metrics
    named = os.environ.get(ENV)
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
    else:
        _remove_orphans()
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        os.environ[ENV] = str(path)
        _owned_dir = path
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client picks its value store when first imported; it was imported before the directory
        # existed, so pick again. Metrics made before now counted in memory only: start them afresh.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        if _metrics is not None:
            logger.warning("metrics: values recorded before the metrics directory was set are not served")
        _metrics = None
    return path


def _remove_orphans() -> None:
    """Private directories of processes that are gone (killed before they could remove their own)."""
    for d in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        try:
            os.kill(int(d.name[len(_PREFIX):].split("-", 1)[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def release_multiprocess() -> None:
    """Remove the directory :func:`prepare_multiprocess` made (a directory named in the environment is kept)."""
    global _owned_dir, _metrics
    if _owned_dir is None:
        return
    from prometheus_client import values

    close_all = getattr(values.ValueClass, "close_all_files", None)
    if close_all is not None:
        close_all()
    shutil.rmtree(_owned_dir, ignore_errors=True)
    if os.environ.get(ENV) == str(_owned_dir):
        del os.environ[ENV]
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _owned_dir, _metrics = None, None


def process_exited(pid: int) -> None:
    """A pool child exited: its live gauges go (counters stay, so totals never decrease)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def reap_dead_processes(path: Path) -> None:
    """Drop live gauges of processes that died without a word (SIGKILL, OOM killer): ``worker_process_shutdown``
    never ran for them. Only processes of this machine write here, so a pid that doesn't exist is dead."""
    for f in path.glob("gauge_live*_*.db"):
        try:
            pid = int(f.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                f.unlink()
        except (ValueError, PermissionError):
            continue


# -- serving --------------------------------------------------------------------------------------------------------


class LedgerCollector:
    """Gauges read when Prometheus scrapes (cached a second, so several scrapers at once cost one read):

    - ``feedworker_backlog_drops``: drops queued in the ledger with no outcome yet;
    - ``feedworker_oldest_queued_age_seconds``: how long the oldest of them has waited (0 when none waits);
    - ``feedworker_queue_messages{queue}``: task messages waiting in the broker (one per batch, not per drop);
    - ``feedworker_messages_unacked``: task messages workers hold and have not acknowledged (Redis: exact;
      RabbitMQ: what the answering workers hold, worker/probes.py);
    - ``feedworker_workers``: Celery workers that answered a ping (0 when the broker is down);
    - ``feedworker_broker_up``, ``feedworker_store_up``: 1 when reachable.
    """

    def __init__(self, settings: Any, app: Any, store: Any, cache_seconds: float = 1.0) -> None:
        self.settings, self.app, self.store = settings, app, store
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[Any]] | None = None

    def collect(self) -> list[Any]:
        if self._cached is None or time.monotonic() - self._cached[0] > self.cache_seconds:
            self._cached = (time.monotonic(), self._read())
        return self._cached[1]

    def _read(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily as G

        from worker.probes import broker_view
        from worker.status import configured_broker, ledger_view

        broker = broker_view(self.app, configured_broker(self.settings), timeout=0.5)
        out = [G("feedworker_broker_up", "1 when the broker answers.", value=int(broker.reachable)),
               G("feedworker_workers", "Celery workers that answered a ping.", value=len(broker.workers))]
        queues = G("feedworker_queue_messages", "Task messages waiting in the broker.", labels=["queue"])
        for name, depth in broker.queues.items():
            queues.add_metric([name], depth)
        out.append(queues)
        if broker.in_flight is not None:
            out.append(G("feedworker_messages_unacked", "Task messages delivered to workers, not yet acknowledged.",
                         value=broker.in_flight))
        try:
            ledger = ledger_view(self.store)
            hooks = _webhook_gauges(self.store)
        except Exception:
            logger.warning("metrics: the store can't be read", exc_info=True)
            return [*out, G("feedworker_store_up", "1 when the store answers.", value=0)]
        return [*out, G("feedworker_store_up", "1 when the store answers.", value=1),
                G("feedworker_backlog_drops", "Drops queued with no outcome yet.", value=ledger.backlog),
                G("feedworker_oldest_queued_age_seconds", "Age of the oldest queued drop (0: none).",
                  value=ledger.oldest_queued_age or 0.0), *hooks]


def _webhook_gauges(store: Any) -> list[Any]:
    """Per webhook endpoint: changes not yet delivered, and how long it has been failing (0: it is not)."""
    from prometheus_client.core import GaugeMetricFamily as G

    from tasks.webhooks import failing_seconds, states

    behind = G("feedworker_webhook_behind_changes", "Changes a webhook endpoint has not taken yet.",
               labels=["endpoint"])
    failing = G("feedworker_webhook_failing_seconds", "How long a webhook endpoint has been failing (0: not).",
                labels=["endpoint"])
    at = datetime.now(UTC)
    for w in states(store):
        behind.add_metric([w["endpoint"]], w["behind"])
        failing.add_metric([w["endpoint"]], failing_seconds(w, at))
    return [behind, failing]


class _FilesCollector:
    """Every process's values from the multiprocess directory, added up (after dropping dead processes' gauges)."""

    def __init__(self, path: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.path = path
        self.inner = MultiProcessCollector(None, str(path))  # type: ignore[no-untyped-call]

    def collect(self) -> Any:
        reap_dead_processes(self.path)
        return self.inner.collect()  # type: ignore[no-untyped-call]


class MetricsServer:
    """``/metrics``, ``/livez`` and ``/readyz`` on one port, served by a thread of this process."""

    def __init__(self, httpd: Any, store: Any, owns_dir: bool) -> None:
        import threading

        self.httpd, self.store, self.owns_dir = httpd, store, owns_dir
        self.thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.store.dispose()
        if self.owns_dir:
            release_multiprocess()


def serve(port: int, addr: str | None = None, settings: Any = None, ledger: bool = True,
          alive: Callable[[], bool] | None = None) -> MetricsServer:
    """Serve the metrics of this process and of every process sharing its metrics directory on ``port``
    (0: any free port, see ``.port``), on ``addr`` (default: the ``metrics_host`` setting, 127.0.0.1). Call it
    before starting the processes whose metrics it serves (they inherit the directory). ``ledger``: add
    :class:`LedgerCollector` (the `run` / `watch` process; workers leave it to them). ``alive``: what ``/livez``
    asks besides the broker.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    from tasks.store import Store
    from worker.celery_app import app as celery_app
    from worker.health import wsgi_app
    from worker.settings import get_settings

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *_: Any) -> None:  # a scrape every 15 s is not news
            pass

    owned_before = _owned_dir is not None
    path = prepare_multiprocess()
    settings = settings or get_settings()
    addr = settings.metrics_host if addr is None else addr
    store = Store(settings.store_url)
    registry = CollectorRegistry()
    registry.register(_FilesCollector(path))
    if ledger:
        registry.register(LedgerCollector(settings, celery_app, store))
    application = wsgi_app(make_wsgi_app(registry), settings, store, alive)
    httpd = make_server(addr, port, application, Server, handler_class=Quiet)
    server = MetricsServer(httpd, store, owns_dir=not owned_before and _owned_dir is not None)
    logger.info("metrics on http://%s:%d/metrics (health: /livez, /readyz)", addr or "0.0.0.0", server.port)  # noqa: S104
    return server
