"""Serving the metrics: ``/metrics`` (every process's values from the multiprocess directory, plus gauges read
from the ledger and the broker at scrape time), ``/livez`` and ``/readyz`` on one port (worker/observing/health.py).

``serve`` is handed the Celery app (for the broker probe) by the `run` / `watch` process that made it: nothing
here builds one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery

from worker.observing import metricsdir

logger = logging.getLogger(__name__)


class LedgerCollector:
    """Gauges read when Prometheus scrapes (cached a second, so several scrapers at once cost one read):

    - ``feedworker_backlog_drops``: drops queued in the ledger with no outcome yet;
    - ``feedworker_oldest_queued_age_seconds``: how long the oldest of them has waited (0 when none waits);
    - ``feedworker_queue_messages{queue}``: task messages waiting in the broker (one per batch, not per drop);
    - ``feedworker_messages_unacked``: task messages workers hold and have not acknowledged (Redis: exact;
      RabbitMQ: what the answering workers hold, worker/observing/probes.py);
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

        from worker.observing.probes import broker_view
        from worker.observing.status import configured_broker, ledger_view

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

    from tasks.store.webhooks import failing_seconds, states

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
        metricsdir.reap_dead_processes(self.path)
        return self.inner.merge(self._ready_files(), accumulate=True)  # type: ignore[no-untyped-call]

    def _ready_files(self) -> list[str]:
        """The directory's value files, less those a starting process has created but not yet sized: such a file
        is empty for a moment, and prometheus_client's reader fails the whole scrape on it (a 500 that a pool
        child starting mid-scrape caused). Its values are zero until it is sized, so leaving it out changes none."""
        ready = []
        for path in self.path.glob("*.db"):
            with contextlib.suppress(FileNotFoundError):  # reaped meanwhile
                if path.stat().st_size > 0:
                    ready.append(str(path))
        return ready


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
            metricsdir.release_multiprocess()


def serve(port: int, addr: str | None = None, settings: Any = None, app: Celery | None = None,
          alive: Callable[[], bool] | None = None) -> MetricsServer:
    """Serve the metrics of this process and of every process sharing its metrics directory on ``port``
    (0: any free port, see ``.port``), on ``addr`` (default: the ``metrics_host`` setting, 127.0.0.1). Call it
    before starting the processes whose metrics it serves (they inherit the directory). ``app``: the `run` /
    `watch` process's Celery app, whose broker :class:`LedgerCollector` asks (None: no ledger gauges; a worker
    leaves them to run / watch). ``alive``: what ``/livez`` asks besides the broker.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    from tasks.store.ledger import Store
    from worker.observing.health import wsgi_app
    from worker.settings import get_settings

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *_: Any) -> None:  # a scrape every 15 s is not news
            pass

    owned_before = metricsdir.owned() is not None
    path = metricsdir.prepare_multiprocess()
    settings = settings or get_settings()
    addr = settings.metrics_host if addr is None else addr
    store = Store(settings.store_url)
    registry = CollectorRegistry()
    registry.register(_FilesCollector(path))
    if app is not None:
        registry.register(LedgerCollector(settings, app, store))
    application = wsgi_app(make_wsgi_app(registry), settings, store, alive)
    httpd = make_server(addr, port, application, Server, handler_class=Quiet)
    server = MetricsServer(httpd, store, owns_dir=not owned_before and metricsdir.owned() is not None)
    logger.info("metrics on http://%s:%d/metrics (health: /livez, /readyz)", addr or "0.0.0.0", server.port)  # noqa: S104
    return server
