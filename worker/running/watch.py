"""`feedworker watch DROP_DIR`: the watcher alone in this process (no workers, no embedded broker), until SIGTERM
or Ctrl-C. `feedworker run` starts the same watcher in a thread beside its workers (supervisor.py)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

from tasks.store.ledger import Store
from tasks.store.migrate import upgrade
from worker.celeryapp import heap
from worker.observing.metricserver import serve
from worker.settings import Settings, broker_url
from worker.watching.watcher import DropWatcher

logger = logging.getLogger(__name__)


def watch_main(settings: Settings, drop_dir: Path) -> int:
    """`feedworker watch`: the watcher alone, until SIGTERM or Ctrl-C; 0 on a clean stop."""
    from worker.celeryapp.celery_app import app  # built here, where it is started

    if not drop_dir.is_dir():
        logger.error("%s is not a folder", drop_dir)
        return 2
    app.conf.broker_url = broker_url(settings)  # raises, saying what to do, when there is none
    store = Store(settings.store_url)
    upgrade(store)
    metrics = None
    if settings.metrics_port is not None:
        metrics = serve(settings.metrics_port, settings=settings, app=app)
    watcher = DropWatcher(drop_dir, settings.watch, store, app, settings)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("watcher: %s received, stopping", signal.Signals(signum).name)
        watcher.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    heap.settle()  # the imports are done (worker/celeryapp/heap.py)
    try:
        watcher.run()
    finally:
        if metrics is not None:
            metrics.stop()
        store.dispose()
    return 0
