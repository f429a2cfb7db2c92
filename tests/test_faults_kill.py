"""Fault 1: workers SIGKILLed in the middle of batches. Every task they held comes back (acks_late,
reject_on_worker_lost, the visibility timeout and kombu's restore sweep) and every drop lands exactly once.

The ledger's own requeue is switched off here (requeue after 600 s), so only the broker's redelivery can save
the killed tasks: with acks_late off, reject_on_worker_lost off or a long visibility timeout this test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.changecheck import check_changes, read_changes
from tests.conftest import fresh_pg_database
from tests.corpus import write_corpus
from tests.faults import (
    active_tasks,
    check_answers,
    check_consistent,
    fault_env,
    image_host,
    ingest_waiting,
    kill_tree,
    ledger,
    node_name,
    private_redis,
)
from tests.processes import celery_worker, export, feedworker, wait_for

pytestmark = pytest.mark.slow

FAST = {
    "FEEDWORKER_VISIBILITY_TIMEOUT": "10",
    "FEEDWORKER_TASK_TIME_LIMIT": "8",
    "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "6",
    "FEEDWORKER_WATCH__BATCH_MAX": "1",
    "FEEDWORKER_IMAGES__TIMEOUT_SECONDS": "6",  # above the image host's delay: a slow answer is still an answer
    "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "600",  # the ledger's safety net off: the broker must redeliver
}
VICTIM_KILLS = 3


def test_sigkill_mid_batch_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        base = stack.enter_context(image_host(delay=1.0))  # each batch spends ~1 s checking images
        ans = write_corpus(tmp_path / "drops", base, count=40)
        env = fault_env(broker.url(), store, FAST)
        feedworker(env, "migrate")
        steady = stack.enter_context(celery_worker(env, tmp_path, "steady", concurrency=1))
        victim = stack.enter_context(celery_worker(env, tmp_path, "victim0"))
        ingest = stack.enter_context(ingest_waiting(env, tmp_path / "drops"))
        caught: list[int] = []
        for round_ in range(1, VICTIM_KILLS + 1):
            held = wait_for(lambda n=round_ - 1: active_tasks(broker.url(), node_name(f"victim{n}")), 30)
            kill_tree(victim)  # the worker and its pool, mid-task: its messages stay unacknowledged in Redis
            caught.append(len(held))
            victim = stack.enter_context(celery_worker(env, tmp_path, f"victim{round_}"))
        # A pool child alone, killed mid-task: its task is rejected and requeued at once (reject_on_worker_lost).
        held = wait_for(lambda: active_tasks(broker.url(), node_name("steady")), 30)
        os.kill(held[0]["worker_pid"], signal.SIGKILL)
        caught.append(len(held))
        try:
            out, err = ingest.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            ingest.kill()
            pytest.fail(f"drops still queued 90 s after the kills: killed tasks were not redelivered "
                        f"({ingest.communicate()[1][-500:]})")
        assert ingest.returncode == 0, err[-2000:]
        summary = json.loads(out)
        records = export(env)
        drops = ledger(store)
        changes = read_changes(env)
        assert steady.poll() is None
    print(f"kills caught {caught} tasks in flight; summary {summary}")
    assert all(caught) and sum(caught) >= VICTIM_KILLS + 1, caught  # every kill hit a task in flight
    total = len(list((tmp_path / "drops").iterdir()))
    assert len(drops) == total
    assert sum(summary.values()) == total  # each drop counted once, though some ran twice
    assert summary["failed"] == len(ans.refused)
    assert summary["published"] >= len(ans.titles)  # a drop delivered twice still counts as published once
    check_answers(records, ans)
    check_consistent(records, drops)
    assert {d["name"] for d in drops if d["state"] == "failed"} == set(ans.refused)
    check_changes(changes, records)  # the change log: no version logged twice or lost by the killed publishes
