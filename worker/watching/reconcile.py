"""The watcher's side of reconciling with the ledger: put away the drops whose outcome has committed, and send
again those queued too long with no outcome (their task was lost).

Finished drops are moved to ``processed/YYYY-MM-DD/`` or ``failed/`` (worker/watching/finalize.py does one move);
one drop's file that cannot be moved (a read-only or full folder, a tampered reserved folder) waits, said once, and
holds up no other. A finished drop whose file is gone waits ``MISSING_GRACE`` for another watcher's move.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tasks.names import display, escaped_path
from tasks.store.engine import now
from tasks.store.ledger import Store
from worker.settings import WatchSettings
from worker.watching.enqueue import Enqueuer
from worker.watching.finalize import finalize, find_moved
from worker.watching.folders import Folders
from worker.watching.safedir import Tampered
from worker.watching.tamper import TamperLog

logger = logging.getLogger(__name__)
ORIGIN = "watch"  # the ledger's origin for the drops a watcher sends
MISSING_GRACE = 30.0  # a finished drop whose file is gone: wait for another watcher's move before giving up


class Reconciler:
    """One drop folder's finished and lost drops, as the ledger has them."""

    def __init__(self, root: Path, folders: Folders, watch: WatchSettings, store: Store, enq: Enqueuer,
                 tamper: TamperLog, known: set[str]) -> None:
        self.folders, self.cfg, self.store, self.enq, self.tamper = folders, watch, store, enq, tamper
        self.known = known  # the watcher's keys the ledger holds: a drop put away leaves the set
        self.prefix = escaped_path(root) + os.sep  # this folder's drops' paths (other folders share the ledger)
        self.missing_since: dict[str, float] = {}
        self.move_failed: set[str] = set()  # drops whose file could not be moved yet: said once, retried

    def finalize_finished(self) -> int:
        """Put away every finished drop of this folder whose file has not been moved yet; return how many."""
        marks: list[tuple[str, str | None]] = []
        problems = self.folders.check()
        for row in self.store.finished_unfinalized(ORIGIN, under=self.prefix):
            put = self._put_away(row, problems)
            if put is None:
                continue
            action, final = put
            marks.append((row["key"], escaped_path(final) if final else None))
            self.missing_since.pop(row["key"], None)
            if action != "kept":
                self.known.discard(row["key"])  # its file left the folder: keep the set the folder's size
            logger.debug("finalized %s: %s", row["name"], action, extra={"file": row["name"]})
        # One commit for the pass. Should it fail, the files moved meanwhile are found where they went next pass
        # (finalize's find_moved), as after a crash between a move and its mark.
        self.store.mark_finalized_many(marks)
        self.tamper.update(problems)
        return len(marks)

    def _put_away(self, row: dict[str, Any], problems: dict[str, str]) -> tuple[str, Path | None] | None:
        """Finalize one drop: (action, where its file is now), or None when not now. Whatever goes wrong with
        one drop's file is that drop's alone: it waits (said once), no other drop does."""
        try:
            result = finalize(self.folders, row, self.cfg.after)
            final = result.final_path
            if result.action == "missing":
                final = find_moved(self.folders, row)
                if final is None and not self._missing_long(row["key"]):
                    return None
        except Tampered as exc:  # said by the TamperLog, once; the outcome is in the ledger; retried
            problems[escaped_path(exc.path)] = exc.why
            return None
        except Exception as exc:  # a read-only or full folder (OSError), or a bug
            if row["key"] not in self.move_failed:
                logger.warning("cannot put away %s yet: %s", row["name"], display(str(exc)),
                               extra={"file": row["name"]}, exc_info=not isinstance(exc, OSError))
                self.move_failed.add(row["key"])
            return None
        self.move_failed.discard(row["key"])
        return result.action, final

    def _missing_long(self, key: str) -> bool:
        first = self.missing_since.setdefault(key, time.monotonic())
        return time.monotonic() - first > MISSING_GRACE

    def requeue_lost(self) -> int:
        """Send again this folder's drops that were queued too long ago with no outcome (their task was lost)."""
        cutoff = now() - timedelta(seconds=self.cfg.requeue_after_seconds)
        rows = self.store.stale_queued(cutoff, under=self.prefix)
        if rows:
            logger.warning("re-enqueueing %d drops queued over %.0f s ago with no outcome", len(rows),
                           self.cfg.requeue_after_seconds)
            self.enq.resend(rows)
        return len(rows)
