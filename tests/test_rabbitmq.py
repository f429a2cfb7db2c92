"""`status`, `health` and the metrics on a real RabbitMQ (a vhost of this test run's own): queued messages, a
task in flight, the workers that answer; and the settings a RabbitMQ broker gets (a quorum queue, confirms)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.queues import STAGE_QUEUES
from tests.faults import image_host
from tests.processes import celery_worker, env_for, feedworker, wait_for
from tests.test_metrics import scrape, value, write_drops

pytestmark = pytest.mark.slow


def _queue_delete(url: str, name: str) -> None:
    from kombu import connection

    with connection.Connection(url) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        channel.queue_delete(name)
        channel.close()


@pytest.fixture
def rabbit(rabbitmq_url: str) -> Iterator[str]:
    """The session's vhost with no task queue in it (each test counts its own messages)."""
    _queue_delete(rabbitmq_url, "feedworker")
    yield rabbitmq_url
    _queue_delete(rabbitmq_url, "feedworker")


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    res = feedworker(env, "status", "--json", "--max-age", "3600", check=False)
    assert res.returncode in (0, 1, 2), res.stderr[-2000:]
    return res.returncode, json.loads(res.stdout)


def test_status_metrics_and_health_with_queued_and_in_flight_messages(
        tmp_path: Path, rabbit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.celeryapp.celery_app import make_app
    from worker.observing.metricserver import serve
    from worker.settings import Settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    store_url = f"sqlite:///{tmp_path / 'fw.db'}"
    with image_host(delay=4.0) as base:  # a batch spends ~4 s checking its images: long enough to be seen
        write_drops(tmp_path / "drops", base, total=7)  # 4 valid, 3 refused
        env = {**env_for(rabbit, store_url, FEEDWORKER_WATCH__BATCH_MAX="3"), "FEEDWORKER_IMAGES__TIMEOUT_SECONDS": "8"}
        feedworker(env, "ingest", str(tmp_path / "drops"))  # no worker yet: 3 batches wait
        code, data = status(env)
        assert code == 0 and data["broker_reachable"] and data["store_reachable"]
        assert data["queues"] == {"feedworker": 3, "feedworker.live": 0, "feedworker.verify": 0,
                                  "feedworker.publish": 0, "feedworker.webhooks": 0} and data["queue_depth"] == 3
        assert data["in_flight"] == 0 and data["workers"] == [] and data["backlog"] == 7
        table = feedworker(env, "status").stdout  # as an operator reads it
        assert "reachable" in table and "UNREACHABLE" not in table
        assert "feedworker 3 " in table and "0 in flight" in table  # a lane a line
        settings = Settings(broker_url=rabbit, store_url=store_url)
        server = serve(0, "127.0.0.1", settings, app=make_app(settings))
        try:
            samples = scrape(server.port)
            assert value(samples, "feedworker_queue_messages", queue="feedworker") == 3
            assert value(samples, "feedworker_broker_up") == 1 and value(samples, "feedworker_workers") == 0
            assert ("feedworker_messages_unacked", ()) in samples and value(samples, "feedworker_messages_unacked") == 0
            # Prefetch 1 x 1 process, but per queue: quorum queues have no channel-wide QoS, so a worker holds up
            # to one message of each stage queue it consumes (docs/queues.md).
            with celery_worker(env, tmp_path, concurrency=1):
                busy = wait_for(lambda: _holding(env), 60, interval=0.5)
                assert 1 <= busy["in_flight"] <= len(STAGE_QUEUES) and busy["workers"] == [f"w1@{socket.gethostname()}"]
                assert busy["queue_depth"] <= 3
                assert busy["backlog"] > 0  # the held batch is still checking its images
                wait_for(lambda: _metric_in_flight(server.port) >= 1, 30, interval=1.1)
                wait_for(lambda: status(env)[1]["backlog"] == 0, 90, interval=1.0)
                code, done = status(env)
            samples = scrape(server.port)
        finally:
            server.stop()
    assert code == 0 and done["queue_depth"] == 0 and done["in_flight"] == 0
    assert done["outcomes"]["all"] == {"published": 4, "unchanged": 0, "failed": 3}
    assert value(samples, "feedworker_backlog_drops") == 0


def _holding(env: dict[str, str]) -> dict[str, Any] | None:
    data = status(env)[1]
    return data if data["in_flight"] else None


def _metric_in_flight(port: int) -> float:
    return value(scrape(port), "feedworker_messages_unacked")


def test_health_live_on_rabbitmq(tmp_path: Path, rabbit: str) -> None:
    store_url = f"sqlite:///{tmp_path / 'fw.db'}"
    res = feedworker(env_for(rabbit, store_url), "health", "live", "--json", check=False)
    assert res.returncode == 0, res.stdout
    assert json.loads(res.stdout)["checks"] == [{"name": "broker", "ok": True, "detail": "answers (AMQP handshake)"}]
    for dead in (rabbit.rsplit("/", 1)[0] + "/no-such-vhost", "amqp://guest:wrong@127.0.0.1:5672/",
                 "amqp://guest:guest@127.0.0.1:1/"):
        res = feedworker(env_for(dead, store_url), "health", "live", "--json", check=False)
        assert res.returncode == 1, dead
        assert json.loads(res.stdout)["checks"] == [{"name": "broker", "ok": False, "detail": "no answer"}]
    code, data = status(env_for(dead, store_url))
    assert code == 1 and data["broker_reachable"] is False and data["queue_depth"] is None
    env = env_for(rabbit, store_url)
    feedworker(env, "migrate")
    name = f"w1@{socket.gethostname()}"
    with celery_worker(env, tmp_path):
        wait_for(lambda: feedworker(env, "health", "live", "--worker", name, check=False).returncode == 0, 30,
                 interval=0.5)
        assert feedworker(env, "health", "ready", check=False).returncode == 0


def test_the_task_queue_is_a_durable_quorum_queue_with_publisher_confirms(rabbit: str) -> None:
    """What a RabbitMQ broker gets (worker/celeryapp/celery_app.py rabbitmq_settings), read back from the server."""
    from worker.celeryapp.celery_app import make_app
    from worker.settings import Settings

    app = make_app(Settings(broker_url=rabbit))
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_acks_late
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss and app.conf.broker_heartbeat == 30
    assert make_app(Settings(broker_url="redis://127.0.0.1:6379/0")).conf.broker_transport_options[
        "visibility_timeout"] == 60  # Redis keeps its own
    with app.connection_for_write() as conn:
        app.amqp.queues["feedworker"].bind(conn.default_channel).declare()
        info = _management(rabbit, "feedworker")
    assert info["durable"] is True and info["type"] == "quorum"
    assert info["arguments"]["x-queue-type"] == "quorum"
    assert app.conf.task_time_limit * 1000 < _consumer_timeout_ms()


def _management(url: str, queue: str) -> dict[str, Any]:
    import urllib.parse
    import urllib.request

    vhost = urllib.parse.quote(url.rsplit("/", 1)[1], safe="")
    req = urllib.request.Request(f"http://127.0.0.1:15672/api/queues/{vhost}/{queue}")
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest, the test server's
    with urllib.request.urlopen(req, timeout=10) as res:
        return dict(json.loads(res.read()))


def _consumer_timeout_ms() -> int:
    """The server's consumer_timeout (a delivery unacknowledged longer than this closes the channel)."""
    import subprocess

    out = subprocess.run(["rabbitmqctl", "-q", "eval", "application:get_env(rabbit, consumer_timeout)."],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return int(out.strip().removeprefix("{ok,").rstrip("}"))


def test_flower_shows_the_stages_and_the_queue_length(tmp_path: Path, rabbit: str) -> None:
    """Flower on RabbitMQ, as tests/test_flower.py on Redis: workers, each stage's tasks with file names for
    arguments, and the queue's length, which Flower reads from RabbitMQ's management API (``--broker_api``)."""
    from tests.test_flower import flower, get
    from tests.test_flower import write_drops as flower_drops

    env = env_for(rabbit, f"sqlite:///{tmp_path / 'store.db'}", FEEDWORKER_WATCH__BATCH_MAX="2")
    names, secrets = flower_drops(tmp_path / "drops")
    api = "--broker_api=http://guest:guest@127.0.0.1:15672/api/"
    with flower({**env, "FLOWER_UNAUTHENTICATED_API": "true"}, tmp_path / "flower.log", api) as base:
        feedworker(env, "ingest", str(tmp_path / "drops"))  # no worker yet: 2 batches wait
        wait_for(lambda: _flower_queue(base) == 2, 30, interval=1.0)  # the management API refreshes every 5 s
        with celery_worker(env, tmp_path, name="flowertest", concurrency=1):
            wait_for(lambda: "flowertest@" in get(base + "/api/workers?refresh=1")[1], 30)
            wait_for(lambda: get(base + "/api/tasks")[1].count("feedworker.publish") >= 2, 60)
            wait_for(lambda: _flower_queue(base) == 0, 30, interval=1.0)
            tasks: dict[str, Any] = json.loads(get(base + "/api/tasks")[1])
    assert {t["name"] for t in tasks.values()} == {"feedworker.parse", "feedworker.verify", "feedworker.publish"}
    assert all(t["state"] == "SUCCESS" and "drops:" in t["args"] for t in tasks.values())
    shown = " ".join(t["args"] for t in tasks.values())
    assert all(name in shown for name in names)  # batches of 2: both files of each named
    assert not any(secret.split(";")[0][:40] in json.dumps(tasks) for secret in secrets)


def _flower_queue(base: str) -> int | None:
    from tests.test_flower import get

    status, text = get(base + "/api/queues/length")
    lengths = {q["name"]: q.get("messages") for q in json.loads(text).get("active_queues", [])} if status == 200 else {}
    return lengths.get("feedworker")
