"""The batching policy (worker/watching/batcher.py) with plain numbers: no inotify, no broker, no clock.

Times here are milliseconds (the Batcher only compares and adds them), so every boundary is exact. Each case is a
script of events and the decision expected after it; the burst test replays the watcher's loop against a queue
that only fills (no worker) and checks the exact batches the back-pressure rule makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker.watching.batcher import Batch, Batcher, Pause

WINDOW, HOLD, MAX = 100.0, 250.0, 3

# (op, time, argument). ready: names joining (in order); gone: a name deleted; behind: the queue's answer;
# probe?: wants_probe's answer; due / force: the batches sent (names, space-separated; "*" marks a retry);
# deadline: next_deadline's answer; fail: the last due's batches are handed back.
Step = tuple[str, float, Any]

CASES: dict[str, list[Step]] = {
    "nothing ready: nothing to do, no deadline": [
        ("probe?", 0, False), ("due", 0, []), ("deadline", 0, None), ("force", 0, [])],
    "nagle: a file after a quiet window goes at once": [
        ("ready", 1000, "a"), ("deadline", 1000, 1000), ("probe?", 1000, True), ("due", 1000, ["a"])],
    "nagle: unasked, the probe counts as 'not behind'": [
        ("ready", 1000, "a"), ("due", 1000, ["a"])],
    "followers wait for their own window to end": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]),
        ("ready", 1050, "b"), ("due", 1050, []), ("ready", 1080, "c"), ("deadline", 1080, 1150),
        ("probe?", 1149, False), ("due", 1149, []), ("probe?", 1150, True), ("due", 1150, ["b c"])],
    "quiet exactly one window after a send counts as quiet": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("ready", 1100, "b"), ("due", 1100, ["b"])],
    "one instant short of a quiet window waits a window": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("ready", 1099, "b"), ("due", 1100, []),
        ("deadline", 1100, 1199), ("due", 1199, ["b"])],
    "full: batch_max files go at once, without asking the queue": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("ready", 1010, "b c"), ("due", 1010, []),
        ("ready", 1020, "d"), ("deadline", 1020, 1020), ("probe?", 1020, False), ("due", 1020, ["b c d"])],
    "split: more than batch_max go as several batches, in order": [
        ("ready", 1000, "a b c d e f g"), ("due", 1000, ["a b c", "d e f", "g"]), ("deadline", 1000, None)],
    "force (stopping) sends everything, split, window or not": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("ready", 1010, "b c d e"), ("force", 1010, ["b c d", "e"])],
    "a file ready twice keeps its first place": [
        ("ready", 1000, "a b a"), ("due", 1000, ["a b"])],
    "behind: held, asked again every window, sent once hold_max has passed": [
        ("ready", 1000, "a"), ("probe?", 1000, True), ("behind", 1000, True), ("due", 1000, []),
        ("deadline", 1000, 1100), ("probe?", 1050, False), ("ready", 1050, "b"), ("due", 1050, []),
        ("probe?", 1100, True), ("behind", 1100, True), ("due", 1100, []),
        ("probe?", 1200, True), ("behind", 1200, True), ("deadline", 1200, 1300),
        ("probe?", 1250, False), ("due", 1250, []),  # hold_max has passed, but the next look is at 1300
        ("probe?", 1300, False), ("due", 1300, ["a b"])],
    "hold_max is measured from the first file, and ends exactly there": [
        ("ready", 1000, "a"), ("behind", 1000, True), ("ready", 1100, "b"), ("behind", 1150, True),
        ("probe?", 1249, False), ("due", 1249, []), ("probe?", 1250, False), ("due", 1250, ["a b"])],
    "behind, then caught up: sent at the next look": [
        ("ready", 1000, "a"), ("behind", 1000, True), ("due", 1000, []),
        ("probe?", 1100, True), ("behind", 1100, False), ("due", 1100, ["a"])],
    "a hold never delays a full batch": [
        ("ready", 1000, "a"), ("behind", 1000, True), ("ready", 1010, "b c"), ("deadline", 1010, 1010),
        ("due", 1010, ["a b c"])],
    "after a held batch goes full, the next one follows the window rules": [
        ("ready", 1000, "a b"), ("behind", 1000, True), ("ready", 1010, "c"), ("due", 1010, ["a b c"]),
        ("ready", 1110, "d"), ("probe?", 1110, True), ("due", 1110, ["d"])],
    "a hold ends with its batch: the next file is not held by it": [
        ("ready", 1000, "a"), ("behind", 1000, True), ("gone", 1005, "a"), ("ready", 1010, "b"),
        ("deadline", 1010, 1010), ("probe?", 1010, True), ("due", 1010, ["b"])],
    "an answer with nothing gathered changes nothing": [
        ("behind", 1000, True), ("ready", 1000, "a"), ("due", 1000, ["a"])],
    "a deleted file leaves the batch": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("ready", 1010, "b c"), ("gone", 1020, "b"),
        ("due", 1110, ["c"])],
    "the last file deleted: no deadline left, the next file starts its own window": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("ready", 1010, "b"), ("gone", 1020, "b"),
        ("deadline", 1020, None), ("ready", 1150, "c"), ("due", 1150, ["c"])],
    "a failed send comes back first, marked, before the gathered batch": [
        ("ready", 1000, "a b c d"), ("due", 1000, ["a b c", "d"]), ("fail", 1000, None),
        ("deadline", 1001, 1001), ("ready", 1500, "e"), ("due", 1500, ["*a b c", "*d", "e"])],
    "a failed retry comes back again; the gathered batch keeps its window": [
        ("ready", 1000, "a"), ("due", 1000, ["a"]), ("fail", 1000, None), ("ready", 1010, "b"),
        ("due", 1020, ["*a"]), ("fail", 1020, None), ("due", 1030, ["*a"]), ("due", 1110, ["b"])],
}


def _names(batches: list[Batch]) -> list[str]:
    return [("*" if b.retry else "") + " ".join(p.name for p in b.paths) for b in batches]


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_batching_rules(steps: list[Step]) -> None:
    b = Batcher(batch_max=MAX, window=WINDOW, hold_max=HOLD)
    last: list[Batch] = []
    for i, (op, t, arg) in enumerate(steps):
        where = f"step {i}: {op} at {t}"
        if op == "ready":
            for name in arg.split():
                b.ready(Path(name), t)
        elif op == "gone":
            b.discard(Path(arg))
        elif op == "behind":
            b.workers_behind(arg, t)
        elif op == "probe?":
            assert b.wants_probe(t) is arg, where
        elif op in ("due", "force"):
            last = b.due(t, force=op == "force")
            assert _names(last) == arg, where
        elif op == "fail":
            b.failed(last)
        elif op == "deadline":
            assert b.next_deadline(t) == arg, where
        else:
            raise AssertionError(f"unknown op {op}")


def test_membership_and_retrying() -> None:
    b = Batcher(batch_max=2, window=WINDOW, hold_max=HOLD)
    b.ready(Path("a"), 0)
    b.ready(Path("b"), 0)
    b.ready(Path("c"), 0)
    assert len(b) == 3 and Path("a") in b and Path("z") not in b
    sent = b.due(0)
    assert len(b) == 0 and Path("a") not in b
    b.failed(sent)
    assert b.retrying == [Path("a"), Path("b"), Path("c")]
    assert Path("a") not in b  # the gathered batch only: batches to send again are not in it
    assert [batch.retry for batch in b.due(0)] == [True, True] and b.retrying == []


def test_batch_max_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_max"):
        Batcher(batch_max=0, window=WINDOW)


def _burst(files: int, every: float, behind_at: int, window: float, hold: float) -> list[list[int]]:
    """The watcher's loop, replayed: a file is ready every ``every`` ms, the loop turns at each arrival and at the
    batcher's deadline, asks the queue when told to, and no worker takes anything (each batch sent is one more
    message waiting). Returns the batches sent, as file numbers."""
    b = Batcher(batch_max=100, window=window, hold_max=hold)
    arrivals = [(i * every, i) for i in range(files)]
    sent: list[list[int]] = []
    t = 0.0
    while True:
        while arrivals and arrivals[0][0] <= t:
            b.ready(Path(str(arrivals.pop(0)[1])), t)
        if b.wants_probe(t):
            b.workers_behind(len(sent) >= behind_at, t)
        sent.extend([int(p.name) for p in batch.paths] for batch in b.due(t))
        deadline = b.next_deadline(t)
        assert deadline is None or deadline > t, f"a deadline that has passed at {t}: the loop would spin"
        wakes = [x for x in (deadline, arrivals[0][0] if arrivals else None) if x is not None]
        if not wakes:
            return sent
        t = min(wakes)


def test_a_burst_while_the_workers_are_behind_makes_exactly_these_batches() -> None:
    """30 files 30 ms apart, a 10 ms window, no worker (tests/test_watcher.py runs the same on a real folder and
    Redis): the first four go alone (Nagle: each follows a quiet window); with four messages waiting, each next
    batch is held 250 ms from its first file, looking at the queue every window, and gathers what arrives."""
    batches = _burst(files=30, every=30, behind_at=4, window=10, hold=250)
    assert batches == [[0], [1], [2], [3], list(range(4, 13)), list(range(13, 22)), list(range(22, 30))]


@pytest.mark.parametrize(("behind_at", "chains"), [(0, 4), (1, 5), (4, 7), (30, 30)])
def test_the_queue_depth_that_counts_as_behind_sets_the_number_of_chains(behind_at: int, chains: int) -> None:
    assert len(_burst(files=30, every=30, behind_at=behind_at, window=10, hold=250)) == chains


PAUSE_CASES: dict[str, tuple[list[tuple[str, float]], list[object]]] = {
    "the first error begins an outage, the next ones don't": (
        [("failed", 10.0), ("failed", 11.0)], [True, False]),
    "paused for retry_after after each error": (
        [("failed", 10.0), ("active", 10.99), ("active", 11.0), ("failed", 11.5), ("active", 12.4)],
        [True, True, False, False, True]),
    "a success ends the outage, once": (
        [("succeeded", 0), ("failed", 10.0), ("succeeded", 0), ("succeeded", 0), ("failed", 20.0)],
        [False, True, True, False, True]),
    "never failed: never paused": ([("active", 0.0), ("active", -1e9)], [False, False]),
}


@pytest.mark.parametrize(("steps", "expected"), PAUSE_CASES.values(), ids=PAUSE_CASES.keys())
def test_pause_after_errors(steps: list[tuple[str, float]], expected: list[object]) -> None:
    pause = Pause(retry_after=1.0)
    got: list[object] = []
    for op, t in steps:
        if op == "failed":
            got.append(pause.failed(t))
        elif op == "succeeded":
            got.append(pause.succeeded())
        else:
            got.append(pause.active(t))
    assert got == expected
