"""The watcher's inotify events: watchdog's observer on the drop folder, its events handed to the loop's queue.

watchdog pairs a rename's two inotify events (IN_MOVED_FROM, IN_MOVED_TO) by holding every IN_MOVED_FROM for
``InotifyMoveEventGrouper.delay`` (0.5 s) in a queue that is read in order, and its reader sleeps out that delay
even when the pair has arrived meanwhile. So one file renamed out of the folder, or into a folder the watch does
not cover (the watcher's own put-away into ``processed/`` is one, twice a second), held back every event behind
it for half a second: live drops waited up to 500 ms before the loop even heard of them (bench/backfill_live.py,
bench/live.py: p99 ~500 ms with or without a backfill).

The watcher needs no pairing: a move with its source alone means "gone", with its destination alone "complete
here" (``generate_full_events`` gives both as ``FileMovedEvent`` with an empty other side), and a pair means both.
So the delay is set to 0: an IN_MOVED_FROM goes out as soon as it is read, paired if its IN_MOVED_TO was read
with it. That is a class attribute of watchdog's (``delay``, documented on the class), set once for this process,
whose only inotify user is the watcher; ``tests/test_events.py`` shows the stall without it.
"""

from __future__ import annotations

import queue
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

MOVE_PAIRING_DELAY = 0.0  # seconds watchdog holds a rename's first half (its default: 0.5)


class _ToQueue(FileSystemEventHandler):
    """watchdog's thread hands events to the loop's thread."""

    def __init__(self, events: queue.Queue[FileSystemEvent]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events.put(event)


def observe(root: Path, recursive: bool, events: queue.Queue[FileSystemEvent]) -> InotifyObserver:
    """Start watching ``root``: file events go to ``events``. Symlinked folders are not followed."""
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_DELAY
    observer = InotifyObserver(timeout=0.1, generate_full_events=True)  # full: a move in from outside is a move
    observer.schedule(_ToQueue(events), str(root), recursive=recursive, follow_symlink=False,
                      event_filter=[FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
                                    FileDeletedEvent])
    observer.start()
    return observer
