"""When a file written in place is complete: the settle rules, fed by file events and by scans.

A file renamed into the drop folder is complete at once and never comes here (the watcher takes it on the
rename). A file written in place is pending until one of these holds, re-checked with a fresh ``lstat``:

- a writer closed it (inotify ``close_write``) and nothing changed for ``close_grace`` since: a short grace,
  so a slow single-open writer is taken about 0.1 s after it closes, and a producer that reopens at once to
  append (``echo a > f; echo b >> f``) resets the clock before the grace runs out;
- no writer holds it open and its size and mtime held still for ``settle`` seconds (scans, and file systems
  without events: NFS, bind mounts);
- a writer still holds it open (a write event with no close since) and nothing changed for ``writer_cap``
  seconds: a writer that pauses mid-file (a slow producer, a stalled network copy) is never cut short by the
  settle time; only a writer silent for this long is presumed done;
- an empty file is taken only after ``writer_cap`` (creating a file and writing it later is common; an empty
  drop is a mistake that can wait).

A producer that writes one file in several opens with pauses longer than the grace should write under a temporary
name (``.name.part``, ``name.tmp``) and rename it when done, the convention every spool folder relies on.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

CLOSE_GRACE_SECONDS = 0.1
WRITER_CAP_SECONDS = 60.0


@dataclass
class Pending:
    """A file seen but not yet complete. ``size``/``mtime_ns`` -1: not stat'ed yet."""

    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0  # monotonic: when size/mtime last changed (or a write event said so)
    writing: bool = False  # a write event and no close_write since: a writer holds it open
    closed_at: float | None = None  # monotonic time of the last close_write, when no write came after it
    next_check: float = 0.0


class SettleTracker:
    """Pending files and the rules above. Times are ``time.monotonic()`` unless named wall."""

    def __init__(self, settle: float, close_grace: float = CLOSE_GRACE_SECONDS,
                 writer_cap: float = WRITER_CAP_SECONDS) -> None:
        self.settle = settle
        self.close_grace = min(close_grace, settle)
        self.writer_cap = max(writer_cap, settle)
        self.pending: dict[Path, Pending] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, path: Path) -> bool:
        return path in self.pending

    def created(self, path: Path, now: float) -> None:
        self.pending.setdefault(path, Pending(stable_since=now, next_check=now))

    def written(self, path: Path, now: float) -> None:
        p = self.pending.setdefault(path, Pending())
        p.size = p.mtime_ns = -1  # the event is the change; the next look notes the new size without a reset
        p.writing, p.closed_at, p.stable_since, p.next_check = True, None, now, now + self.writer_cap

    def closed(self, path: Path, now: float) -> None:
        """A writer closed the file: note its size and mtime as of the close; the grace runs from here."""
        try:
            st = path.lstat()
        except OSError:  # gone, or no longer reachable (its folder became a link loop): not a drop now
            self.pending.pop(path, None)
            return
        p = self.pending.setdefault(path, Pending())
        p.size, p.mtime_ns, p.stable_since = st.st_size, st.st_mtime_ns, now
        p.writing, p.closed_at, p.next_check = False, now, now + self.close_grace

    def seen(self, path: Path, st: os.stat_result, now: float, wall_now: float) -> None:
        """A file found by a scan: quiet since its mtime, as far as the settle time goes."""
        if path in self.pending:
            return
        age = min(max(wall_now - st.st_mtime_ns / 1e9, 0.0), self.settle)
        since = now - age
        self.pending[path] = Pending(st.st_size, st.st_mtime_ns, since, next_check=since + self.settle)

    def forget(self, path: Path) -> None:
        self.pending.pop(path, None)

    def next_deadline(self) -> float | None:
        return min((p.next_check for p in self.pending.values()), default=None)

    def due(self, now: float) -> list[Path]:
        """Pending files that are complete now (removed from pending); vanished or non-regular ones are dropped."""
        ready = []
        for path, p in list(self.pending.items()):
            if p.next_check > now:
                continue
            try:
                st = path.lstat()
            except OSError:  # gone, or its folder became a link loop or unsearchable: not a drop now
                del self.pending[path]
                continue
            if not stat.S_ISREG(st.st_mode):  # a symlink or a folder under a drop's name: never a drop
                del self.pending[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
                if p.size >= 0:  # a change no event told us of (NFS, or a write after the close)
                    p.stable_since = now
                    if p.closed_at is not None:
                        p.closed_at = None  # fall back to the settle time
                p.size, p.mtime_ns = st.st_size, st.st_mtime_ns
            wait = self._wait(p)
            if now >= p.stable_since + wait and (p.closed_at is None or now >= p.closed_at + wait):
                del self.pending[path]
                ready.append(path)
            else:
                p.next_check = max(p.stable_since, p.closed_at or 0.0) + wait
        return ready

    def _wait(self, p: Pending) -> float:
        if p.writing or p.size == 0:
            return self.writer_cap
        if p.closed_at is not None:
            return self.close_grace
        return self.settle
