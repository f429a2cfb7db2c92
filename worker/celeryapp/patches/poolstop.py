"""A warm shutdown finishes the job writes it has begun before the pool processes are told to stop (celery 5.7).

The prefork pool hands a task to a pool process over a pipe, written by the worker's event loop as the pipe takes
it: a batch of ~600 KB takes many writes. Celery's ``AsynPool.flush``, called as the consumer stops, is meant to
finish a write already begun ("we must continue writing the payloads we already started to keep message
boundaries"), but only while the pool is running, and in a warm shutdown (SIGTERM) the worker closes the pool
first. So a job half written stays half written; the pool's join then writes each process's stop sentinel into
the same pipe, the process reads it as more of the job's body and waits for the rest for ever, and the main
process waits for it in ``Pool.join``: the worker never exits. Seen here under CPU load (once in 10 SIGTERMs of
a busy worker); tests/test_poolstop.py makes it happen every time.

The fix: when ``flush`` finds the pool already closing, each job write that has begun is first driven to its end
while its process reads (it is waiting for that job), for at most ``FINISH_SECONDS``; a process that takes none of
it meanwhile is terminated, so its task goes back to the broker (reject_on_worker_lost) instead of the worker
hanging. A job in a pipe, so finished or written in full before, then runs and is acknowledged like one already
running: Celery's flush would hand it back to the broker as not yet accepted, though its process runs it anyway
(so it ran twice, and the process waited 30 s in billiard for its result to be read: the other stall seen under
load). Flush goes on as written for the rest: a job whose write has not begun is handed back, as nothing of it is
in a pipe.

Version check: written for celery 5.7's AsynPool (``flush``, ``_active_writers``, each job's ``_writer`` weakref
and ``_write_to`` process, ``proc.inq._writer``). On another celery it is not applied, with a warning; before
extending ``WRITTEN_FOR``, read ``celery/concurrency/asynpool.py`` and run tests/test_poolstop.py.
"""

from __future__ import annotations

import inspect
import logging
import select
import time
from importlib.metadata import version
from typing import Any

from worker.celeryapp.patches import refused

logger = logging.getLogger(__name__)
WRITTEN_FOR = ("5.7.",)  # celery versions whose AsynPool this was written against
FINISH_SECONDS = 10.0  # for each begun write: its process is idle and reads at once, unless it is stuck


def finish_begun_writes(pool: Any, seconds: float = FINISH_SECONDS) -> dict[Any, Any]:
    """Drive every job write of ``pool`` (an AsynPool) that has begun to its end. Return every job written in full
    to a process that has not yet taken it up (finished now or before), by its key in the pool's cache: that
    process will run it, whatever the pool does with the job."""
    written = {}
    for key, job in list(getattr(pool, "_cache", {}).items()):
        proc = getattr(job, "_write_to", None)
        if proc is None or getattr(job, "_accepted", False):
            continue  # nothing of it in a pipe yet, or already running: flush leaves both as they should be
        ref = getattr(job, "_writer", None)
        gen = ref() if callable(ref) else None
        if gen is not None and inspect.getgeneratorstate(gen) == inspect.GEN_SUSPENDED:  # begun, not done
            done = _finish(gen, proc, seconds)
            pool._active_writers.discard(gen)
            if not done:
                logger.warning("pool process %s took none of its job for %.0f s at shutdown: terminated, its task "
                               "goes back to the broker", proc.pid, seconds)
                proc.terminate()
                continue
        written[key] = job
    return written


def _finish(gen: Any, proc: Any, seconds: float) -> bool:
    writer = proc.inq._writer
    fd = writer if isinstance(writer, int) else writer.fileno()
    poller = select.poll()  # not select(): a worker may hold descriptors past FD_SETSIZE
    poller.register(fd, select.POLLOUT)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc._is_alive():
        if poller.poll(200):  # writable, or an error the next write reports
            try:
                next(gen)
            except (StopIteration, OSError, EOFError):
                return True
    return not proc._is_alive()  # a process that died meanwhile is handled by the pool as any lost process


def applies_to(celery_version: str) -> bool:
    from celery.concurrency import asynpool

    return celery_version.startswith(WRITTEN_FOR) and callable(getattr(asynpool.AsynPool, "flush", None)) \
        and callable(getattr(asynpool.AsynPool, "_stop_task_handler", None))


def apply() -> bool:
    """Wrap the prefork pool's flush (idempotent); False (with a warning) on a celery it was not written for."""
    from billiard.pool import CLOSE
    from celery.concurrency import asynpool

    found = version("celery")
    if not applies_to(found):
        return refused(logger, "poolstop", "celery", WRITTEN_FOR, found,
                       "check whether a warm shutdown still hangs on a half-written job (tests/test_poolstop.py)")
    original = asynpool.AsynPool.flush
    if getattr(original, "_feedworker_poolstop", False):
        return True

    def flush(self: Any) -> None:
        if self._state != CLOSE:
            original(self)
            return
        # A warm shutdown: Celery's flush would leave begun writes half done. Finished here, those jobs, and the
        # ones written in full before, are their processes' now: kept out of flush's hand-back, they run and are
        # acknowledged as a running task is (handed back, the process would run the job anyway, its message would
        # come back to run again, and the process would wait 30 s for a result nobody reads).
        written = finish_begun_writes(self)
        for key in written:
            self._cache.pop(key, None)
        try:
            original(self)
        finally:
            self._cache.update(written)

    flush._feedworker_poolstop = True  # type: ignore[attr-defined]
    asynpool.AsynPool.flush = flush
    return True
