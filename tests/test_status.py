"""`feedworker status` as an operator runs it: its table, its JSON and its exit code, on a real backlog."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import redis

from tasks.shapes import Drop, Failure
from tasks.store.ledger import Store
from tests.processes import celery_worker, env_for, feedworker, wait_for
from tests.test_metrics import write_drops

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def status(env: dict[str, str], *args: str) -> tuple[int, str]:
    res = feedworker(env, "status", *args, check=False)
    assert res.returncode in (0, 1, 2), res.stderr[-2000:]
    return res.returncode, res.stdout


def test_exit_code_follows_the_oldest_queued_drop(tmp_path: Path, broker: str) -> None:
    write_drops(tmp_path / "drops", "http://127.0.0.1:9", total=6)  # 3 valid, 3 refused; images refused at once
    env = env_for(broker, f"sqlite:///{tmp_path / 'fw.db'}", FEEDWORKER_WATCH__BATCH_MAX="4")
    feedworker(env, "ingest", str(tmp_path / "drops"))  # no worker yet: the drops wait
    time.sleep(1.2)

    code, out = status(env, "--json", "--max-age", "1")
    data = json.loads(out)
    assert code == 2
    assert data["backlog"] == 6 and data["oldest_queued_age_seconds"] > 1
    assert data["queues"] == {"feedworker": 2, "feedworker.live": 0, "feedworker.verify": 0,  # 6 drops in batches of 4
                              "feedworker.publish": 0, "feedworker.webhooks": 0} and data["queue_depth"] == 2
    assert data["workers"] == [] and data["broker_reachable"] and data["store_reachable"]
    assert status(env, "--json", "--max-age", "3600")[0] == 0
    code, table = status(env, "--max-age", "1")  # the table, as a pipe gets it
    assert code == 2
    assert "OVER --max-age" in table and "none answered" in table

    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    with celery_worker(env, tmp_path):
        wait_for(lambda: store.state_counts()["queued"] == 0, 60)
        store.dispose()
        code, out = status(env, "--json", "--max-age", "1")
        data = json.loads(out)
        assert code == 0
        assert data["oldest_queued_age_seconds"] is None
        assert data["outcomes"]["last_hour"] == {"published": 3, "unchanged": 0, "failed": 3}
        assert data["outcomes"]["last_day"] == data["outcomes"]["all"] == data["outcomes"]["last_hour"]
        assert data["workers"] == [f"w1@{socket.gethostname()}"]
        assert {(f["file"], f["stage"]) for f in data["recent_failures"]} == {
            ("bad_yaml.txt", "parse"), ("bad_title.txt", "parse"), ("too_big.txt", "read")}
        assert all(f["reason"] and f["at"].endswith("Z") for f in data["recent_failures"])
        assert data["changes"]["count"] == 3 and data["changes"]["oldest_at"].endswith("Z")  # 3 created
        code, table = status(env)
        assert code == 0
        for text in ("bad_title.txt", "title: must not be empty", "feedworker replay", "3 full, 0 stubs",
                     "3 changes, oldest"):
            assert text in table


def test_recent_failures_are_the_five_newest(tmp_path: Path, broker: str) -> None:
    from tasks.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    upgrade(store)
    for i in range(7):
        row = Drop(key=f"k{i}", name=f"f{i}.txt", path=f"/d/f{i}.txt", size=1, mtime_ns=i)
        store.register_drops([row], "run", "ingest")
        store.publish([], [Failure(**row, stage="parse", reason=f"reason {i}")])
    store.dispose()
    data = json.loads(status(env_for(broker, f"sqlite:///{tmp_path / 'fw.db'}"), "--json")[1])
    assert [f["file"] for f in data["recent_failures"]] == ["f6.txt", "f5.txt", "f4.txt", "f3.txt", "f2.txt"]


def test_unreachable_broker_or_store_exits_1(tmp_path: Path, broker: str) -> None:
    store_url = f"sqlite:///{tmp_path / 'fw.db'}"
    feedworker(env_for(broker, store_url), "migrate")
    code, out = status(env_for("redis://127.0.0.1:1/0", store_url), "--json")
    data = json.loads(out)
    assert code == 1
    assert data["broker_reachable"] is False and data["queue_depth"] is None
    assert data["store_reachable"] is True and data["backlog"] == 0  # the ledger side still shows

    code, out = status(env_for(broker, f"sqlite:///{tmp_path / 'elsewhere.db'}"))  # run from the wrong folder
    assert code == 1
    assert "no SQLite store" in out
    assert not (tmp_path / "elsewhere.db").exists()  # looking never creates an empty store
    (tmp_path / "empty.db").touch()
    code, out = status(env_for(broker, f"sqlite:///{tmp_path / 'empty.db'}"))
    assert code == 1
    assert "feedworker migrate" in out
