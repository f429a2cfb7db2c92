"""The Celery app: `celery -A worker worker` finds it as ``worker.app``.

Delivery settings, chosen on purpose (see README "Guarantees" and docs/celery.md for the measurements):
- acks_late + reject_on_worker_lost: a task is acknowledged only after it ran, so a killed worker's tasks are
  delivered again; every stage is safe to repeat (the publish stage skips drops the ledger has finished).
- prefetch multiplier 1: a worker holds only what it runs, so nothing waits unacked behind a long task.
- visibility timeout (default 60 s) above the hard time limit (default 55 s), so a running task is never
  handed to a second worker; kombu's restore sweep scans every 5 s (throttle 1) instead of every ~100 s, so a
  SIGKILLed worker's tasks come back about a minute later, not an hour.

On a RabbitMQ broker (``amqp://``) the Redis-only options give way to :func:`rabbitmq_settings`.
"""

from __future__ import annotations

import logging
from typing import Any

import click
from celery import Celery, bootsteps, signals
from kombu.entity import Exchange, Queue

from tasks import stages
from tasks.queues import STAGE_QUEUES
from worker.celeryapp import codec
from worker.celeryapp.patches import envelope, kombufix, poolstop, softlimit
from worker.celeryapp.runtime import WorkerRuntime
from worker.celeryapp.sweep import LostSweep
from worker.observing.probes import is_amqp
from worker.settings import Settings, broker_url, get_settings

logger = logging.getLogger(__name__)
RESTORE_LOCK_SECONDS = 15  # kombu's restore sweep lock expires after this (docs/celery.md)


def make_app(settings: Settings) -> Celery:
    kombufix.apply()  # a worker must reconnect when its Redis restarts, not exit (see patches/kombufix.py)
    softlimit.install()  # ...and a late soft time limit must not kill an idle pool process (patches/softlimit.py)
    envelope.apply()  # message envelopes written with orjson: ~4 % less CPU a file (patches/envelope.py)
    poolstop.apply()  # a warm shutdown must not hang on a job half written to a pool process (patches/poolstop.py)
    codec.register_codec()
    stages.install(WorkerRuntime())  # what the stage tasks need of this process (tasks/ never imports worker/)
    app = Celery("feedworker", include=["tasks.stages", "worker.celeryapp.webhooks"])
    app.conf.update(
        broker_url=_lazy_broker(settings),
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            # the sweep's lock: a worker killed while it holds it (ms every 5 s) stops every sweep until it
            # expires, 300 s by kombu's default. Two sweeps at once are safe (each restore is a WATCH transaction).
            "unacked_mutex_expire": RESTORE_LOCK_SECONDS,
        },
        task_serializer=codec.NAME,  # orjson: ~4x kombu's json on a batch (worker/celeryapp/codec.py)
        accept_content=["json", codec.CONTENT_TYPE],  # json: messages sent before the codec existed
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_timeout=False,  # the hard time limit hands the message back too: counted and split like a death
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_max_memory_per_child=400_000,  # KiB: a leak costs a restart of one child, not the machine
        task_default_queue="feedworker",
        # Listed, so that `celery -A worker worker` consumes them all by default (-Q picks some: webhooks.py)
        task_queues=task_queues(settings, is_amqp(_lazy_broker(settings) or "")),
        task_routes={"feedworker.webhooks.*": {"queue": "feedworker.webhooks"}},
    )
    if is_amqp(app.conf.broker_url):
        app.conf.update(rabbitmq_settings(settings))
    app.user_options["worker"].add(click.Option(
        ["--metrics-port"], type=int, default=None,
        help="Serve this worker's /metrics, /livez and /readyz on this port (0: any free port)."))
    app.steps["worker"].add(MetricsEndpoint)
    app.steps["worker"].add(LostSweep)  # drops whose messages are gone are sent again (worker/celeryapp/sweep.py)
    return app


def task_queues(settings: Settings, amqp: bool) -> list[Queue]:
    """feedworker's queues. Listed queues are declared as listed (Celery's ``task_default_queue_type`` and
    ``task_default_exchange_type`` shape only queues it makes up), so on RabbitMQ each carries its type and a topic
    exchange here (see ``rabbitmq_settings``)."""
    names = (*STAGE_QUEUES, "feedworker.webhooks")
    if not amqp:
        return [Queue(n) for n in names]  # type: ignore[no-untyped-call]
    return [Queue(n, Exchange(n, type="topic"), routing_key=n,  # type: ignore[no-untyped-call]
                  queue_arguments={"x-queue-type": settings.rabbitmq_queue_type}) for n in names]


