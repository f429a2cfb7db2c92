"""A worker app for tests/test_heap.py only: `celery -A tests.heap_app worker`.

The real app (worker.celeryapp.celery_app), and a note of what the garbage collector holds frozen in each of the
worker's processes once it is up, appended to the file ``FEEDWORKER_TEST_HEAP_FILE`` names (the test sets it;
no production module reads it): ``ROLE PID FROZEN UNFROZEN``, ROLE ``main`` or ``child``.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from celery import signals

from worker.celeryapp.celery_app import app

__all__ = ["app"]


def _note(role: str) -> None:
    path = os.environ.get("FEEDWORKER_TEST_HEAP_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{role} {os.getpid()} {gc.get_freeze_count()} {len(gc.get_objects())}\n")


@signals.worker_ready.connect
def _main_ready(**_: Any) -> None:
    _note("main")


@signals.worker_process_init.connect
def _child_ready(**_: Any) -> None:
    _note("child")
