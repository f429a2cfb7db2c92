"""A worker app for the poison tests only: `celery -A tests.poison_app worker`.

It is the real app (worker.celeryapp.celery_app) with a fault hook wrapped around parsing one drop, switched on
by the test through the worker's environment; no production module reads these variables:

- ``FEEDWORKER_TEST_KILL_DROP=NAME``: the pool process parsing the drop NAME SIGKILLs itself (as the OOM killer
  or a segfault in a C library would end it), every time it is delivered;
- ``FEEDWORKER_TEST_SLOW_DROP=NAME``: parsing the drop NAME takes ``FEEDWORKER_TEST_SLOW_SECONDS`` (default 60),
  past the soft time limit;
- ``FEEDWORKER_TEST_HANG_DROP=NAME``: parsing the drop NAME never ends and ignores the soft time limit (as code
  stuck in a C library would), so the hard time limit ends its pool process;
- ``FEEDWORKER_TEST_PARSE_SECONDS=S``: parsing every drop takes S seconds more (a backlog of slow work).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

import tasks.pipeline
from tasks.parse.parsing import parse_drop as _real_parse_drop
from worker.celeryapp.celery_app import app

__all__ = ["app"]


def _parse_drop_with_faults(name: str, data: bytes, limits: Any) -> Any:
    if name == os.environ.get("FEEDWORKER_TEST_KILL_DROP"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name == os.environ.get("FEEDWORKER_TEST_SLOW_DROP"):
        time.sleep(float(os.environ.get("FEEDWORKER_TEST_SLOW_SECONDS", "60")))
    if name == os.environ.get("FEEDWORKER_TEST_HANG_DROP"):
        _hang()
    time.sleep(float(os.environ.get("FEEDWORKER_TEST_PARSE_SECONDS", "0")))
    return _real_parse_drop(name, data, limits)


def _hang() -> None:
    while True:
        try:
            time.sleep(3600)
        except SoftTimeLimitExceeded:
            continue


tasks.pipeline.parse_drop = _parse_drop_with_faults  # type: ignore[attr-defined]
