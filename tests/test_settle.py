"""The settle rules on real files, with the clock passed in: when a file written in place counts as complete."""

from __future__ import annotations

import os
import time
from pathlib import Path

from worker.watching.settle import SettleTracker


def test_quiet_for_the_settle_time(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("x")
    t = SettleTracker(settle=1.0)
    t.created(f, now=0.0)
    assert t.due(0.0) == []  # first look: size and mtime noted
    assert t.due(0.9) == []
    assert t.due(1.0) == [f]
    assert f not in t


def test_a_change_restarts_the_clock(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("x")
    t = SettleTracker(settle=1.0)
    t.created(f, now=0.0)
    t.due(0.0)
    f.write_text("xy")  # no event seen (NFS): the stat shows it
    assert t.due(1.0) == []
    assert t.due(1.9) == []
    assert t.due(2.0) == [f]


def test_an_open_writer_is_waited_for_past_the_settle_time(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("half")
    t = SettleTracker(settle=1.0, writer_cap=60.0)
    t.created(f, now=0.0)
    t.written(f, now=0.1)
    assert t.due(5.0) == []  # quiet for 5 s, but the writer has not closed it
    f.write_text("half and the rest")
    t.written(f, now=5.0)
    t.closed(f, now=5.01)
    assert t.due(5.05) == []
    assert t.due(5.12) == [f]  # the close shortens the wait to the grace


def test_a_writer_silent_for_the_cap_is_presumed_done(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("x")
    t = SettleTracker(settle=1.0, writer_cap=10.0)
    t.written(f, now=0.0)
    assert t.due(9.0) == []
    assert t.due(10.5) == [f]


def test_a_reopen_within_the_grace_resets_it(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("a")
    t = SettleTracker(settle=1.0)
    t.written(f, now=0.0)
    t.closed(f, now=0.01)
    t.written(f, now=0.05)  # `>>` right after `>`
    assert t.due(0.2) == []
    t.closed(f, now=0.3)
    assert t.due(0.35) == []
    assert t.due(0.41) == [f]


def test_an_empty_file_waits_for_content(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.touch()
    t = SettleTracker(settle=1.0, writer_cap=30.0)
    t.created(f, now=0.0)
    t.closed(f, now=0.0)
    assert t.due(5.0) == []
    f.write_text("content")
    t.written(f, now=6.0)
    t.closed(f, now=6.0)
    assert t.due(6.2) == [f]


def test_a_scanned_file_counts_its_age(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.txt", tmp_path / "fresh.txt"
    old.write_text("x")
    fresh.write_text("x")
    os.utime(old, (time.time() - 60, time.time() - 60))
    t = SettleTracker(settle=1.0)
    wall = time.time()
    t.seen(old, old.lstat(), now=100.0, wall_now=wall)
    t.seen(fresh, fresh.lstat(), now=100.0, wall_now=wall)
    assert t.due(100.0) == [old]  # quiet since its mtime, long enough ago
    assert t.due(100.5) == []
    assert t.due(101.01) == [fresh]


def test_vanished_and_symlinked_files_are_dropped(tmp_path: Path) -> None:
    gone, link = tmp_path / "gone.txt", tmp_path / "link.txt"
    gone.write_text("x")
    link.symlink_to(gone)
    t = SettleTracker(settle=0.1)
    t.created(gone, now=0.0)
    t.created(link, now=0.0)
    gone.unlink()
    assert t.due(1.0) == []
    assert len(t) == 0
