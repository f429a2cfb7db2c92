"""`ingest`'s back pressure (worker/watching/enqueue.py): the depth of the stage queues, read before each batch
it sends, counted over every stage queue and read on a pooled connection, not a new one each time."""

from __future__ import annotations

from pathlib import Path

import redis

from tasks.queues import STAGE_QUEUES
from tests.faults import private_redis
from worker.celeryapp.celery_app import make_app
from worker.settings import Settings
from worker.watching.enqueue import queue_depth


def test_the_queue_depth_counts_every_stage_queue_on_one_pooled_connection(tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis") as server:  # its own server: its connection count is ours alone
        app = make_app(Settings(broker_url=server.url()))
        client = redis.Redis.from_url(server.url())
        assert queue_depth(app) == 0  # no queue declared yet
        client.lpush(STAGE_QUEUES[0], "a", "b")
        client.lpush(STAGE_QUEUES[-1], "c")
        before = int(client.info("stats")["total_connections_received"])
        assert [queue_depth(app) for _ in range(20)] == [3] * 20
        opened = int(client.info("stats")["total_connections_received"]) - before
        assert opened <= 1, f"{opened} connections opened for 20 looks"  # a new connection cost ~2.5 ms of CPU
        app.pool.force_close_all()
        client.close()
