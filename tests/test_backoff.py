"""The restart backoff `feedworker run` uses for its children and its watcher thread (worker/running/supervisor.py)."""

from __future__ import annotations

from worker.running.supervisor import BACKOFF_FIRST, BACKOFF_MAX, Backoff


def test_doubles_to_its_cap_and_resets() -> None:
    b = Backoff()
    delays = [b.next() for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert (BACKOFF_FIRST, BACKOFF_MAX) == (1.0, 30.0)
    b.reset()
    assert b.next() == BACKOFF_FIRST
