"""Health checks for compose and Kubernetes: liveness (alive, broker reachable) and readiness (store usable).

Two ways to ask, the same checks behind both:

- the command ``feedworker health live|ready`` (exit 0 healthy, 1 not; ``--json`` for the details), for exec
  probes. ``live --worker celery@HOST`` also sends that Celery worker a control ping through the broker: an answer
  proves its main loop is alive and consuming, which a process listing can't;
- ``GET /livez`` and ``GET /readyz`` beside ``/metrics`` on the metrics port (`feedworker run` / `watch` with
  ``metrics_port`` set, a worker with ``--metrics-port``): 200 healthy, 503 not, a JSON body either way.

Liveness must not depend on the store (a database outage should not restart every pod); readiness does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery

from tasks.store.ledger import Store
from worker.observing.probes import is_redis, ping
from worker.observing.status import configured_broker, missing_sqlite_file
from worker.settings import Settings

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def broker_check(settings: Settings, timeout: float = 2.0) -> Check:
    url = configured_broker(settings)
    if url is None:
        return Check("broker", False, "no broker configured (FEEDWORKER_BROKER_URL) and no embedded broker here")
    if not ping(url, timeout):
        return Check("broker", False, "no answer")
    return Check("broker", True, "answers PING" if is_redis(url) else "answers (AMQP handshake)")


def worker_check(app: Celery, url: str, name: str, timeout: float = 2.0) -> Check:
    """A control ping to one Celery worker (its node name, e.g. ``celery@host``)."""
    with app.connection_for_write(url) as conn:
        replies = app.control.ping(destination=[name], timeout=timeout, connection=conn)
    answered = any(name in r for r in replies or [])
    return Check(f"worker {name}", answered, "answers ping" if answered else f"no answer within {timeout:g} s")


def store_check(store: Store) -> Check:
    from sqlalchemy import text

    missing = missing_sqlite_file(store)
    if missing:
        return Check("store", False, missing)
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return Check("store", False, _first_line(exc))
    return Check("store", True, f"reachable ({store.dialect})")


def migrations_check(store: Store) -> Check:
    from tasks.store.migrate import current_revision, head_revision

    try:
        current, head = current_revision(store), head_revision()
    except Exception as exc:
        return Check("migrations", False, _first_line(exc))
    if current == head:
        return Check("migrations", True, f"current ({head})")
    return Check("migrations", False, f"schema at {current or 'nothing'}, code needs {head}: run `feedworker migrate`")


def liveness(settings: Settings, app: Celery | None = None, worker: str | None = None,
             alive: Callable[[], bool] | None = None) -> list[Check]:
    checks = []
    if alive is not None:
        ok = alive()
        checks.append(Check("process", ok, "running" if ok else "its main loop has stopped"))
    checks.append(broker_check(settings))
    if worker is not None:
        url = configured_broker(settings)
        if app is None or url is None or not checks[-1].ok:
            checks.append(Check(f"worker {worker}", False, "the broker can't be reached"))
        else:
            checks.append(worker_check(app, url, worker))
    return checks


def readiness(store: Store) -> list[Check]:
    store_ok = store_check(store)
    return [store_ok, migrations_check(store) if store_ok.ok else Check("migrations", False, "store unreachable")]


def healthy(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)


def as_json(checks: list[Check]) -> str:
    return json.dumps({"ok": healthy(checks), "checks": [asdict(c) for c in checks]})


def as_text(checks: list[Check]) -> str:
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks)


def wsgi_app(metrics_app: Wsgi, settings: Settings, store: Store, alive: Callable[[], bool] | None = None) -> Wsgi:
    """``/livez`` and ``/readyz`` here; everything else (``/metrics``) to prometheus-client's app."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/livez":
            checks = liveness(settings, alive=alive)
        elif path == "/readyz":
            checks = readiness(store)
        else:
            return metrics_app(environ, start_response)
        body = as_json(checks).encode()
        status = "200 OK" if healthy(checks) else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
