"""A long-running process's start-up heap, set aside from the garbage collector once its imports are done.

A worker holds about 100,000 objects that live as long as it does: Celery, kombu, SQLAlchemy, pydantic, aiohttp.
CPython's full collection walks every tracked object, and under load a process runs one every few seconds: 55-140
ms each here, in the middle of a batch (and in a prefork pool child, writing to every page it shares with its
parent). ``gc.freeze()`` moves the objects that exist now to the permanent generation, which no collection walks.
Measured on bench/e2e.py (3,000 files): a pool child's full collections went from 97-143 ms to 1.5-3 ms, the main
process's from 79 ms to 1.4-3.6 ms; ~7 % less CPU a file end to end (interleaved A/B, bench/README.md).

Called where the start-up is over: a Celery worker before its pool forks (``worker_init``), `ingest` before it
reads its folders, `watch` and `run` before their loops. What is made later is collected as before.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect the young generations' garbage (a frozen cycle is never freed), then freeze everything left.

    Not a full collection first: it costs what it saves (~50 ms), and the old generation's garbage was collected
    as start-up ran (a full collection here finds none)."""
    gc.collect(1)
    gc.freeze()
