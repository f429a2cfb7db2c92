"""Fault 2: Redis restarted mid-run, empty (no persistence: every queued message is lost), and unreachable
meanwhile. Workers reconnect by themselves; the ledger still knows every drop that has no outcome, and
`ingest --wait` sends the lost ones again (requeue_stale); nothing is lost, nothing counted twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database
from tests.corpus import write_corpus
from tests.faults import (
    check_answers,
    check_consistent,
    fault_env,
    image_host,
    ledger,
    node_name,
    pong,
    private_redis,
    unacked,
)
from tests.processes import BIN, celery_worker, export, feedworker, wait_for

pytestmark = pytest.mark.slow

FAST = {
    "FEEDWORKER_VISIBILITY_TIMEOUT": "10",
    "FEEDWORKER_TASK_TIME_LIMIT": "8",
    "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "6",
    "FEEDWORKER_WATCH__BATCH_MAX": "1",
    "FEEDWORKER_IMAGES__TIMEOUT_SECONDS": "6",
    "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "5",
}
IDLE_OUTAGES = 3  # Redis restarted under an idle worker (waiting in BRPOP), half a second each
BUSY_OUTAGES = (3.0, 8.0)  # seconds Redis stays down under a busy worker; 8 s: past the soft time limit


def test_redis_restarted_empty_mid_run_loses_nothing(tmp_path: Path) -> None:
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        base = stack.enter_context(image_host(delay=0.5))
        ans = write_corpus(tmp_path / "drops", base, count=30)
        total = len(list((tmp_path / "drops").iterdir()))
        env = fault_env(broker.url(), store, FAST)
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        # An idle worker first (waiting in BRPOP): kombu 5.7 + celery 5.7 made it exit here (worker/kombufix.py).
        for _ in range(IDLE_OUTAGES):
            wait_for(lambda: pong(broker.url(), node_name("w1")), 30)
            broker.kill()
            time.sleep(0.5)
            broker.start()
        wait_for(lambda: pong(broker.url(), node_name("w1")), 30)
        assert worker.poll() is None, "the idle worker exited instead of reconnecting"
        ingest = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(tmp_path / "drops"), "--wait", "--json"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lost = []
        for n, down in enumerate(BUSY_OUTAGES, 1):
            # mid-run: some drops done, and the worker holding tasks right now
            wait_for(lambda n=n: _finished(store) >= n * 8 and unacked(broker) > 0, 60, interval=0.05)
            lost.append(int(broker.client().llen("feedworker")) + unacked(broker))  # messages about to vanish
            broker.kill()
            time.sleep(down)
            broker.start()  # same port, empty
        try:
            out, err = ingest.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            ingest.kill()
            pytest.fail(f"drops still queued 90 s after Redis came back ({ingest.communicate()[1][-500:]})")
        assert ingest.returncode == 0, err[-2000:]
        summary = json.loads(out)
        assert worker.poll() is None, "the worker exited instead of reconnecting"
        records = export(env)
        drops = ledger(store)
    log = (tmp_path / "w1.log").read_text()
    print(f"messages lost with Redis: {lost}; summary {summary}")
    # A late soft time limit (results unread while reconnecting) must not kill an idle pool process (softlimit.py)
    assert "error: SoftTimeLimitExceeded" not in log and "Unrecoverable error" not in log
    assert sum(lost) > 0, lost  # the restarts really lost work...
    assert max(d["attempts"] for d in drops) > 1  # ...which the ledger sent again
    assert len(drops) == total and sum(summary.values()) == total
    assert summary["failed"] == len(ans.refused)
    assert summary["published"] >= len(ans.titles)  # a drop delivered twice still counts as published once
    check_answers(records, ans)
    check_consistent(records, drops)


def _finished(store: str) -> int:
    return sum(1 for d in ledger(store) if d["state"] != "queued")
