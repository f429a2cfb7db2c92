"""Turning files into queued drops: read, register in the ledger, send one task chain per batch.

Used by the watcher (live drops) and by `feedworker ingest` (backfill). The ledger insert comes first and only
the drops it newly inserted are sent, so a rescan or a second watcher never enqueues a file twice; a drop
whose task is lost stays queued in the ledger and is sent again by `requeue_stale`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy.exc import OperationalError, StatementError

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.names import display, escape, escaped_path, os_path
from tasks.pipeline import wire_drop
from tasks.queues import BACKFILL, STAGE_QUEUES
from tasks.shapes import Drop, WireDrop, wire_of
from tasks.store.engine import now
from tasks.store.ledger import Store
from worker.observing import metrics
from worker.watching.dropfiles import drop_key
from worker.watching.lostdrops import really_lost
from worker.watching.safedir import Tampered, open_base, open_under, opened

logger = logging.getLogger(__name__)


class Enqueuer:
    """Sends drops for one origin (watch | ingest) and run."""

    def __init__(self, app: Celery, store: Store, limits: ParseLimits, run_id: str, origin: str,
                 scope: str, max_queue_batches: int = 0, batch_max: int = 100, root: Path | None = None,
                 lane: str = BACKFILL) -> None:
        self.app, self.store, self.limits = app, store, limits
        self.run_id, self.origin, self.scope = run_id, origin, scope
        self.max_queue_batches = max_queue_batches  # back pressure: 0 = none
        self.batch_max = batch_max  # drops per task when resending (submit's callers batch their own)
        self.root = root  # a drop folder strangers write to: files below it are reached without following links
        self.lane = lane  # live: drops the watcher sees (their own queue, served first); backfill: the rest
        self.sent = 0
        self.unsent: set[str] = set()  # registered in the ledger by this enqueuer, not sent yet

    def submit(self, paths: Sequence[Path]) -> int:
        """Register and send these files (one batch); return how many were new to the ledger."""
        wire = [w for w in (self._wire(p) for p in paths) if w is not None]
        if not wire:
            return 0
        rows = [{k: w[k] for k in ("key", "name", "path", "size", "mtime_ns")} for w in wire]
        with metrics.timed_store_write("register"):
            fresh = set(self._register(rows))
        metrics.drops_discovered(self.origin, len(fresh))
        # Registered by an earlier call whose send failed (the broker was down): a retry of the same paths sends
        # them, rather than skipping them as known.
        fresh |= self.unsent & {w["key"] for w in wire}
        wire = [w for w in wire if w["key"] in fresh]
        if wire:
            self.unsent.update(fresh)
            self._wait_for_room()
            self._send(wire)
            self.unsent.difference_update(fresh)
        return len(wire)

    def _register(self, rows: list[dict[str, Any]]) -> list[str]:
        """Register a batch; one the store refuses as data is registered a drop at a time, so that one odd entry
        is refused alone (logged with its name and left out: not sent, and not tried again by the watcher until
        the file changes) and never holds back the others. An outage still raises (the caller retries)."""
        try:
            return self.store.register_drops(rows, self.run_id, self.origin)
        except (StatementError, ValueError) as exc:
            if isinstance(exc, OperationalError) or len(rows) == 1:
                raise
        fresh: list[str] = []
        for row in rows:
            try:
                fresh += self.store.register_drops([row], self.run_id, self.origin)
            except (StatementError, ValueError) as exc:
                if isinstance(exc, OperationalError):
                    raise
                logger.error("refused %s: the store cannot register it: %s", display(row["name"]),
                             display(str(exc).splitlines()[0][:200]), extra={"file": display(row["name"])})
        return fresh

    def resend(self, rows: Iterable[dict[str, Any]]) -> int:
        """Send ledger drops again (lost tasks, replays), reading their files anew, ``batch_max`` drops a task (a
        backlog of 1000 is not one message of up to 1000 files). Only the drops still in the state their row shows
        (queued when it shows none) are sent: one that finished meanwhile keeps its outcome."""
        rows = list(rows)
        sent = 0
        for start in range(0, len(rows), self.batch_max):
            sent += self._resend_batch(rows[start:start + self.batch_max])
        if sent:
            metrics.drops_requeued("replay" if self.origin == "replay" else "lost", sent)
        return sent

    def _resend_batch(self, rows: list[dict[str, Any]]) -> int:
        wire, states = [], {}
        for row in rows:
            path = os_path(row.get("final_path") or row["path"])
            drop = Drop(key=row["key"], name=row["name"], path=escaped_path(path), size=row["size"],
                        mtime_ns=row["mtime_ns"])
            wire.append(self._read(drop, path))
            states[row["key"]] = row.get("state") or "queued"
        marked: set[str] = set()
        for state in set(states.values()):
            marked.update(self.store.requeue([k for k, s in states.items() if s == state], state=state))
        wire = [w for w in wire if w["key"] in marked]
        if wire:
            self._send(wire)
            self.unsent.difference_update(marked)
        return len(wire)

    def requeue_stale(self, older_than: float) -> int:
        """Send again this run's drops queued longer than ``older_than`` seconds with no outcome whose messages
        are gone (worker/watching/lostdrops.py)."""
        stale = self.store.stale_queued(now() - timedelta(seconds=older_than), run_id=self.run_id)
        stale = really_lost(self.app, stale)  # not those still waiting in the queue or running
        if stale:
            logger.warning("re-enqueueing %d drops whose tasks were lost", len(stale))
        return self.resend(stale)

    def _wire(self, path: Path) -> WireDrop | None:
        try:
            st = path.lstat()  # the link itself, never its target: reading refuses a symlink
        except OSError:
            return None  # gone before we got to it (or unreachable): nothing to do
        abspath = path.absolute()
        key = drop_key(self.scope, abspath, st.st_size, st.st_mtime_ns)
        # The ledger, the task message, logs and reports carry the name's escaped form (tasks/names.py): valid
        # text whatever bytes the name holds, and no control character that could forge a line.
        drop = Drop(key=key, name=escape(path.name), path=escaped_path(abspath), size=st.st_size,
                    mtime_ns=st.st_mtime_ns)
        return self._read(drop, path)

    def _read(self, drop: Drop, path: Path) -> WireDrop:
        try:
            return wire_drop(drop, self._read_bytes(drop, path))
        except DropRejected as exc:  # recorded as a failure by the pipeline, like any refusal
            return _refused(drop, exc.summary, exc.stage)
        except Exception as exc:  # a bug must cost this drop, not its batch (nor stall the watcher)
            logger.exception("read: unexpected error", extra={"file": drop["name"]})
            return _refused(drop, f"internal error: {type(exc).__name__}", "read")

    def _read_bytes(self, drop: Drop, path: Path) -> bytes:
        """The file's bytes; below ``root``, through its folder opened one step at a time without following a
        link, so a sub-folder swapped for a link after the file was seen is refused, not read through."""
        from tasks.parse.parsing import read_drop

        if self.root is None or not path.is_relative_to(self.root):
            return read_drop(path, self.limits)
        try:
            with opened(open_base(self.root, create=False, owned=False)) as base:
                folder = open_under(base, path.parent.relative_to(self.root).parts, self.root, False, None)
        except Tampered as exc:
            raise DropRejected(drop["name"], f"the folder {escaped_path(exc.path)} {exc.why}", stage="read") from None
        except OSError:
            return read_drop(path, self.limits)  # gone or unreadable: read_drop says which, as for any file
        with opened(folder):
            return read_drop(path, self.limits, dir_fd=folder)

    def _send(self, wire: list[WireDrop]) -> None:
        from tasks.stages import pipeline

        # The stage tasks are shared tasks: they bind to the thread's current app, which in a thread other than
        # the main one is Celery's default app (amqp://localhost!) unless we say which. Say it every time.
        self.app.set_current()
        with self.app.producer_or_acquire() as producer:
            pipeline(wire, lane=self.lane).apply_async(producer=producer)
        self.sent += len(wire)

    def _wait_for_room(self) -> None:
        """Back pressure: hold while the stage queues hold more than ``max_queue_batches`` batches."""
        if not self.max_queue_batches:
            return
        while (depth := queue_depth(self.app)) > self.max_queue_batches:
            logger.debug("queue holds %d batches; waiting", depth)
            time.sleep(0.2)


def queue_depth(app: Celery, queues: tuple[str, ...] = STAGE_QUEUES) -> int:
    """Messages waiting in ``queues`` together (not counting the ones workers hold); 0 for one not declared yet."""
    from worker.observing.probes import queue_depth as depth

    with app.pool.acquire(block=True) as conn:  # pooled: `ingest` asks once a batch; a new connection cost ~2.5 ms
        return sum(depth(conn, q) for q in queues)


def _refused(drop: Drop, reason: str, stage: str) -> WireDrop:
    """A drop its sender could not read, as the parse task records it: refused at ``stage`` for ``reason``."""
    wire = wire_of(drop)
    wire["error"], wire["error_stage"] = reason, stage
    return wire
