"""The spine end to end, as a user runs it: a Celery worker, `feedworker ingest --wait`, `export`, `failures`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer

from tests.corpus import Answers, write_corpus
from tests.imagehost import serve_images
from tests.processes import celery_worker, env_for, export, feedworker

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    redis.Redis.from_url(redis_url).flushdb()
    yield redis_url


def check_export(records: list[dict[str, Any]], ans: Answers) -> None:
    full = [r for r in records if not r["stub"]]
    stubs = {r["url"] for r in records if r["stub"]}
    assert sorted(r["title"] for r in full) == sorted(ans.titles)
    assert stubs == ans.stubs
    by_url = {r["url"]: r for r in records}
    for r in full:
        resolved = {by_url[rel["url"]]["title"] for rel in r["related"] if rel["resolved"]}
        assert resolved == ans.links[r["title"]], r["title"]
    seen = {}
    for r in records:
        for im in r["images"]:
            seen[im["url"]] = (im["status"], im["width"], im["height"])
        for rel in r["related"]:
            for im in rel["images"]:
                seen.setdefault(im["url"], (im["status"], im["width"], im["height"]))
    assert {u: seen.get(u) for u in ans.images} == ans.images


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ingest_wait_export_failures(backend: str, tmp_path: Path, broker: str, pg_url: str,
                                     httpserver: HTTPServer) -> None:
    base = serve_images(httpserver)
    ans = write_corpus(tmp_path / "drops", base)
    store = f"sqlite:///{tmp_path / 'fw.db'}" if backend == "sqlite" else pg_url
    env = env_for(broker, store)
    if backend == "postgresql":  # the session database is shared: start from an empty store
        from sqlalchemy import create_engine, text
        with create_engine(pg_url).begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS items, drops, deliveries, changes, change_log, webhook_state,"
                              " alembic_version"))
    ingest_export_failures(env, tmp_path, ans)


def test_ingest_wait_export_failures_on_rabbitmq(tmp_path: Path, rabbitmq_url: str, httpserver: HTTPServer) -> None:
    """The same on RabbitMQ (a vhost of this test run's own): a durable quorum queue, publisher confirms."""
    ans = write_corpus(tmp_path / "drops", serve_images(httpserver))
    ingest_export_failures(env_for(rabbitmq_url, f"sqlite:///{tmp_path / 'fw.db'}"), tmp_path, ans)


def ingest_export_failures(env: dict[str, str], tmp_path: Path, ans: Answers) -> None:
    with celery_worker(env, tmp_path):
        res = feedworker(env, "ingest", str(tmp_path / "drops"), "--wait", "--json")
        summary = json.loads(res.stdout)
        assert summary == {"published": len(ans.titles) + 1, "unchanged": 1, "failed": 2}
        records = export(env)
        check_export(records, ans)
        fails = [json.loads(line) for line in feedworker(env, "failures", "--json").stdout.splitlines()]
        assert {f["file"] for f in fails} == set(ans.refused)
        for f in fails:
            assert ans.refused[f["file"]] in f["reason"], f
        # Dropped again: the same content is one record, unchanged.
        again = json.loads(feedworker(env, "ingest", str(tmp_path / "drops"), "--wait", "--json").stdout)
        assert again == {"published": 0, "unchanged": len(ans.titles) + 2, "failed": 2}
        assert [r["version"] for r in export(env)] == [r["version"] for r in records]
    for r in records:
        assert "secured" in r
    log = (tmp_path / "w1.log").read_text()
    secured = next(r["secured"] for r in records if not r["stub"])
    assert secured not in log
