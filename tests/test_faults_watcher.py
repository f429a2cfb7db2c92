"""Fault 4: the watcher SIGKILLed in the middle of taking a backlog, files dropped while it is down, then it is
started again. The ledger and the start scan pick up exactly the drops not yet done: each file is one ledger
row, one outcome and one move; drops registered but not sent when it died are sent by the lost-task requeue.
"""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database
from tests.corpus import write_corpus
from tests.faults import check_answers, check_consistent, fault_env, ledger, private_redis, redis_pg_images
from tests.processes import celery_worker, export, feedworker, wait_for, watch_process

pytestmark = pytest.mark.slow

SETTINGS = {
    "FEEDWORKER_WATCH__BATCH_MAX": "5",  # many small batches: the kill lands between two of them
    "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "5",
    "FEEDWORKER_VISIBILITY_TIMEOUT": "10",
    "FEEDWORKER_TASK_TIME_LIMIT": "8",
    "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "6",
}
BACKLOG = 300
LATE = 20  # dropped while the watcher is down


def test_watcher_killed_mid_backlog_and_restarted(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    with ExitStack() as stack:
        broker, store, base = redis_pg_images(stack, tmp_path)
        ans = write_corpus(drops, base, count=BACKLOG - 4)  # + a duplicate, an update and two refusals
        env = fault_env(broker.url(), store, SETTINGS)
        feedworker(env, "migrate")
        stack.enter_context(celery_worker(env, tmp_path, "w1"))
        watcher = watch_process(env, drops, tmp_path / "watch.log")
        stack.callback(_kill, watcher)  # a failed test leaves no watcher behind
        registered = wait_for(lambda: (n := len(ledger(store))) >= BACKLOG // 5 and n, 60, interval=0.02)
        watcher.send_signal(signal.SIGKILL)
        watcher.wait()
        at_kill = len(ledger(store))
        for i in range(LATE):
            (drops / f"late_{i}.txt").write_text(f"---\ntitle: Late {i}\nwebUrl: https://late.test/{i}\n---\n")
        watcher = watch_process(env, drops, tmp_path / "watch.log")
        try:
            wait_for(lambda: _settled(drops, store, BACKLOG + LATE), 90)
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(30)
        records = export(env)
        rows = ledger(store)
    print(f"watcher killed with {registered}..{at_kill} of {BACKLOG} drops registered")
    assert at_kill < BACKLOG, "the kill came after the whole backlog was taken"
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)) == BACKLOG + LATE  # each file one drop, none lost, none twice
    assert {r["name"] for r in rows if r["state"] == "failed"} == set(ans.refused)
    check_answers([r for r in records if not r["url"].startswith("https://late.test/")], ans)
    assert {r["title"] for r in records if r["url"].startswith("https://late.test/")} == {
        f"Late {i}" for i in range(LATE)}
    check_consistent(records, rows)
    processed = [p.name for p in (drops / "processed").rglob("*") if p.is_file()]
    failed = sorted(p.name for p in (drops / "failed").iterdir())
    assert sorted(processed) == sorted(r["name"] for r in rows if r["state"] != "failed")  # each moved once
    assert failed == sorted([*ans.refused, *(f"{n}.error.json" for n in ans.refused)])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _settled(drops: Path, store: str, total: int) -> bool:
    """Every file has an outcome and has been put away (nothing left at the top of the folder)."""
    rows = ledger(store)
    left = [p for p in drops.iterdir() if p.is_file()]
    return len(rows) == total and all(r["state"] != "queued" for r in rows) and not left


def test_watcher_takes_drops_made_while_redis_is_down(tmp_path: Path) -> None:
    """Fault 2 for the watcher: Redis killed (restarted empty 3 s later) while files keep arriving. The watcher
    keeps taking them, sends them once the broker is back; workers reconnect; every drop lands once."""
    drops = tmp_path / "drops"
    drops.mkdir()
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        env = fault_env(broker.url(), store, SETTINGS)
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        watcher = watch_process(env, drops, tmp_path / "watch.log")
        try:
            for i in range(30):
                if i == 10:
                    broker.kill()
                if i == 20:
                    broker.start()  # empty: what was queued is gone
                part = drops / f".drop_{i}.part"
                part.write_text(f"---\ntitle: During {i}\nwebUrl: https://during.test/{i}\n---\n")
                part.rename(drops / f"drop_{i}.txt")
                time.sleep(0.3)
            wait_for(lambda: _settled(drops, store, 30), 60)
            assert watcher.poll() is None and worker.poll() is None
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(30)
        records = export(env)
        rows = ledger(store)
    assert len(rows) == 30 and {r["state"] for r in rows} == {"published"}
    assert sorted(r["title"] for r in records) == sorted(f"During {i}" for i in range(30))
