"""The pipeline stages as plain functions over a batch of drops (the Celery tasks in tasks/stages.py call these).

A drop travels with its bytes (base64 in the task message), so a worker needs only the broker and the store,
never the drop volume: workers on other machines share nothing else. Each stage fails a single drop, never the
batch: a bad drop becomes a failure entry (file, stage, reason) that the publish stage records in the ledger.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.link.records import Normalized, attach_images, image_urls, normalize
from tasks.parse.parsing import parse_drop
from tasks.shapes import Checker, Drop, Failure, ImageResult, Outcome, WireDrop, drop_of, wire_of
from tasks.store.ledger import Store

logger = logging.getLogger(__name__)


class Batch(TypedDict):
    """What flows from stage to stage: the drops that parsed, and the ones that failed on the way."""

    ok: list[Normalized]
    failed: list[Failure]


def wire_drop(drop: Drop, data: bytes) -> WireDrop:
    """A drop as a task argument: its ledger identity and its bytes."""
    wire = wire_of(drop)
    wire["data"] = base64.b64encode(data).decode("ascii")
    return wire


def failure(drop: Mapping[str, Any], stage: str, reason: str) -> Failure:
    """``drop`` (a wire drop, a normalized drop's, a ledger row) refused at ``stage`` for ``reason``."""
    return Failure(**drop_of(drop), stage=stage, reason=reason)


def parse_batch(wire: Sequence[WireDrop], limits: ParseLimits,
                interrupts: tuple[type[BaseException], ...] = ()) -> Batch:
    """Parse, validate and normalize each drop; refusals become failures naming file, field and reason.
    ``interrupts``: exceptions that stop the whole batch (the caller's time limit), never one drop's failure."""
    batch = Batch(ok=[], failed=[])
    for w in wire:
        drop = drop_of(w)
        if w.get("error"):  # the enqueuer could not read the file (vanished, too big, unreadable)
            batch["failed"].append(failure(w, w.get("error_stage", "read"), w["error"]))
            continue
        try:
            item = parse_drop(drop["name"], base64.b64decode(w["data"]), limits)
            batch["ok"].append(normalize(item, drop))
        except DropRejected as exc:
            batch["failed"].append(failure(w, exc.stage, exc.summary))
        except interrupts:
            raise
        except Exception as exc:  # a bug must cost one drop, not the batch; the reason says what happened
            logger.exception("parse: unexpected error", extra={"file": drop["name"]})
            batch["failed"].append(failure(w, "parse", f"internal error: {type(exc).__name__}"))
    return batch


def verify_batch(batch: Batch, checker: Checker, deadline: float | None = None) -> dict[str, int]:
    """Check every image URL of the batch once (deduplicated); attach the outcomes; return counts by status.
    Raises ChecksTimedOut past ``deadline`` seconds (nothing attached then)."""
    urls = {u for n in batch["ok"] for u in image_urls(n)}
    results: Mapping[str, ImageResult] = checker.check_many(urls, deadline) if urls else {}
    for n in batch["ok"]:
        attach_images(n, results)
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def publish_batch(store: Store, batch: Batch) -> dict[str, Outcome]:
    """Write records and outcomes in one transaction; return drop key -> outcome."""
    return store.publish(batch["ok"], batch["failed"])
