"""Which queue each stage of a batch goes to: a live drop's whole chain on the live queue, a backfill's image
checks on the verify queue and the rest on the default one; splits stay in their lane; a plain worker hears all."""

from __future__ import annotations

import worker
from tasks import stages
from tasks.pipeline import Batch
from tasks.queues import queue_for
from tasks.shapes import WireDrop
from tasks.store import deliveries
from worker.celeryapp.celery_app import task_queues
from worker.settings import get_settings

A_TXT = WireDrop(key="k", name="a.txt", path="/d/a.txt", size=1, mtime_ns=1, data="")


def _queues(sig: object) -> list[tuple[str, str]]:
    return [(t.name, t.options["queue"]) for t in sig.tasks]  # type: ignore[attr-defined]


def test_a_live_batch_runs_every_stage_on_the_live_queue() -> None:
    assert worker.app is not None  # the stage tasks bind to the app
    chain = stages.pipeline([A_TXT], lane="live")
    assert _queues(chain) == [("feedworker.parse", "feedworker.live"), ("feedworker.verify", "feedworker.live"),
                              ("feedworker.publish", "feedworker.live")]


def test_a_backfill_batch_checks_images_on_the_verify_queue_and_publishes_on_its_own() -> None:
    chain = stages.pipeline([A_TXT])
    assert _queues(chain) == [("feedworker.parse", "feedworker"), ("feedworker.verify", "feedworker.verify"),
                              ("feedworker.publish", "feedworker.publish")]


def test_the_halves_of_a_split_stay_in_their_lane() -> None:
    for lane in ("live", "backfill"):
        halves = deliveries.split_tags(deliveries.new_tag(lane=lane), "verify")
        assert [h["lane"] for h in halves] == [lane, lane]
        sealed = stages.Sealed(Batch(ok=[], failed=[]))
        first = _queues(stages.pipeline_from("verify", sealed, halves[0]))[0][1]
        assert first == queue_for("verify", lane)


def test_a_plain_worker_consumes_every_queue() -> None:
    for amqp in (False, True):
        names = {q.name for q in task_queues(get_settings(), amqp)}
        assert names == {"feedworker", "feedworker.live", "feedworker.verify", "feedworker.publish",
                         "feedworker.webhooks"}
