"""`feedworker run DROP_DIR`: the whole job in one supervised command.

Starts, in order: the embedded broker when no ``FEEDWORKER_BROKER_URL`` is set (worker/running/broker.py), the store's
migrations, the Celery workers (``celery -A worker worker`` in the roles of worker/running/roles.py: general, live
and verify, each a child process with its own pool), Flower with
``--flower``, and the watcher (a thread of this process). A child that dies unexpectedly is started again after a
backoff (1 s, doubling to 30 s; reset once it has run a minute); so is the watcher thread.

SIGTERM or Ctrl-C stops it in the order that loses nothing: the watcher first (no new drops), then the worker
with a warm shutdown (running tasks finish, reserved ones go back to the queue), then Flower, then the embedded
broker (SIGTERM: it flushes its append-only file). Whatever was queued is still queued next time: in the broker's
append-only file and in the ledger. A second signal makes the worker's shutdown cold (its unfinished tasks come
back through the visibility timeout). Children run in their own sessions, so Ctrl-C reaches only this process,
and they are told to stop if it dies (Linux parent-death signal).

Just over 300 lines: one lifecycle (start in order, watch, restart with backoff, stop in reverse), kept whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from tasks.private import private_dir, private_file
from tasks.store.ledger import Store
from tasks.store.migrate import upgrade
from worker.celeryapp import heap
from worker.running.broker import EmbeddedBroker, ping
from worker.running.children import bound_to_parent
from worker.running.roles import argv, roles
from worker.settings import Settings, url_file

logger = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER = 1.0, 30.0, 60.0
FLOWER_ADDRESS = "127.0.0.1"  # `run` serves Flower on loopback only; FLOWER_PORT moves it (default 5555)



@dataclass
class Backoff:
    """The pause before a restart: 1 s, doubling to 30 s; back to 1 s once the restarted thing has run a while."""

    delay: float = BACKOFF_FIRST

    def next(self) -> float:
        delay, self.delay = self.delay, min(BACKOFF_MAX, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


@dataclass
class Child:
    """One supervised process: how to start it, and its restart state."""

    name: str
    argv: list[str]
    env: dict[str, str]
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    nice: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None
    restarts: int = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(bound_to_parent(self.argv, self.nice), env=self.env, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.started, self.restart_at = time.monotonic(), None
        logger.info("started %s (pid %d)", self.name, self.proc.pid)

    def check(self, now: float) -> None:
        """Start it again if it died: at once the first time, then with a doubling backoff."""
        if self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            if now - self.started > HEALTHY_AFTER:
                self.backoff.reset()
            return
        if self.restart_at is None:
            delay = self.backoff.next()
            self.restart_at = now + delay
            logger.error("%s exited with code %s; starting it again in %.0f s", self.name, code, delay)
        elif now >= self.restart_at:
            self.restarts += 1
            self.start()

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> None:
        """Wait for it to exit; kill it after ``timeout``."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()


@dataclass
class WatcherThread:
    """The watcher in a thread of this process, restarted with a backoff if it raises."""

    make: Callable[[], Any]  # () -> DropWatcher
    watcher: Any = None
    thread: threading.Thread | None = None
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        self.watcher = self.make()
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:
            logger.exception("the watcher stopped on an error")
            self.errors.append(exc)
            self.restart_at = time.monotonic() + self.backoff.next()

    def check(self, now: float) -> None:
        if self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.start()

    def stop(self, timeout: float = 15.0) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.thread is not None:
            self.thread.join(timeout)


