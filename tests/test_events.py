"""The watcher's inotify events (worker/watching/events.py): a file renamed out of the drop folder must not hold
back the events behind it. watchdog holds a rename's first half for ``InotifyMoveEventGrouper.delay`` and its
reader sleeps that out in order; the watcher sets the delay to 0. Shown with a 6 s delay, twice the 3 s the tests
wait, so that neither outcome depends on how busy the machine is: with it, a file renamed in after one renamed
out is not heard of for 6 s; without it, at once (milliseconds; here: within 3 s)."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest
from watchdog.events import EVENT_TYPE_MOVED, FileSystemEvent
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from worker.watching import events as events_module
from worker.watching.events import observe

STALL = 6.0  # seconds: a pairing delay no busy machine could be mistaken for
WAIT = 3.0  # seconds the tests wait for the event


def _moved_in(events: queue.Queue[FileSystemEvent], name: str, within: float) -> FileSystemEvent | None:
    """The move event whose destination is ``name``, if it comes within ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            return None
        if event.event_type == EVENT_TYPE_MOVED and os.fsdecode(event.dest_path).endswith(os.sep + name):
            return event
    return None


def _rename_out_then_in(tmp_path: Path) -> tuple[Path, Path]:
    drops, elsewhere = tmp_path / "drops", tmp_path / "elsewhere"
    drops.mkdir()
    elsewhere.mkdir()
    (drops / "leaving.txt").write_text("x")
    (drops / ".arriving.txt.part").write_text("y")
    return drops, elsewhere


def _run(tmp_path: Path) -> FileSystemEvent | None:
    drops, elsewhere = _rename_out_then_in(tmp_path)
    events: queue.Queue[FileSystemEvent] = queue.Queue()
    observer = observe(drops, False, events)
    try:
        os.rename(drops / "leaving.txt", elsewhere / "leaving.txt")  # IN_MOVED_FROM with no pair, ever
        os.rename(drops / ".arriving.txt.part", drops / "arriving.txt")
        return _moved_in(events, "arriving.txt", within=WAIT)
    finally:
        observer.stop()
        observer.join(5)


def test_a_file_renamed_out_holds_back_no_event_behind_it(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InotifyMoveEventGrouper, "delay", STALL)  # restored after; observe() sets the real one
    event = _run(tmp_path)
    assert event is not None, "the file renamed in was held back behind the one renamed out"
    assert InotifyMoveEventGrouper.delay == events_module.MOVE_PAIRING_DELAY == 0


def test_with_watchdogs_pairing_delay_it_would_be_held_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the test above guards against: the same renames with a pairing delay, and the second is not heard of
    until the delay has passed."""
    monkeypatch.setattr(InotifyMoveEventGrouper, "delay", STALL)
    monkeypatch.setattr(events_module, "MOVE_PAIRING_DELAY", STALL)
    assert _run(tmp_path) is None
