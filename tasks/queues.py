"""Which queue each stage of a batch goes to (docs/queues.md).

Two lanes: *live*, the drops a watcher sees arrive, and *backfill*, everything else (`ingest`, `replay`, the
watcher's first scan of a folder that filled while nobody watched). A live batch runs every stage on the live
queue, which `feedworker run` serves first with workers of its own, so a drop made now never waits behind a
million-file backfill. A backfill's image checks, which mostly wait on far hosts, go to the verify queue, served
by a pool built for waiting (threads); its parse stays on the default queue and its publish has a queue of its
own: on one queue a publish waits behind every parse sent before it (a backlog's records then land at the end, in
a burst), while a worker consuming several queues takes from each in turn, so a started batch finishes soon
(measured: 965 -> 1,101 files/s on the loopback backlog, bench/README.md).

A plain `celery -A worker worker` consumes all of them (they are listed in the app's ``task_queues``), so a
one-command deployment still serves every stage.
"""

from __future__ import annotations

LIVE, BACKFILL = "live", "backfill"
LANES = (LIVE, BACKFILL)
QUEUE = "feedworker"  # a backfill's parse (and any message sent before lanes existed)
LIVE_QUEUE = "feedworker.live"  # every stage of a live drop: served first
VERIFY_QUEUE = "feedworker.verify"  # a backfill's image checks: waiting work
PUBLISH_QUEUE = "feedworker.publish"  # a backfill's publish: a started batch is not held behind new parses
STAGE_QUEUES = (QUEUE, LIVE_QUEUE, VERIFY_QUEUE, PUBLISH_QUEUE)
_BACKFILL_QUEUES = {"verify": VERIFY_QUEUE, "publish": PUBLISH_QUEUE}  # parse: QUEUE


def queue_for(stage: str, lane: str) -> str:
    """The queue ``stage`` (parse | verify | publish) of a batch in ``lane`` is sent to."""
    if lane == LIVE:
        return LIVE_QUEUE
    return _BACKFILL_QUEUES.get(stage, QUEUE)
