"""The change feed end to end: the real pipeline (a Celery worker, `ingest --wait`), a consumer reading
`feedworker changes` from the start and again from its last cursor, checked against `feedworker export`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.changecheck import check_changes, read_changes, write_drops
from tests.conftest import fresh_pg_database
from tests.processes import celery_worker, env_for, export, feedworker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_consumer_reads_every_version_once_across_two_ingests(backend: str, tmp_path: Path,
                                                                redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    with fresh_pg_database() as pg:
        store = f"sqlite:///{tmp_path / 'fw.db'}" if backend == "sqlite" else pg
        env = env_for(redis_url, store, FEEDWORKER_WATCH__BATCH_MAX="20")  # many batches, in parallel
        known: list[str] = []
        write_drops(tmp_path / "one", 0, 300, seed=1, known=known)
        with celery_worker(env, tmp_path, concurrency=2):
            first = json.loads(feedworker(env, "ingest", str(tmp_path / "one"), "--wait", "--json").stdout)
            assert first["unchanged"] > 20 and first["published"] > 200 and first["failed"] == 0, first
            seen = read_changes(env)
            check_changes(seen, export(env))
            cursor = seen[-1]["cursor"]
            (tmp_path / "two").mkdir()
            for name in known:  # the second ingest's drops may copy the first's files: keep them at hand
                (tmp_path / "two" / name).hardlink_to(tmp_path / "one" / name)
            write_drops(tmp_path / "two", 300, 100, seed=2, known=known)
            for name in known[:300]:
                (tmp_path / "two" / name).unlink()
            second = json.loads(feedworker(env, "ingest", str(tmp_path / "two"), "--wait", "--json").stdout)
            assert second["unchanged"] > 0 and second["published"] > 50, second  # counts vary with batch order
            more = read_changes(env, cursor)
            assert more and int(more[0]["cursor"]) > int(cursor)
            records = export(env)
        check_changes(seen + more, records)
        kinds = {c["kind"] for c in seen + more}
        assert kinds == {"created", "updated", "stub_created", "stub_upgraded"}
        published = first["published"] + second["published"]
        assert len(seen) + len(more) >= published  # each published drop made at least its own record's change
