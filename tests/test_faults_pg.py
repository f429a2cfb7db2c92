"""Fault 3: PostgreSQL unreachable for 30 s in the middle of a run (a proxy in front of it stops forwarding and
resets every open connection). Each publish retries its transaction, then the task retries with backoff and
jitter until the store is back; every drop lands once, the worker log says what happened.

The ledger's own requeue is off here (600 s), so only the publish task's retries can save the drops: with
``autoretry_for`` removed from the publish task this test fails.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text

from tests.conftest import fresh_pg_database
from tests.corpus import write_corpus
from tests.faults import (
    FAST,
    check_landed,
    fault_broker,
    fault_env,
    image_host,
    ingest_summary,
    ingest_waiting,
    ledger,
    tcp_proxy,
    via_proxy,
)
from tests.processes import celery_worker, export, feedworker, wait_for

pytestmark = pytest.mark.slow

OUTAGE = 30.0
SETTINGS = {  # the ledger's safety net off (FAST): the retries must do it
    **FAST,
    # above the publish task's longest retry pause (20 s): a retry waiting for its ETA is not delivered twice
    "FEEDWORKER_VISIBILITY_TIMEOUT": "25",
    "FEEDWORKER_TASK_TIME_LIMIT": "20",
    "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "15",
}


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])  # on RabbitMQ the retries' countdowns wait in the broker
def test_postgres_down_30s_mid_run_loses_and_duplicates_nothing(tmp_path: Path, kind: str) -> None:
    with ExitStack() as stack:
        broker = stack.enter_context(fault_broker(kind, tmp_path / "redis"))
        direct = stack.enter_context(fresh_pg_database())
        proxy = stack.enter_context(tcp_proxy("127.0.0.1", 5432))
        store = via_proxy(direct, proxy)
        base = stack.enter_context(image_host(delay=0.3))
        ans = write_corpus(tmp_path / "drops", base, count=40)
        total = len(list((tmp_path / "drops").iterdir()))
        env = fault_env(broker, store, SETTINGS)
        feedworker(env, "migrate")
        worker = stack.enter_context(celery_worker(env, tmp_path, "w1"))
        ingest = stack.enter_context(ingest_waiting(env, tmp_path / "drops"))
        # The first outcome, then the cut at once: outcomes can land many at a time (a trigger at 6 done once
        # found all 44 done, with the publishes queued behind the parses), so the earliest sign is the one to
        # take. One connection, polled every 10 ms.
        engine = create_engine(direct)
        try:
            with engine.connect() as conn:
                wait_for(lambda: _finished_now(conn) >= 1, 60, interval=0.01)
        finally:
            engine.dispose()
        proxy.cut()  # PostgreSQL is gone for everyone: workers, ingest --wait
        cut_at = _finished(direct)
        time.sleep(OUTAGE)
        during = _finished(direct)
        proxy.restore()
        summary, err = ingest_summary(ingest, 90, "PostgreSQL came back")
        assert worker.poll() is None
        records = export(env)
        drops = ledger(direct)
    log = (tmp_path / "w1.log").read_text()
    print(f"finished when cut {cut_at}, after {OUTAGE:.0f} s down {during}; summary {summary}")
    assert cut_at < total, "every drop had finished before the cut: the outage tested nothing"
    assert during == cut_at  # nothing was written while it was down...
    check_landed(summary, records, drops, ans, total)  # ...and everything after, once
    assert "store: transient error, retrying" in log  # the worker log says what happened
    assert "store unreachable, still waiting" in err  # and so does ingest --wait


def _finished(store: str) -> int:
    engine = create_engine(store)
    try:
        with engine.connect() as conn:
            return _finished_now(conn)
    finally:
        engine.dispose()


def _finished_now(conn: Connection) -> int:
    conn.rollback()  # a fresh snapshot each look
    return int(conn.execute(text("SELECT count(*) FROM drops WHERE state <> 'queued'")).scalar_one())
