"""`feedworker watch DROP_DIR`: turn files dropped into a folder into queued drops, then put them away.

One loop, one thread, fed by three sources:
- inotify events (watchdog, worker/watching/events.py): a file renamed into the folder is complete at once and
  goes out within the batch window; a file written in place waits for the settle rules (worker/watching/settle.py);
- a reconciling scan at start and every ``rescan_seconds``, walked a slice at a time between events: it finds
  what arrived while the watcher was down, what an event overflow lost, and everything on file systems without
  events (NFS, bind mounts);
- the ledger: finished drops are moved to ``processed/YYYY-MM-DD/`` or ``failed/`` once their outcome has committed,
  and drops queued too long with no outcome (a lost task) are sent again (worker/watching/reconcile.py).

Nothing is marked on disk: the ledger is the only record (no lock files that could block a file forever). A drop
is keyed by (folder, path, size, mtime), the same for every watcher of one folder, so a rescan or a second
watcher never enqueues a file twice. Symlinks are never followed, so nothing outside the folder is read.

Over 300 lines on purpose: the loop, its three sources and its sending share one state (the settle tracker, the
batcher, the keys known to the ledger, the first scan's backlog), which only this thread touches. What has no need
of that state lives beside it: settle.py, batcher.py (pure), enqueue.py, reconcile.py, finalize.py.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
)

from tasks.names import escape, escaped_path
from tasks.queues import BACKFILL, LIVE, queue_for
from tasks.store.ledger import Store
from worker.observing.probes import queue_depth
from worker.settings import Settings, WatchSettings
from worker.watching.batcher import Batcher, Pause
from worker.watching.dropfiles import RESERVED_DIRS, drop_key, is_candidate, walk
from worker.watching.enqueue import Enqueuer
from worker.watching.events import observe
from worker.watching.folders import Folders
from worker.watching.reconcile import ORIGIN, Reconciler
from worker.watching.settle import SettleTracker
from worker.watching.tamper import TamperLog

logger = logging.getLogger(__name__)

FINALIZE_EVERY = 0.5  # seconds between ledger polls for finished drops
SCAN_SLICE = 500  # directory entries walked per loop turn, so events are never held up by a long scan
BEHIND_DEPTH = 4  # messages waiting in the queue that mean "behind" (a chain's next stage waits there briefly)


class DropWatcher:
    """Watches one drop folder and feeds an Enqueuer: ``run`` until ``stop()``."""

    def __init__(self, root: Path, watch: WatchSettings, store: Store, app: Celery, settings: Settings) -> None:
        self.root = root.resolve()
        self.folders = Folders.of(self.root, watch.processed_dir, watch.failed_dir)
        self._inside = self.folders.inside()  # reserved folders configured inside the drop folder: never drops
        self.cfg, self.store = watch, store
        self.scope = f"watch:{self.root}"
        self.app = app
        self.enq = Enqueuer(app, store, settings.parse, uuid.uuid4().hex, ORIGIN, self.scope, root=self.root,
                            lane=LIVE)
        # The first scan's finds are a backlog (what arrived while nobody watched): they go in the backfill lane,
        # so that they never hold up what is dropped from now on (the live lane). Emptied as they are sent.
        self.backlog: set[Path] = set()
        self._first_scan = True
        self.tracker = SettleTracker(watch.settle_seconds)
        self.events: queue.Queue[FileSystemEvent] = queue.Queue()
        self.batcher = Batcher(watch.batch_max, watch.batch_window_ms / 1000)  # when ready files go out
        self.known: set[str] = set()  # keys the ledger holds: a rescan skips them without a query
        self.reconcile = Reconciler(self.root, self.folders, watch, store, self.enq,
                                    TamperLog(self.root, settings.state_dir.absolute()), self.known)
        self.symlinks: set[Path] = set()  # already reported
        self._scan: Iterator[os.DirEntry[str]] | None = None
        self._next_scan = self._next_finalize = self._next_requeue = 0.0
        self.pause = Pause()  # after a store or broker error
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Ask ``run`` to return (from any thread): it sends what is complete, then stops."""
        self.stopping.set()
        self.events.put(FileSystemEvent(""))  # wake the loop now rather than at its next deadline

    # -- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        self.app.set_current()  # Celery's current app is per thread: the tasks' signatures must find ours
        observer = observe(self.root, self.cfg.recursive, self.events)  # events first, then the scan: nothing
        # can fall between them
        logger.info("watching %s (settle %.2f s, rescan every %.0f s, after: %s)", self.root,
                    self.cfg.settle_seconds, self.cfg.rescan_seconds, self.cfg.after)
        try:
            while not self.stopping.is_set():
                self.turn(wait=True)
            # What is complete goes out now; if it can't, the next start finds it (files by the scan, drops
            # registered but unsent by the lost-task requeue).
            self._guarded(lambda now_m: self._flush(now_m, force=True), time.monotonic())
        finally:
            observer.stop()
            observer.join(5)

    def turn(self, wait: bool = False) -> None:
        """One pass: take events, check pending files, walk a slice of the scan, flush, finalize, requeue."""
        if wait:
            self._take_events(timeout=self._sleep_for())
        else:
            self._take_events(timeout=0)
        now_m = time.monotonic()
        for path in self.tracker.due(now_m):
            self._ready(path, now_m)
        if not self.pause.active(now_m):
            self._guarded(self._periodic, now_m)

    def _periodic(self, now_m: float) -> None:
        if self._scan is None and now_m >= self._next_scan:
            self._scan = walk(self.root, self.cfg.recursive, skip_reserved=True, skip=self._inside)
            self._next_scan = now_m + self.cfg.rescan_seconds
        if self._scan is not None:
            self._scan_slice(now_m)
        self._flush(now_m)
        if now_m >= self._next_finalize:
            self._next_finalize = now_m + FINALIZE_EVERY
            self.reconcile.finalize_finished()
        if now_m >= self._next_requeue:
            self._next_requeue = now_m + min(30.0, self.cfg.requeue_after_seconds / 2)
            self.reconcile.requeue_lost()

    def _guarded(self, step: Any, now_m: float) -> None:
        """Store and broker outages pause the loop; nothing taken is dropped (the batch waits, or is retried)."""
        try:
            step(now_m)
        except Exception as exc:
            if self.pause.failed(time.monotonic()):  # the whole story once; then a line per retry until it recovers
                logger.exception("watcher: store or broker error; retrying every %.0f s", self.pause.retry_after)
            else:
                logger.warning("watcher: still failing: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)
            return
        if self.pause.succeeded():
            logger.info("watcher: store and broker reachable again")

    def _sleep_for(self) -> float:
        now_m = time.monotonic()
        if self.pause.active(now_m):
            return min(1.0, self.pause.until - now_m)  # events still wake us; periodic work waits
        if self._scan is not None:
            return 0.0
        deadlines = [self._next_scan, self._next_finalize, self._next_requeue]
        for deadline in (self.batcher.next_deadline(now_m), self.tracker.next_deadline()):
            if deadline is not None:
                deadlines.append(deadline)
        return min(1.0, max(0.0, min(deadlines) - now_m))

    # -- events --------------------------------------------------------------------------------------------------

    def _take_events(self, timeout: float) -> None:
        try:
            event = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._on_event(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or (not event.src_path and not event.dest_path):
            return  # a folder moved in brings created events for its files (and the next scan walks it)
        now_m = time.monotonic()
        kind, src = event.event_type, _path(event.src_path)
        if kind == EVENT_TYPE_MOVED:
            if src is not None:
                self.tracker.forget(src)
                self.backlog.discard(src)
            dest = _path(event.dest_path)
            if dest is not None and self.in_scope(dest):
                self._ready(dest, now_m)  # renamed into place: complete now
            return
        if src is None or not self.in_scope(src):
            return
        if kind == EVENT_TYPE_CREATED:
            self.tracker.created(src, now_m)
        elif kind == EVENT_TYPE_MODIFIED:
            self.tracker.written(src, now_m)
        elif kind == EVENT_TYPE_CLOSED:
            self.tracker.closed(src, now_m)
        elif kind == EVENT_TYPE_DELETED:
            self.tracker.forget(src)
            self.batcher.discard(src)
            self.backlog.discard(src)

    def in_scope(self, path: Path) -> bool:
        """A drop's name, below the root, not hidden or temporary at any level, not in processed/ or failed/."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        if not parts or not all(is_candidate(p) for p in parts):
            return False
        if self._inside and any(path.is_relative_to(r) for r in self._inside):
            return False
        return not (len(parts) > 1 and (not self.cfg.recursive or parts[0] in RESERVED_DIRS))

    # -- the scan ------------------------------------------------------------------------------------------------

    def _scan_slice(self, now_m: float) -> None:
        assert self._scan is not None
        first = self._first_scan  # this slice's finds are the backlog, even if the scan ends in it
        found: dict[str, tuple[Path, os.stat_result]] = {}
        for _ in range(SCAN_SLICE):
            entry = next(self._scan, None)
            if entry is None:
                self._scan = None
                self._first_scan = False
                break
            path = Path(entry.path)
            if path in self.tracker or path in self.batcher:
                continue
            if entry.is_symlink():
                self._skip_symlink(path)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone, or in a folder we may list but not search: never a reason to stall the scan
                continue
            key = self.key(path, st)
            if key not in self.known:
                found[key] = (path, st)
        if found:
            self.known.update(self.store.known_keys(found))
            wall = time.time()
            for key, (path, st) in found.items():
                if key not in self.known:
                    self.tracker.seen(path, st, now_m, wall)
                    if first:
                        self.backlog.add(path)

    def _skip_symlink(self, path: Path) -> None:
        """Symlinks are never followed, so never drops: said once per path (a rescan meets them again)."""
        if path not in self.symlinks and len(self.symlinks) < 10_000:
            self.symlinks.add(path)
            logger.warning("ignoring %s: a symbolic link (drops must be regular files; links are not followed)",
                           escaped_path(path), extra={"file": escape(path.name)})

    def key(self, path: Path, st: os.stat_result) -> str:
        return drop_key(self.scope, path, st.st_size, st.st_mtime_ns)

    # -- batching and sending --------------------------------------------------------------------------------------

    def _ready(self, path: Path, now_m: float) -> None:
        self.tracker.forget(path)
        try:
            st = path.lstat()
        except OSError:  # gone (or unreachable): nothing to send
            return
        if stat.S_ISLNK(st.st_mode):
            self._skip_symlink(path)
            return
        if not stat.S_ISREG(st.st_mode) or self.key(path, st) in self.known:
            return
        self.batcher.ready(path, now_m)

    def _flush(self, now_m: float, force: bool = False) -> None:
        """Send what the batcher says is due; what could not be sent goes back to it, and the error up."""
        if not force and self.batcher.wants_probe(now_m):
            self.batcher.workers_behind(self._workers_behind(), now_m)
        batches = self.batcher.due(now_m, force=force)
        for i, batch in enumerate(batches):
            try:
                if batch.retry:
                    self._resubmit(list(batch.paths))
                else:
                    self._submit(list(batch.paths))
            except Exception:
                self.batcher.failed(batches[i:])  # some may be registered and not sent: _resubmit sorts that out
                raise

    def _workers_behind(self) -> bool:
        """Messages are waiting in the queue: the workers are behind (the batcher then holds a batch for
        company)."""
        with self.app.pool.acquire(block=True) as conn:  # pooled: no new connection per look
            # Bounded: during a broker outage this raises at once (the loop pauses and retries) instead of
            # blocking the loop in kombu's reconnect, which would also hold up stop() and finalization.
            conn.ensure_connection(max_retries=1, interval_start=0.1, interval_step=0.1, interval_max=0.1)
            return queue_depth(conn, queue_for("parse", self.enq.lane)) >= BEHIND_DEPTH

    def _submit(self, paths: list[Path]) -> None:
        keys = self._keys(paths)
        sent = 0
        for lane, group in self._lanes(paths):
            self.enq.lane = lane
            sent += self.enq.submit(group)
            self.backlog.difference_update(group)
        self.known.update(keys.values())
        if sent:
            logger.debug("enqueued %d of %d files", sent, len(paths))

    def _lanes(self, paths: list[Path]) -> list[tuple[str, list[Path]]]:
        """``paths`` by lane: the first scan's finds in the backfill lane, the rest live."""
        backlog = [p for p in paths if p in self.backlog]
        live = [p for p in paths if p not in self.backlog]
        return [(lane, group) for lane, group in ((BACKFILL, backlog), (LIVE, live)) if group]

    def _resubmit(self, paths: list[Path]) -> None:
        """Send again a batch whose submit failed: the drops it registered are sent from the ledger (a plain submit
        would skip them as known), the others are submitted afresh."""
        keys = self._keys(paths)
        registered = self.store.known_keys(keys.values())
        self.enq.lane = BACKFILL if any(p in self.backlog for p in paths) else LIVE
        rows = []
        for path, key in keys.items():
            if key in registered:
                try:
                    st = path.lstat()
                except OSError:
                    continue  # gone since: its drop is queued in the ledger and the requeue sends it
                rows.append({"key": key, "name": escape(path.name), "path": escaped_path(path), "size": st.st_size,
                             "mtime_ns": st.st_mtime_ns})
        fresh = [p for p, k in keys.items() if k not in registered]
        if rows:
            self.enq.resend(rows)
        if fresh:
            self.enq.submit(fresh)
        self.backlog.difference_update(paths)
        self.known.update(keys.values())

    def _keys(self, paths: list[Path]) -> dict[Path, str]:
        keys = {}
        for path in paths:
            try:
                keys[path] = self.key(path, path.lstat())
            except OSError:
                continue
        return keys

def _path(raw: bytes | str) -> Path | None:
    if not raw:
        return None
    return Path(os.fsdecode(raw))
