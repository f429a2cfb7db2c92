"""Cursors never skip on PostgreSQL, with publish transactions held open on purpose (docs/changes.md).

The trap: with a plain sequence, a transaction that took seq 1 can commit after one that took seq 2; a reader
that saw 2 would then pass 1 for good. Here seq is assigned under a lock its commit releases, so seq order is
commit order. (SQLite needs no test of its own: BEGIN IMMEDIATE lets one writer in at a time.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tasks.shapes import Outcome
from tasks.store.changes import read
from tasks.store.ledger import Store
from tasks.store.migrate import upgrade
from tests.conftest import fresh_pg_database
from tests.processes import wait_for
from tests.test_store import item, norm, publish


@pytest.fixture
def pg_store() -> Iterator[Store]:
    with fresh_pg_database() as url:
        s = Store(url)
        upgrade(s)
        yield s
        s.dispose()


def urls(store: Store, since: int | None) -> list[str]:
    return [c["url"] for c in read(store, since, 1000)]


def test_a_publish_that_started_first_and_commits_last_is_not_skipped(pg_store: Store) -> None:
    a, b = norm(item("https://x.test/a"), 1), norm(item("https://x.test/b"), 2)
    publish(pg_store, norm(item("https://x.test/0"), 0))
    pg_store.register_drops([{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in (a, b)],
                            "run", "ingest")
    with pg_store.engine.connect() as conn_a:
        tx = conn_a.begin()
        xid_a = int(conn_a.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())  # A is older
        pg_store.publish([b], [])  # B starts later and commits first
        seen = read(pg_store, None, 1000)
        assert [c["url"] for c in seen] == ["https://x.test/0", "https://x.test/b"]
        pg_store._publish(conn_a, [a], [])
        assert urls(pg_store, int(seen[-1]["cursor"])) == []  # A not committed yet: nothing new
        tx.commit()
    with pg_store.engine.connect() as conn:
        xid_b = int(conn.execute(text("SELECT xmin::text FROM items WHERE url = 'https://x.test/b'")).scalar_one())
    assert xid_a < xid_b  # the transactions really did commit in the opposite order of their start
    assert urls(pg_store, int(seen[-1]["cursor"])) == ["https://x.test/a"]  # read on from B's cursor: A is there


def test_a_second_publish_waits_for_the_first_commit_to_take_its_seq(pg_store: Store) -> None:
    a, b = norm(item("https://x.test/a"), 1), norm(item("https://x.test/b"), 2)
    pg_store.register_drops([{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in (a, b)],
                            "run", "ingest")
    with pg_store.engine.connect() as conn_a:
        tx = conn_a.begin()
        pg_store._publish(conn_a, [a], [])  # A took its seq and holds the log's lock until it commits
        done: list[dict[str, Outcome]] = []
        thread = threading.Thread(target=lambda: done.append(pg_store.publish([b], [])))
        thread.start()
        assert wait_for(lambda: _waiting_on_advisory_lock(pg_store), timeout=10)  # B wrote its rows, then waits
        assert urls(pg_store, None) == []
        tx.commit()
    thread.join(10)
    assert done == [{b["drop"]["key"]: "published"}]
    lines = read(pg_store, None, 1000)
    assert [c["url"] for c in lines] == ["https://x.test/a", "https://x.test/b"]
    assert int(lines[0]["cursor"]) < int(lines[1]["cursor"])


def _waiting_on_advisory_lock(store: Store) -> bool:
    with store.engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                              "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))
        return bool(n.scalar_one())