class Supervisor:
    def __init__(self, settings: Settings, drop_dir: Path, flower: bool, concurrency: int | None) -> None:
        self.settings, self.drop_dir = settings, drop_dir
        self.flower, self.concurrency = flower, concurrency or settings.worker_concurrency
        self.broker: EmbeddedBroker | None = None
        self.broker_url = ""
        self.children: list[Child] = []
        self.watcher: WatcherThread | None = None
        self.store: Store | None = None
        self.stopping = threading.Event()
        self.signals = 0
        self._lock: IO[str] | None = None
        self.metrics: Any = None

    # -- start ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        self.broker_url = self.settings.broker_url or self._start_embedded_broker()
        self.metrics = self._serve_metrics()  # before the children: they inherit its metrics directory
        env = {**os.environ, "FEEDWORKER_BROKER_URL": self.broker_url}
        for role in roles(self.settings, self.concurrency):  # the general worker, then live and verify
            self.children.append(Child(role.name, argv(role, self.settings), {**env, **dict(role.env)}, nice=role.nice,
                                       stop_timeout=self.settings.task_time_limit + 10.0))
        if self.flower:
            self.children.append(Child("flower", self._flower_argv(), self._flower_env(env), stop_timeout=5.0))
        for child in self.children:  # first: a worker takes seconds to boot (it migrates too, under a lock)
            child.start()
        self.store = Store(self.settings.store_url)
        upgrade(self.store)
        self.watcher = WatcherThread(self._make_watcher)
        self.watcher.start()
        workers = ", ".join(f"{r.name} {r.concurrency} {r.pool}" for r in roles(self.settings, self.concurrency))
        logger.info("feedworker run: watching %s with %s; broker %s; store %s%s",
                    self.drop_dir, workers, "embedded" if self.broker else "configured",
                    self.store.engine.url.render_as_string(hide_password=True),
                    f"; Flower on http://{FLOWER_ADDRESS}:{env.get('FLOWER_PORT', '5555')} (user:password in "
                    f"{self.settings.state_dir / 'flower.auth'} unless FEEDWORKER_FLOWER_BASIC_AUTH is set)"
                    if self.flower else "")

    def _start_embedded_broker(self) -> str:
        """Take the state folder (one `feedworker run` per folder), stop an orphan of a killed run, start ours."""
        state = private_dir(self.settings.state_dir)
        fd = os.open(state / "run.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._lock = os.fdopen(fd, "a+")  # held for the life of the process
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel if we die
        except BlockingIOError:
            raise SystemExit(f"feedworker: another `feedworker run` is using {state.resolve()}; "
                             "stop it, or run from another folder") from None
        _stop_orphan_broker(url_file(self.settings))
        self.broker = EmbeddedBroker(state)
        return self.broker.start()

    def _flower_argv(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--address={FLOWER_ADDRESS}"]

    def _flower_env(self, env: dict[str, str]) -> dict[str, str]:
        # Read-only unless FLOWER_READ_ONLY says otherwise: its API could otherwise apply any registered task
        # (feedworker.publish included) with arguments of the caller's choosing, or shut workers down.
        env = {"FLOWER_READ_ONLY": "true", **env}
        if env.get("FLOWER_BASIC_AUTH"):
            return env
        # Never an open API, even on loopback: Flower's unauthenticated mode also answers any web page's
        # cross-origin calls (worker control included). Without configured credentials, make some.
        return {**env, "FLOWER_BASIC_AUTH": flower_basic_auth(self.settings)}

    def _serve_metrics(self) -> Any:
        """/metrics, /livez, /readyz on ``metrics_port``: this process's and the worker pool's metrics."""
        if self.settings.metrics_port is None:
            return None
        from worker.celeryapp.celery_app import app
        from worker.observing.metricserver import serve

        return serve(self.settings.metrics_port, settings=self.settings, app=app, alive=self._watcher_alive)

    def _watcher_alive(self) -> bool:
        thread = self.watcher.thread if self.watcher is not None else None
        return thread is None or thread.is_alive()  # None: not started yet

    def _make_watcher(self) -> Any:
        from worker.celeryapp.celery_app import app
        from worker.watching.watcher import DropWatcher

        app.conf.broker_url = self.broker_url
        assert self.store is not None
        return DropWatcher(self.drop_dir, self.settings.watch, self.store, app, self.settings)

    # -- run and stop ------------------------------------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            logger.info("%s received: stopping (the watcher, then the workers, then the broker)",
                        signal.Signals(signum).name)
            self.stopping.set()
        else:
            logger.warning("second signal: workers stop now; their unfinished tasks return to the queue")
            for child in self.children:
                child.signal(signal.SIGQUIT if child.name.endswith(" worker") else signal.SIGTERM)

    def supervise(self) -> None:
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for child in self.children:
                child.check(now)
            if self.watcher is not None:
                self.watcher.check(now)

    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        for child in self.children:
            child.signal(child.stop_signal)  # all at once: the worker drains while Flower and the rest stop
        for child in self.children:
            child.wait(child.stop_timeout)
        if self.store is not None:
            self.store.dispose()
        if self.metrics is not None:
            self.metrics.stop()
        if self.broker is not None:
            self.broker.stop()
        if self._lock is not None:
            self._lock.close()
        logger.info("feedworker run: stopped")


def flower_basic_auth(settings: Settings) -> str:
    """``user:password`` for Flower: FEEDWORKER_FLOWER_BASIC_AUTH, else a generated one kept (mode 0600) in
    ``<state_dir>/flower.auth`` so the user can read it and it stays the same across runs."""
    if settings.flower_basic_auth is not None:
        return settings.flower_basic_auth.get_secret_value()
    path = settings.state_dir / "flower.auth"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    auth = f"feedworker:{secrets.token_urlsafe(18)}"
    private_dir(settings.state_dir)
    with os.fdopen(private_file(path), "w") as f:
        f.write(auth + "\n")
    return auth


def _stop_orphan_broker(path: Path) -> None:
    """A run that was killed leaves its embedded broker running on our data: shut it down (it flushes its
    append-only file first) before starting ours on the same folder."""
    if not path.is_file():
        return
    url = path.read_text(encoding="utf-8").strip()
    if not ping(url, 0.5):
        return
    import redis

    logger.warning("stopping the embedded broker a killed `feedworker run` left running")
    client = redis.Redis.from_url(url, socket_timeout=5)
    with contextlib.suppress(redis.ConnectionError, OSError):  # it closes the connection as it goes down
        client.shutdown()
    for _ in range(100):
        if not ping(url, 0.2):
            return
        time.sleep(0.05)


def run_main(settings: Settings, drop_dir: Path, flower: bool = False, concurrency: int | None = None) -> int:
    """`feedworker run`: 0 after a clean stop on SIGTERM / Ctrl-C."""
    sup = Supervisor(settings, drop_dir, flower, concurrency)
    signal.signal(signal.SIGTERM, sup.on_signal)
    signal.signal(signal.SIGINT, sup.on_signal)
    try:
        sup.start()
        heap.settle()  # the imports are done, the watcher made (worker/celeryapp/heap.py)
        sup.supervise()
    finally:
        sup.shutdown()
    return 0
