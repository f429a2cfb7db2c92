"""The Celery workers `feedworker run` starts, one per role, each a child the supervisor restarts.

- **general** (``celery worker``): prefork, ``-c`` processes (default: a core each), every queue but the two below
  (a backfill's parse and publish, webhooks). Niced: when live drops and a backfill want the same cores, the live
  ones get them.
- **live** (``live worker``): prefork, ``live_concurrency`` processes serving ``feedworker.live`` only: every stage
  of a drop the watcher saw, never behind a backfill's messages.
- **verify** (``verify worker``): Celery's threads pool, ``verify_concurrency`` threads serving
  ``feedworker.verify``: a backfill's image checks, which mostly wait on far hosts. All its threads share one
  event loop and HTTP client per process (tasks/images/checker.py), so many batches' checks overlap on warm
  connections, and it costs one process, not one per batch in flight. Its process-wide cap on URLs in flight
  (``images.concurrency``, sized for a prefork process running one batch) is multiplied by
  ``VERIFY_THREADS_PER_CAP``-thread groups: 16 threads, 4x the cap (still ``images.per_host`` a host).

``live_concurrency: 0`` or ``verify_concurrency: 0`` leaves that queue to the general worker (a small machine,
or a test that wants one worker). A plain `celery -A worker worker` consumes every queue, so a deployment of
one command still serves every stage; docker-compose.yml runs the same three roles as services.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from tasks.queues import LIVE_QUEUE, VERIFY_QUEUE
from worker.settings import Settings

BACKFILL_NICE = 10  # the general and verify workers yield the CPU to the live one
VERIFY_THREADS_PER_CAP = 4  # threads of the verify worker per images.concurrency URLs in flight


@dataclass(frozen=True)
class Role:
    name: str  # the supervisor's name for the child (its log lines say "started <name> (pid N)")
    node: str  # Celery node name prefix (shown in Flower and `status`)
    pool: str
    concurrency: int
    queues: tuple[str, ...] = ()  # -Q: only these (empty: every queue but ``exclude``)
    exclude: tuple[str, ...] = ()  # -X
    nice: int = 0
    env: tuple[tuple[str, str], ...] = ()  # settings of its own, over the supervisor's environment


def roles(settings: Settings, concurrency: int) -> list[Role]:
    """The workers to start: the general one always; live and verify unless their concurrency is 0."""
    live, verify = settings.live_concurrency, settings.verify_concurrency
    out = [Role("celery worker", "feedworker", "prefork", concurrency,
                exclude=tuple(q for q, n in ((LIVE_QUEUE, live), (VERIFY_QUEUE, verify)) if n),
                nice=BACKFILL_NICE if live else 0)]
    if live:
        out.append(Role("live worker", "live", "prefork", live, queues=(LIVE_QUEUE,)))
    if verify:
        in_flight = settings.images.concurrency * -(-verify // VERIFY_THREADS_PER_CAP)
        out.append(Role("verify worker", "verify", "threads", verify, queues=(VERIFY_QUEUE,),
                        nice=BACKFILL_NICE if live else 0,
                        env=(("FEEDWORKER_IMAGES__CONCURRENCY", str(in_flight)),)))
    return out


def argv(role: Role, settings: Settings) -> list[str]:
    """The command line of ``role``'s worker: `celery -A worker worker` with its pool, size and queues."""
    cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", role.pool, "-c", str(role.concurrency),
           "-n", f"{role.node}-{os.getpid()}@%h", f"--loglevel={settings.log_level.upper()}",
           "--without-mingle", "--without-gossip"]
    if role.queues:
        cmd += ["-Q", ",".join(role.queues)]
    if role.exclude:
        cmd += ["-X", ",".join(role.exclude)]
    return cmd
