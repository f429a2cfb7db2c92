"""Which queue each stage of a batch goes to (docs/queues.md).

Two lanes: *live*, the drops a watcher sees arrive, and *backfill*, everything else (`ingest`, `replay`, the
watcher's first scan of a folder that filled while nobody watched). A live batch runs every stage on the live
queue, which `feedworker run` serves first with workers of its own, so a drop made now never waits behind a
million-file backfill. A backfill's image checks, which mostly wait on far hosts, go to the verify queue, served
by a pool built for waiting (threads); its parse and publish, CPU work, stay on the default queue.

A plain `celery -A worker worker` consumes all of them (they are listed in the app's ``task_queues``), so a
one-command deployment still serves every stage.
"""

from __future__ import annotations

LIVE, BACKFILL = "live", "backfill"
LANES = (LIVE, BACKFILL)
QUEUE = "feedworker"  # a backfill's parse and publish (and any message sent before lanes existed)
LIVE_QUEUE = "feedworker.live"  # every stage of a live drop: served first
VERIFY_QUEUE = "feedworker.verify"  # a backfill's image checks: waiting work
STAGE_QUEUES = (QUEUE, LIVE_QUEUE, VERIFY_QUEUE)


def queue_for(stage: str, lane: str) -> str:
    """The queue ``stage`` (parse | verify | publish) of a batch in ``lane`` is sent to."""
    if lane == LIVE:
        return LIVE_QUEUE
    return VERIFY_QUEUE if stage == "verify" else QUEUE
