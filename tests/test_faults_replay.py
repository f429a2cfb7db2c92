"""`feedworker replay` after an outage-like failure, and fault 5's vanished file.

PostgreSQL refuses one record (a trigger stands in for what an operator sees during maintenance: "tablespace is
read-only"): that drop alone fails, stage publish, with the store's words; its batch-mates land. Its file is
then deleted: a replay fails it again, stage read, "the file vanished" (a clear error, once: no loop). The file
comes back and the store is fixed: a replay publishes it and it leaves the failures list.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.corpus import write_corpus
from tests.faults import check_answers, fault_env, ledger, redis_pg_images
from tests.processes import celery_worker, export, feedworker, wait_for

pytestmark = pytest.mark.slow

NAME = "refused_by_the_store.txt"
URL = "https://replay.test/refused"
REFUSE = f"""
CREATE FUNCTION refuse_one() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'tablespace "feeds" is read-only (maintenance)'; END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_one BEFORE INSERT OR UPDATE ON items FOR EACH ROW WHEN (NEW.url = '{URL}')
EXECUTE FUNCTION refuse_one();
"""


def test_replay_after_the_store_refused_and_the_file_vanished(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    with ExitStack() as stack:
        broker, store, base = redis_pg_images(stack, tmp_path)
        ans = write_corpus(drops, base, count=6)
        data = f"---\ntitle: Refused once\nwebUrl: {URL}\n---\n".encode()
        (drops / NAME).write_bytes(data)
        env = fault_env(broker.url(), store, {"FEEDWORKER_WATCH__BATCH_MAX": "4"})
        feedworker(env, "migrate")
        _sql(store, REFUSE)
        stack.enter_context(celery_worker(env, tmp_path, "w1"))

        summary = json.loads(feedworker(env, "ingest", str(drops), "--wait", "--json").stdout)
        assert summary["failed"] == len(ans.refused) + 1
        first = _failure(env)
        assert first is not None and first["stage"] == "publish", first
        assert "the store refused the record" in first["reason"] and "read-only" in first["reason"], first

        (drops / NAME).unlink()  # the file is gone before the replay: a clear error, once
        _replay(env, store)
        again = _failure(env)
        assert again is not None and again["stage"] == "read" and "vanished" in again["reason"], again

        (drops / NAME).write_bytes(data)  # the file is back, the store is fixed
        _sql(store, "DROP TRIGGER refuse_one ON items")
        _replay(env, store)
        assert _failure(env) is None
        records = export(env)
        attempts = {d["name"]: d["attempts"] for d in ledger(store)}
    assert next(r for r in records if r["url"] == URL)["title"] == "Refused once"
    check_answers([r for r in records if r["url"] != URL], ans)
    assert attempts[NAME] == 3  # sent three times: once, then once per replay; never in a loop


def _sql(url: str, statement: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(statement.encode())


def _failure(env: dict[str, str]) -> dict[str, Any] | None:
    fails = [json.loads(line) for line in feedworker(env, "failures", "--json").stdout.splitlines()]
    return next((f for f in fails if f["file"] == NAME), None)


def _replay(env: dict[str, str], store: str) -> None:
    """`feedworker replay`, then wait until every replayed drop has an outcome again."""
    assert "re-enqueued" in feedworker(env, "replay").stdout
    wait_for(lambda: all(d["state"] != "queued" for d in ledger(store)), 60)
