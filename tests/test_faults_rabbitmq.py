"""Fault 2 on RabbitMQ: the broker goes away under a busy worker, twice (1 s, then 5 s: longer than the soft
time limit, while a finished task's result waits to be read). Everything reaches the broker through a TCP proxy
that is cut (every connection reset, then refused) and restored: what a worker sees of a broker restart or a
network cut. The shared RabbitMQ server itself is never restarted (other test runs use it); its queues are
durable quorum queues, which a real restart keeps too.

The ledger's requeue is off (600 s): only RabbitMQ can bring the work back. It does: messages waiting stay in
the queue, and those a cut-off worker held are handed back when its connection closes (the worker's late
acknowledgement fails, so such a task runs twice; publishing is idempotent). 0 lost, 0 counted twice.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database, fresh_vhost
from tests.corpus import write_corpus
from tests.faults import (
    active_tasks,
    check_landed,
    fault_env,
    image_host,
    ingest_summary,
    ingest_waiting,
    ledger,
    node_name,
    pong,
    tcp_proxy,
    via_proxy,
)
from tests.processes import celery_worker, export, feedworker, wait_for

pytestmark = pytest.mark.slow

FAST = {
    "FEEDWORKER_TASK_TIME_LIMIT": "6",
    "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "4",
    "FEEDWORKER_WATCH__BATCH_MAX": "1",
    "FEEDWORKER_IMAGES__TIMEOUT_SECONDS": "3",
    "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "600",  # the ledger's safety net off: RabbitMQ must keep it all
}
OUTAGES = (1.0, 5.0)  # seconds the broker stays unreachable, each time under a busy worker


def test_rabbitmq_cut_off_mid_run_loses_nothing(tmp_path: Path) -> None:
    with ExitStack() as stack:
        direct = stack.enter_context(fresh_vhost())
        proxy = stack.enter_context(tcp_proxy("127.0.0.1", 5672))
        broker = via_proxy(direct, proxy)
        store = stack.enter_context(fresh_pg_database())
        base = stack.enter_context(image_host(delay=0.5))  # a task runs ~0.5-1 s: it ends while the broker is away
        ans = write_corpus(tmp_path / "drops", base, count=30)
        total = len(list((tmp_path / "drops").iterdir()))
        env = fault_env(broker, store, FAST)
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        wait_for(lambda: pong(direct, node_name("w1")), 30)
        ingest = stack.enter_context(ingest_waiting(env, tmp_path / "drops"))
        wait_for(lambda: len(ledger(store)) == total, 30)  # every drop registered (and sent) before a cut
        held = []
        for down in OUTAGES:
            running = wait_for(lambda: worker.poll() is not None or active_tasks(direct, node_name("w1")), 60,
                               interval=0.05)
            assert worker.poll() is None, "the worker exited instead of reconnecting"
            held.append(len(running))  # what was running just now: asking again would take a round trip of its own
            proxy.cut()
            time.sleep(down)
            proxy.restore()
            wait_for(lambda: worker.poll() is not None or pong(direct, node_name("w1")), 60)
        summary, _ = ingest_summary(ingest, 120, "the broker came back")
        assert worker.poll() is None, "the worker exited instead of reconnecting"
        records = export(env)
        drops = ledger(store)
    log = (tmp_path / "w1.log").read_text()
    print(f"tasks running at each cut: {held}; summary {summary}")
    assert all(held), held  # each cut hit a task in flight
    assert log.count("Connection to broker lost") >= len(OUTAGES)  # each cut really cut the worker off
    assert "error: SoftTimeLimitExceeded" not in log and "Unrecoverable error" not in log
    assert max(d["attempts"] for d in drops) == 1  # nothing was sent again by the ledger: RabbitMQ kept it all
    check_landed(summary, records, drops, ans, total)
