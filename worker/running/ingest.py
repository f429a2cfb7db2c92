"""`feedworker ingest`: enqueue files or folders once (backfill), optionally waiting for every outcome.

Folders are streamed (no full listing in memory) and sent in batches, holding back while the queue is deep.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import KombuError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import DBAPIError

from tasks.errors import TransientError
from tasks.shapes import OUTCOMES
from tasks.store.ledger import Store
from worker.celeryapp import heap
from worker.settings import Settings
from worker.watching.dropfiles import is_candidate, walk
from worker.watching.enqueue import Enqueuer

logger = logging.getLogger(__name__)

MAX_QUEUE_BATCHES = 200  # back pressure: about 20,000 drops waiting at the default batch size
# What a broker or store outage raises here: kombu's errors, redis-py's (a passive queue_declare is not wrapped),
# the database driver's, and ours; and the broker transport's own (outage_errors).
OUTAGE_ERRORS = (KombuError, redis.RedisError, DBAPIError, TransientError)
Errors = tuple[type[BaseException], ...]


def outage_errors(app: Celery) -> Errors:
    """OUTAGE_ERRORS and the connection and channel errors of ``app``'s broker transport. kombu wraps errors of
    connecting, not those of a connection that breaks later: py-amqp raises a bare OSError ("Server unexpectedly
    closed connection") when RabbitMQ goes away as a channel opens on a connection it had accepted."""
    conn: Any = app.connection_for_write()  # no connection is made: the transport's error classes only
    try:
        return (*OUTAGE_ERRORS, *conn.connection_errors, *conn.channel_errors)
    finally:
        conn.release()


def files_of(paths: Sequence[Path], recursive: bool) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            for entry in walk(p, recursive=recursive, skip_reserved=True):
                yield Path(entry.path)
        elif p.is_file() and is_candidate(p.name):
            yield p
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")


def ingest(app: Celery, settings: Settings, store: Store, paths: Sequence[Path], wait: bool, show_progress: bool
           ) -> dict[str, int]:
    """Enqueue every drop under ``paths`` through ``app``; with ``wait``, return when each has an outcome."""
    run_id = uuid.uuid4().hex
    enq = Enqueuer(app, store, settings.parse, run_id, "ingest", scope=f"ingest:{run_id}",
                   max_queue_batches=MAX_QUEUE_BATCHES, batch_max=settings.watch.batch_max)
    errors = outage_errors(app)
    progress = _progress(show_progress)
    heap.settle()  # the imports are done (worker/celeryapp/heap.py)
    with progress or nullcontext():
        task = progress.add_task("enqueue", total=None) if progress else None
        batch: list[Path] = []
        for path in files_of(paths, settings.watch.recursive):
            batch.append(path)
            if len(batch) >= settings.watch.batch_max:
                _submit(enq, batch, errors)
                batch = []
                _advance(progress, task, enq.sent)
        _submit(enq, batch, errors)
        _advance(progress, task, enq.sent)
        if wait:
            return _wait(store, enq, settings, progress, errors)
    return {"enqueued": enq.sent}


def _submit(enq: Enqueuer, batch: list[Path], errors: Errors) -> None:
    """Send one batch, waiting out a broker or store outage (said once, then a line every 10 tries): the drops
    already registered are sent when the broker is back, none twice (Enqueuer.unsent)."""
    tries = 0
    while True:
        try:
            enq.submit(batch)
            return
        except errors as exc:
            if tries % 10 == 0:
                logger.warning("broker or store unreachable (%s); retrying every second", _first_line(exc))
            tries += 1
            time.sleep(1.0)


def _wait(store: Store, enq: Enqueuer, settings: Settings, progress: Progress | None, errors: Errors
          ) -> dict[str, int]:
    """Poll the ledger until this run has no queued drop, sending lost ones again. A broker or store outage
    meanwhile is waited out (logged), not fatal: the drops are in the ledger, and this loop is what resends them."""
    task = progress.add_task("finish", total=enq.sent) if progress else None
    last_requeue = time.monotonic()
    down = 0  # seconds the store has been unreachable: said at once, then every 30 s
    while True:
        try:
            counts: Counter[str] = store.run_counts(enq.run_id)
        except DBAPIError as exc:
            if down % 30 == 0:
                logger.warning("store unreachable, still waiting: %s", _first_line(exc))
            down += 1
            time.sleep(1.0)
            continue
        down = 0
        done = sum(counts[s] for s in OUTCOMES)
        _advance(progress, task, done)
        if counts["queued"] == 0:
            return {s: counts[s] for s in OUTCOMES}
        if time.monotonic() - last_requeue > settings.watch.requeue_after_seconds:
            try:
                enq.requeue_stale(settings.watch.requeue_after_seconds)  # a task lost with its broker
            except errors as exc:
                logger.warning("could not send lost drops again (%s); trying again in %.0f s", _first_line(exc),
                               settings.watch.requeue_after_seconds)
            last_requeue = time.monotonic()
        time.sleep(0.2)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _progress(show: bool) -> Progress | None:
    if not show:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)


def _advance(progress: Progress | None, task: Any, completed: int) -> None:
    if progress is not None and task is not None:
        progress.update(task, completed=completed)
