"""The lost-drop sweep in every worker's main process: drops whose messages are gone (worker/watching/lostdrops.py
says how that is known) are sent again from their files.

It runs every ``lost_sweep_seconds`` (0: never); a lock in the broker lets one worker sweep at a time.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps

from tasks.store.engine import now
from worker.settings import get_settings
from worker.watching.enqueue import Enqueuer
from worker.watching.lostdrops import really_lost

logger = logging.getLogger(__name__)
LOCK = "feedworker:lost-sweep"


def sweep(app: Celery, store: Any, settings: Any) -> int:
    """One sweep: send again the drops whose messages are gone; return how many were sent."""
    stale = store.stale_queued(now() - timedelta(seconds=settings.watch.requeue_after_seconds))
    lost = [r for r in really_lost(app, stale) if _readable(r)]
    if not lost:
        return 0
    logger.warning("lost-drop sweep: sending %d drops again (their messages are gone)", len(lost))
    enq = Enqueuer(app, store, settings.parse, run_id="sweep", origin="sweep", scope="sweep",
                   batch_max=settings.watch.batch_max)
    return enq.resend(lost)


def _readable(row: dict[str, Any]) -> bool:
    return Path(row.get("final_path") or row["path"]).is_file()


def _locked(app: Celery, seconds: float) -> bool:
    """One sweeper at a time across workers: a lock in the broker that expires by itself."""
    with app.connection_for_write() as conn:
        client = getattr(conn.default_channel, "client", None)
        if client is None:
            return True
        return bool(client.set(LOCK, "1", nx=True, px=max(100, int(seconds * 900))))


class LostSweep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs :func:`sweep` every ``lost_sweep_seconds`` in the worker's main process (0: never)."""

    def __init__(self, parent: Any, **options: Any) -> None:
        super().__init__(parent, **options)
        self.app: Celery = parent.app
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        every = get_settings().lost_sweep_seconds
        if every > 0:
            self.thread = threading.Thread(target=self._loop, args=(every,), name="lost-sweep", daemon=True)
            self.thread.start()

    def stop(self, parent: Any) -> None:
        self.stopping.set()

    def _loop(self, every: float) -> None:
        from worker.celeryapp.resources import make_store  # the image checker's stack: a worker's, not every command's

        store = make_store()
        try:
            while not self.stopping.wait(every):
                self._once(store, get_settings())
        finally:
            store.dispose()

    def _once(self, store: Any, settings: Any) -> None:
        try:
            if _locked(self.app, settings.lost_sweep_seconds):
                sweep(self.app, store, settings)
        except Exception:  # a broker or store outage: the next turn tries again
            logger.warning("lost-drop sweep failed; trying again in %.0f s", settings.lost_sweep_seconds,
                           exc_info=True)
