"""When ready drops go out, and in what batches: the watcher's batching policy, with no I/O.

Sans-I/O, as in h11: the watcher tells a ``Batcher`` what happened (``ready``, ``discard``, ``workers_behind``,
``failed``), passing the time as a value, and asks what to do (``wants_probe``, ``due``, ``next_deadline``). The
Batcher never reads a clock, a file or the broker, so every rule below is tested with plain numbers
(tests/test_batcher.py); the watcher only does the I/O around it.

The rules, for files that became ready (renamed into place, or settled), one task chain per batch:

- **full**: a batch of ``batch_max`` files goes at once;
- **Nagle**: a file that arrives after a quiet window (nothing sent for ``window`` seconds) goes at once: there is
  nothing to wait for. Files that follow within the window wait for company until their window ends;
- **back-pressure**: while the workers are behind (messages wait in the queue), a batch that could go waits for
  company instead, looking at the queue again every ``window``, up to ``hold_max`` seconds from its first file.
  A burst then costs fewer chains (each costs three tasks) and the backlog drains sooner. The Batcher asks
  (``wants_probe``) only when the answer can change what it does, so an idle folder costs no queue look;
- **split**: more than ``batch_max`` files (many ready in one turn, or a stop) go as several batches;
- **retry**: batches whose send failed come back first at the next ``due`` (marked ``retry``: some of their drops
  may be registered in the ledger already). The loop's pause after an error is ``Pause``'s;
- **force** (stopping): everything goes now.

Times are ``time.monotonic()`` seconds as far as the watcher is concerned; here they are just numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

HOLD_MAX = 0.25  # seconds a batch may wait for company while the workers are behind
RETRY_AFTER = 1.0  # seconds the loop's periodic work pauses after a store or broker error


@dataclass(frozen=True)
class Batch:
    """Drops to send as one task chain; ``retry``: a send of these failed before (send them from the ledger)."""

    paths: tuple[Path, ...]
    retry: bool = False


class _Verdict(Enum):
    WAIT = "wait"  # not yet
    PROBE = "probe"  # may go now, unless the workers are behind
    GO = "go"


class Batcher:
    """The batch being gathered and the batches to send again. See the module docstring for the rules."""

    def __init__(self, batch_max: int, window: float, hold_max: float = HOLD_MAX) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        self.batch_max, self.window, self.hold_max = batch_max, window, hold_max
        self._pending: dict[Path, None] = {}  # ready files, in arrival order
        self._started: float | None = None  # when the first of them became ready
        self._recheck_at = -math.inf  # a batch held for the workers looks at the queue again then
        self._last_sent = -math.inf  # when the last batch went out
        self._retry: list[tuple[Path, ...]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: Path) -> bool:
        """In the batch being gathered (not counting batches waiting to be sent again)."""
        return path in self._pending

    @property
    def retrying(self) -> list[Path]:
        """The drops of the batches to send again, in order."""
        return [p for paths in self._retry for p in paths]

    # -- events in -------------------------------------------------------------------------------------------------

    def ready(self, path: Path, now: float) -> None:
        """A file is complete: it joins the batch (once; its place is its first arrival)."""
        self._pending.setdefault(path, None)
        if self._started is None:
            self._started = now

    def discard(self, path: Path) -> None:
        """A file left the folder before its batch went out."""
        self._pending.pop(path, None)
        if not self._pending:
            self._reset()

    def workers_behind(self, behind: bool, now: float) -> None:
        """The queue's answer to ``wants_probe``: when behind, the batch waits a window and asks again."""
        if behind and self._started is not None:
            self._recheck_at = now + self.window

    def failed(self, batches: Iterable[Batch]) -> None:
        """These batches (from ``due``) were not sent: they come back first at the next ``due``."""
        self._retry.extend(b.paths for b in batches)

    # -- decisions out ---------------------------------------------------------------------------------------------

    def wants_probe(self, now: float) -> bool:
        """The batch may go now, but is young enough to wait for company: tell ``workers_behind`` before ``due``
        (unasked or answered False, ``due`` sends it)."""
        return self._verdict(now) is _Verdict.PROBE

    def due(self, now: float, force: bool = False) -> list[Batch]:
        """What to send now, in order: batches to send again, then the gathered batch if it goes (split by
        ``batch_max``). What is returned is the caller's: hand back what could not be sent with ``failed``."""
        out = [Batch(paths, retry=True) for paths in self._retry]
        self._retry = []
        if self._pending and (force or self._verdict(now) is not _Verdict.WAIT):
            paths = tuple(self._pending)
            out.extend(Batch(paths[i:i + self.batch_max]) for i in range(0, len(paths), self.batch_max))
            self._pending.clear()
            self._reset()
            self._last_sent = now
        return out

    def next_deadline(self, now: float) -> float | None:
        """When ``due`` (or ``wants_probe``) can next change its answer with no new event; None: not before one."""
        if self._retry or len(self._pending) >= self.batch_max:
            return now
        if self._started is None:
            return None
        return max(self._opens_at(self._started), self._recheck_at)

    def _verdict(self, now: float) -> _Verdict:
        if self._started is None:
            return _Verdict.WAIT
        if len(self._pending) >= self.batch_max:
            return _Verdict.GO
        if now < self._recheck_at or now < self._opens_at(self._started):
            return _Verdict.WAIT
        return _Verdict.PROBE if now < self._started + self.hold_max else _Verdict.GO

    def _opens_at(self, started: float) -> float:
        """Nagle's rule: a batch begun after a quiet window may go at once; one begun within it, when its own
        window ends."""
        return started if started >= self._last_sent + self.window else started + self.window

    def _reset(self) -> None:
        self._started = None
        self._recheck_at = -math.inf  # a hold belongs to the batch it held


class Pause:
    """Store and broker errors pause the loop's periodic work for ``retry_after`` seconds, each time (a flat
    retry: the outage is the store's or broker's, and the loop keeps taking events meanwhile)."""

    def __init__(self, retry_after: float = RETRY_AFTER) -> None:
        self.retry_after = retry_after
        self.failing = False
        self.until = -math.inf

    def failed(self, now: float) -> bool:
        """An error at ``now``: pause. True when it begins an outage (tell the whole story once, then a line)."""
        first = not self.failing
        self.failing, self.until = True, now + self.retry_after
        return first

    def succeeded(self) -> bool:
        """A step went through. True when that ends an outage."""
        ended, self.failing = self.failing, False
        return ended

    def active(self, now: float) -> bool:
        return now < self.until
