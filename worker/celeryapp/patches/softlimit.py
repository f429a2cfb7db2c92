"""A soft time limit interrupts a running task, never an idle pool process (billiard 4.x with celery 5.7).

The pool's timeout thread in the worker's main process sends SIGUSR1 to a child when a task passes
``task_soft_time_limit``; it learns that the task ended only when the main process reads the child's result. While
the main process is blocked reconnecting to a lost broker (kombu waits 2, 4, 6... s between attempts), results
go unread, so tasks that finished long ago "pass" their soft limit. The signal then reaches a child waiting for
its next job: billiard's handler raises ``SoftTimeLimitExceeded`` there, the child dies mid-read, and the main
process, reading that pipe, fails with ``UnpicklingError`` and shuts the whole worker down. Measured here: a
Redis outage of 3 s with a 6 s soft limit killed the worker (tests/test_faults_redis.py).

The guard: billiard's handler runs only while a task of this process is running (between Celery's task_prerun and
task_postrun signals); at any other time the late signal is ignored, with a log line.

Version check: written for billiard 4.x, whose pool sends ``SIG_SOFT_TIMEOUT`` (SIGUSR1) and whose child handler
raises ``SoftTimeLimitExceeded``. On another billiard, or one that signals soft limits differently, the guard is
NOT installed and a warning says so (a guard around a signal we no longer understand could swallow real soft
limits). Before extending ``WRITTEN_FOR``, read billiard's pool and run ``tests/test_faults_redis.py``;
``tests/test_patches.py`` shows the guard's effect in a second.
"""

from __future__ import annotations

import logging
import signal
from importlib.metadata import version
from types import FrameType
from typing import Any

from celery import signals

from worker.celeryapp.patches import refused

logger = logging.getLogger(__name__)
WRITTEN_FOR = ("4.",)  # billiard versions whose soft time limit signalling this guard was written against

_SOFT = getattr(signal, "SIGUSR1", None)  # billiard's SIG_SOFT_TIMEOUT


class _Guard:
    running = 0  # tasks of this process running now (0 or 1 in a prefork child)
    original: Any = None  # billiard's handler, installed after worker_process_init: wrapped on the first task


def _handler(signum: int, frame: FrameType | None) -> None:
    if _Guard.running and callable(_Guard.original):
        _Guard.original(signum, frame)  # raises SoftTimeLimitExceeded in the running task
    else:
        logger.warning("soft time limit signal for a task that already finished: ignored")


def _task_started(**_: Any) -> None:
    if _SOFT is not None and signal.getsignal(_SOFT) is not _handler:
        try:
            original = signal.getsignal(_SOFT)
            signal.signal(_SOFT, _handler)
            _Guard.original = original
        except ValueError:  # not the main thread (a threads pool): soft limits aren't delivered by signal there
            pass
    _Guard.running += 1


def _task_ended(**_: Any) -> None:
    _Guard.running = max(0, _Guard.running - 1)


def applies_to(billiard_version: str) -> bool:
    from billiard import pool

    return billiard_version.startswith(WRITTEN_FOR) and _SOFT is not None and \
        getattr(pool, "SIG_SOFT_TIMEOUT", None) == _SOFT and callable(getattr(pool, "soft_timeout_sighandler", None))


def install() -> bool:
    """Connect the guard to Celery's task signals (idempotent: signals keep one receiver per function); False
    (with a warning) when this billiard is not one the guard was written for."""
    found = version("billiard")
    if not applies_to(found):
        return refused(logger, "softlimit", "billiard", WRITTEN_FOR, found, "check whether a late soft time limit "
                       "still kills an idle pool process (tests/test_faults_redis.py)", what="guard not installed")
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_ended, weak=False)
    return True
