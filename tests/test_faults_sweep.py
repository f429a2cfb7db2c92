"""The lost-drop sweep (worker/celeryapp/sweep.py): a drop whose message is really gone is sent again by the workers
once, whoever sent it (here plain `feedworker ingest`, which never resends); drops waiting behind a backlog longer
than ``requeue_after_seconds`` are not sent again, neither by the sweep nor by `ingest --wait`."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database
from tests.faults import check_consistent, fault_env, ingest_waiting, ledger, node_name, pong, private_redis
from tests.processes import celery_worker, export, feedworker, wait_for
from tests.test_faults_poison import deliveries, write_drops

pytestmark = pytest.mark.slow

FAST = {"FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "2", "FEEDWORKER_LOST_SWEEP_SECONDS": "1"}


def test_a_lost_message_from_plain_ingest_is_sent_again_once(tmp_path: Path) -> None:
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        write_drops(tmp_path / "drops", 5, "002_lost.txt")
        env = fault_env(broker.url(), store, FAST)
        feedworker(env, "migrate")
        assert json.loads(feedworker(env, "ingest", str(tmp_path / "drops"), "--json").stdout) == {"enqueued": 5}
        assert broker.client().delete("feedworker") == 1  # the message is lost before any worker took it
        stack.enter_context(celery_worker(env, tmp_path, "w1"))
        wait_for(lambda: all(d["state"] == "published" for d in ledger(store)), 30)
        time.sleep(4)  # several more sweeps: none may send it again
        drops, rows, records = ledger(store), deliveries(store), export(env)
    assert sorted(d["attempts"] for d in drops) == [2] * 5  # sent by ingest, then once by the sweep
    assert [r["count"] for r in rows if r["stage"] == "parse"] == [1]  # one batch delivered, once
    assert len(records) == 5
    check_consistent(records, drops)


def test_a_backlog_longer_than_requeue_after_causes_no_resends(tmp_path: Path) -> None:
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        write_drops(tmp_path / "drops", 30, "000_item.txt")
        env = fault_env(broker.url(), store, {**FAST, "FEEDWORKER_WATCH__BATCH_MAX": "1",
                                              "FEEDWORKER_TEST_PARSE_SECONDS": "0.4"})
        feedworker(env, "migrate")
        stack.enter_context(celery_worker(env, tmp_path, "w1", concurrency=1, app="tests.poison_app"))
        wait_for(lambda: pong(broker.url(), node_name("w1")), 30)
        started = time.monotonic()
        ingest = stack.enter_context(ingest_waiting(env, tmp_path / "drops"))  # it requeues stale drops too
        out, err = ingest.communicate(timeout=90)
        took = time.monotonic() - started
        assert ingest.returncode == 0, err[-2000:]
        drops, rows = ledger(store), deliveries(store)
    assert took > 4 * 2, took  # the backlog really outlasted requeue_after_seconds, twice over
    assert json.loads(out) == {"published": 30, "unchanged": 0, "failed": 0}
    assert sorted(d["attempts"] for d in drops) == [1] * 30  # nothing sent again
    parse = [r["count"] for r in rows if r["stage"] == "parse"]
    assert len(parse) == 30 and set(parse) == {1}
