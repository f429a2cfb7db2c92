"""`feedworker ingest` waits out a broker outage whatever the transport raises for it (worker/running/ingest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from celery import Celery

from worker.running.ingest import _submit, outage_errors
from worker.watching.enqueue import Enqueuer

# What py-amqp raises when RabbitMQ closes a connection it had accepted, as a channel opens on it (seen in
# tests/test_faults_rabbitmq.py's cut: `ingest --wait` exited 1 with this, from its back-pressure look at the queues).
CLOSED = OSError("Server unexpectedly closed connection")


class FlakyEnqueuer:
    """Fails its first ``submit`` with ``error``; then sends."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.calls = error, 0

    def submit(self, batch: list[Path]) -> int:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return len(batch)


@pytest.mark.parametrize("broker", ["amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/0"])
def test_a_connection_the_broker_closes_is_an_outage_to_wait_out(broker: str) -> None:
    errors = outage_errors(Celery("outage-test", broker=broker))  # connects nowhere: error classes only
    enq = FlakyEnqueuer(CLOSED)
    _submit(cast(Enqueuer, enq), [Path("a.txt")], errors)
    assert enq.calls == 2  # tried again after a second, not raised


def test_a_bug_is_not_taken_for_an_outage() -> None:
    errors = outage_errors(Celery("outage-test", broker="amqp://guest:guest@127.0.0.1:5672//"))
    enq: Any = FlakyEnqueuer(KeyError("a bug"))
    with pytest.raises(KeyError):
        _submit(cast(Enqueuer, enq), [Path("a.txt")], errors)
    assert enq.calls == 1
