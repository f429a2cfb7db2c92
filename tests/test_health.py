"""`feedworker health live|ready` as compose / Kubernetes exec probes run it: exit 0 healthy, 1 not."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import redis

from tasks.store.migrate import head_revision
from tests.processes import celery_worker, env_for, feedworker, wait_for

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def broker(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def probe(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    res = feedworker(env, "health", *args, "--json", check=False)
    return res.returncode, json.loads(res.stdout)


def test_liveness_needs_the_broker_not_the_store(tmp_path: Path, broker: str) -> None:
    no_store = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    code, report = probe(env_for(broker, no_store), "live")
    assert code == 0 and report["ok"] is True
    code, report = probe(env_for(DEAD_BROKER, no_store), "live")
    assert code == 1
    assert report["checks"] == [{"name": "broker", "ok": False, "detail": "no answer"}]


def test_readiness_needs_a_current_schema(store_url: str, broker: str) -> None:
    env = env_for(broker, store_url)
    code, report = probe(env, "ready")
    assert code == 1
    if store_url.startswith("sqlite"):  # no file yet: said so, and not created by looking
        assert "no SQLite store" in str(report["checks"])
        assert not Path(store_url.removeprefix("sqlite:///")).exists()
    else:  # an empty database
        assert "feedworker migrate" in str(report["checks"])
    feedworker(env, "migrate")
    assert probe(env, "ready") == (0, {"ok": True, "checks": [
        {"name": "store", "ok": True, "detail": f"reachable ({store_url.split(':')[0].split('+')[0]})"},
        {"name": "migrations", "ok": True, "detail": f"current ({head_revision()})"}]})


def test_readiness_without_a_store(broker: str) -> None:
    code, report = probe(env_for(broker, "postgresql+psycopg://postgres@127.0.0.1:1/nothing"), "ready")
    assert code == 1
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["store", "migrations"]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_liveness_of_a_named_worker(tmp_path: Path, broker: str) -> None:
    env = env_for(broker, f"sqlite:///{tmp_path / 'fw.db'}")
    name = f"w1@{socket.gethostname()}"
    with celery_worker(env, tmp_path):
        wait_for(lambda: probe(env, "live", "--worker", name)[0] == 0, 30, interval=0.5)
        code, report = probe(env, "live", "--worker", "nobody@nowhere")
        assert code == 1
        assert report["checks"][-1]["name"] == "worker nobody@nowhere"  # type: ignore[index]
    code, report = probe(env, "live", "--worker", name)  # stopped: no answer
    assert code == 1
