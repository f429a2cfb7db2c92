"""Fault 2: Redis restarted mid-run, empty (no persistence: every queued message is lost), and unreachable
meanwhile. Workers reconnect by themselves; the ledger still knows every drop that has no outcome, and
`ingest --wait` sends the lost ones again (requeue_stale); nothing is lost, nothing counted twice.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.corpus import write_corpus
from tests.faults import (
    FAST,
    check_landed,
    fault_env,
    ingest_summary,
    ingest_waiting,
    ledger,
    node_name,
    pong,
    redis_pg_images,
    unacked,
)
from tests.processes import celery_worker, export, feedworker, wait_for

pytestmark = pytest.mark.slow

OUTAGES = (1.0, 3.0)  # seconds Redis stays down, each time under a busy worker, restarted empty


def test_redis_restarted_empty_mid_run_loses_nothing(tmp_path: Path) -> None:
    with ExitStack() as stack:
        broker, store, base = redis_pg_images(stack, tmp_path, delay=0.5)
        ans = write_corpus(tmp_path / "drops", base, count=30)
        total = len(list((tmp_path / "drops").iterdir()))
        # the ledger's requeue on (5 s): `ingest --wait` sends again what Redis lost
        env = fault_env(broker.url(), store, {**FAST, "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "5"})
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        wait_for(lambda: pong(broker.url(), node_name("w1")), 30)
        ingest = stack.enter_context(ingest_waiting(env, tmp_path / "drops"))
        lost = []
        for down in OUTAGES:
            wait_for(lambda: worker.poll() is not None or unacked(broker) > 0, 60, interval=0.05)  # busy now
            assert worker.poll() is None, "the worker exited instead of reconnecting"
            lost.append(int(broker.client().llen("feedworker")) + unacked(broker))  # messages about to vanish
            broker.kill()
            time.sleep(down)
            broker.start()  # same port, empty
            time.sleep(1.5)
        summary, _ = ingest_summary(ingest, 90, "Redis came back")
        assert worker.poll() is None, "the worker exited instead of reconnecting"
        records = export(env)
        drops = ledger(store)
    log = (tmp_path / "w1.log").read_text()
    print(f"messages lost with Redis: {lost}; summary {summary}")
    # A late soft time limit (results unread while reconnecting) must not kill an idle pool process (softlimit.py)
    assert "error: SoftTimeLimitExceeded" not in log and "Unrecoverable error" not in log
    assert sum(lost) > 0, lost  # the restarts really lost work...
    assert max(d["attempts"] for d in drops) > 1  # ...which the ledger sent again
    check_landed(summary, records, drops, ans, total)



def test_worker_with_a_task_in_flight_survives_redis_going_away(tmp_path: Path) -> None:
    """The moments that made a worker exit instead of reconnecting, made on purpose: one pool process running a
    task, the other waiting for work (BRPOP), and Redis gone; first briefly (worker/celeryapp/patches/kombufix.py),
    then for longer than the soft time limit while the task's result waits to be read (patches/softlimit.py)."""
    with ExitStack() as stack:
        broker, store, base = redis_pg_images(stack, tmp_path, delay=1.5)  # a task runs ~1.5 s: ends with Redis down
        env = fault_env(broker.url(), store, {**FAST, "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "3",
                                              "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "3",
                                              "FEEDWORKER_TASK_TIME_LIMIT": "5"})
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        for n, down in enumerate((2.0, 4.5)):  # kombu retries at 2, 6, 12 s: 4.5 s down is 6 s unread
            wait_for(lambda: pong(broker.url(), node_name("w1")), 30)
            folder = tmp_path / f"drops{n}"
            folder.mkdir()
            (folder / "one.txt").write_text(f"---\ntitle: One {n}\nwebUrl: https://one.test/{n}\n"
                                            f"images: [{{url: '{base}/ok/10/10/{n}.png'}}]\n---\n")
            ingest = stack.enter_context(ingest_waiting(env, folder))
            wait_for(lambda: unacked(broker) > 0, 20, interval=0.02)
            time.sleep(0.3)  # the task is running; the other pool process waits for work
            broker.kill()
            time.sleep(down)
            broker.start()
            wait_for(lambda: worker.poll() is not None or pong(broker.url(), node_name("w1")), 30)
            assert worker.poll() is None, f"the worker exited after Redis was down {down:.0f} s"
            out, err = ingest.communicate(timeout=60)  # its drop, lost with Redis, is sent again and lands
            assert json.loads(out)["published"] == 1, err[-1000:]
        titles = {r["title"] for r in export(env)}
    log = (tmp_path / "w1.log").read_text()
    assert "error: SoftTimeLimitExceeded" not in log and "Unrecoverable error" not in log
    assert titles == {"One 0", "One 1"}