def rabbitmq_settings(settings: Settings) -> dict[str, Any]:
    """RabbitMQ's side of the delivery settings (README "Guarantees on RabbitMQ"):

    - a quorum queue (``rabbitmq_queue_type``): durable and replicated, messages persistent. Celery then turns
      global QoS off (``worker_detect_quorum_queues``; quorum queues refuse it), so prefetch is per consumer:
      multiplier 1 = a worker holds as many messages as it has pool processes;
    - a topic exchange: Celery's native delayed delivery (how a quorum queue holds a retry's countdown, in the
      broker rather than in the worker's memory) refuses direct exchanges;
    - publisher confirms: a send returns only once the broker has the message (persisted), so a drop the ledger
      marks as sent is not lost by a broker that crashed with it in a buffer;
    - heartbeats every 30 s: a worker machine that vanishes without closing its connection (pulled plug) is
      noticed within ~60 s and its messages go back, as the visibility timeout does on Redis. A killed process
      closes its socket: its messages go back at once;
    - when a worker loses its connection, RabbitMQ hands the messages it held to others at once, and the tasks
      still running can never be acknowledged: they are stopped (Celery 6's default) rather than left to race
      their redelivered twins. (On Redis the messages wait for the visibility timeout: there they run on.)
    The Redis options (visibility timeout, restore sweep) mean nothing here and are left out. RabbitMQ's
    ``consumer_timeout`` (server side, 30 min by default) must stay above the task time limit.
    """
    return {
        "task_default_queue_type": settings.rabbitmq_queue_type,
        "task_default_exchange_type": "topic",
        "worker_detect_quorum_queues": True,
        "broker_transport_options": {"confirm_publish": True},
        "broker_heartbeat": 30,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }


class MetricsEndpoint(bootsteps.StartStopStep):  # type: ignore[misc]
    """`celery -A worker worker --metrics-port N`: the worker (all its pool processes) serves its own metrics,
    for workers on machines without a `feedworker run`. Under `run` the run process serves them instead."""

    def __init__(self, parent: Any, metrics_port: int | None = None, **options: Any) -> None:
        super().__init__(parent, **options)
        self.port = metrics_port
        self.server: Any = None

    def start(self, parent: Any) -> None:
        if self.port is not None:
            from worker.observing.metricserver import serve

            self.server = serve(self.port)  # no app: the ledger's gauges are run's / watch's

    def stop(self, parent: Any) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _lazy_broker(settings: Settings) -> str | None:
    try:
        return broker_url(settings)
    except Exception:  # reported when a connection is made, with the reason (broker_url raises it again)
        return None


app = make_app(get_settings())


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    """Our structured logs instead of Celery's own set-up (a receiver here tells Celery to leave logging alone)."""
    from worker.observing.logs import setup_logging

    setup_logging(get_settings())


@signals.worker_init.connect
def _metrics_before_fork(**_: Any) -> None:
    """One metrics directory for the worker and the pool children it forks (worker/observing/metricsdir.py)."""
    from worker.observing.metricsdir import prepare_multiprocess

    prepare_multiprocess()


@signals.worker_process_shutdown.connect
def _metrics_child_exited(pid: int | None = None, **_: Any) -> None:
    from worker.observing.metricsdir import process_exited

    if pid is not None:
        process_exited(pid)


@signals.worker_shutdown.connect
def _metrics_release(**_: Any) -> None:
    from worker.observing.metricsdir import release_multiprocess

    release_multiprocess()


@signals.worker_init.connect
def _migrate_before_fork(**_: Any) -> None:
    """Bring the schema up to date once per worker, before its pool forks."""
    from tasks.store.ledger import Store
    from tasks.store.migrate import upgrade

    settings = get_settings()
    if app.conf.broker_url is None:
        broker_url(settings)  # raises with the reason and what to do
    store = Store(settings.store_url)
    try:
        upgrade(store)
    finally:
        store.dispose()
    # Import the image checker's stack (aiohttp, httpx) once here, so each pool child inherits it
    # instead of paying 0.2-0.8 s on its first batch: that cold start was the tail of live drop latency.
    import worker.celeryapp.resources  # noqa: F401


@signals.worker_init.connect
def _settle_before_fork(**_: Any) -> None:
    """The start-up heap out of the collector's walks, in this process and in every pool child it forks (heap.py).
    Connected last of the worker_init receivers: what they import is part of it."""
    from worker.celeryapp.heap import settle

    settle()


@signals.worker_process_init.connect
def _warm_child(**_: Any) -> None:
    """Build the child's store engine and image checker before its first task arrives."""
    from tasks.stages import warm_up

    warm_up()
