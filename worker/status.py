"""`feedworker status`: is it flowing, how far behind, what is failing. A table on a terminal, JSON for scripts.

Exit code (usable as a health check): 0 healthy; 2 when the oldest drop still waiting is older than ``--max-age``;
1 when the store or the broker can't be reached (what could be read is printed all the same).

The broker side (queues, workers) and the ledger side (backlog, outcomes) are read separately, so one being down
never hides the other; the metrics endpoint reads the same views (worker/metrics.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery

from tasks.changes import stats as change_stats
from tasks.store import Store, now
from tasks.webhooks import states as webhook_states
from worker.broker import broker_url, ping
from worker.settings import Settings

EXIT_OK, EXIT_UNREACHABLE, EXIT_TOO_OLD = 0, 1, 2


@dataclass
class BrokerView:
    reachable: bool
    queues: dict[str, int] = field(default_factory=dict)  # messages waiting, per queue
    in_flight: int | None = None  # delivered to a worker, not yet acknowledged (Redis brokers)
    workers: list[str] = field(default_factory=list)  # workers that answered, with the queues they consume


def configured_broker(settings: Settings) -> str | None:
    """The broker URL, or None when there is none (no setting and no embedded broker running here)."""
    try:
        return broker_url(settings)
    except Exception:
        return None


def broker_view(app: Celery, url: str | None, timeout: float = 1.0, ask_workers: bool = True) -> BrokerView:
    """Queue depths, unacknowledged messages and the workers that answer, read from the broker at ``url``."""
    if url is None or not ping(url, timeout):
        return BrokerView(reachable=False)
    replies: dict[str, Any] = {}
    if ask_workers:
        with app.connection_for_write(url) as conn:
            replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    names = {app.conf.task_default_queue} | {q["name"] for qs in replies.values() for q in qs or ()}
    with app.connection_for_write(url) as conn:  # a fresh one: after a broadcast its client answers None
        queues = {name: _depth(conn, name) for name in sorted(names)}
        return BrokerView(True, queues, _in_flight(conn), sorted(replies))


def _depth(conn: Any, queue: str) -> int:
    try:
        return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:
        return 0  # not declared yet: nothing was ever sent to it


def _in_flight(conn: Any) -> int | None:
    channel = conn.default_channel
    key = getattr(channel, "unacked_key", None)  # kombu's Redis transport keeps them in one hash
    if key is None:
        return None
    try:
        return int(channel.client.hlen(key))
    except Exception:
        return None


@dataclass
class LedgerView:
    backlog: int  # drops queued with no outcome yet
    oldest_queued_age: float | None  # seconds; None when nothing is queued


def ledger_view(store: Store) -> LedgerView:
    stamp = now()
    oldest = store.oldest_queued()
    # Counting only the unfinished drops: finished ones are filtered out by the (future) cut-off.
    backlog = int(store.state_counts(stamp + timedelta(days=1)).get("queued", 0))
    return LedgerView(backlog, round((stamp - oldest).total_seconds(), 3) if oldest else None)


def gather(settings: Settings, app: Celery, store: Store) -> dict[str, Any]:
    """Everything status shows, as plain data (the --json output)."""
    broker = broker_view(app, configured_broker(settings))
    data: dict[str, Any] = {
        "broker_reachable": broker.reachable,
        "queue_depth": sum(broker.queues.values()) if broker.reachable else None,
        "queues": broker.queues,
        "in_flight": broker.in_flight,
        "workers": broker.workers,
    }
    try:
        missing = missing_sqlite_file(store)
        if missing:
            raise FileNotFoundError(missing)
        data.update(_ledger(store))
        data["store_reachable"] = True
    except Exception as exc:
        data.update(store_reachable=False, store_error=_store_problem(store, exc), backlog=None,
                    oldest_queued_age_seconds=None, outcomes=None, records=None, recent_failures=[],
                    changes=None, webhooks=[])
    return data


def missing_sqlite_file(store: Store) -> str | None:
    """Why a SQLite store can't be there (its file doesn't exist), so that looking never creates an empty one."""
    from sqlalchemy.engine import make_url

    url = make_url(store.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if Path(url.database).exists():
        return None
    return f"no SQLite store at {Path(url.database).resolve()} (run from the folder of `feedworker run`?)"


def _ledger(store: Store) -> dict[str, Any]:
    stamp = now()
    view = ledger_view(store)
    return {
        "backlog": view.backlog,
        "oldest_queued_age_seconds": view.oldest_queued_age,
        "outcomes": {
            "last_hour": _finished(store.state_counts(stamp - timedelta(hours=1))),
            "last_day": _finished(store.state_counts(stamp - timedelta(days=1))),
            "all": _finished(store.state_counts()),
        },
        "records": dict(store.count_items()),
        "changes": change_stats(store),  # the change log: {"count", "oldest_at"}
        "webhooks": [{**w, "failing_since": _iso(w["failing_since"]), "delivered_at": _iso(w["delivered_at"])}
                     for w in webhook_states(store)],
        "recent_failures": [{"file": f["name"], "stage": f["stage"], "reason": f["reason"],
                             "at": _iso(f["finished_at"])} for f in store.recent_failures(5)],
    }


def exit_code(data: dict[str, Any], max_age: float) -> int:
    if not (data["broker_reachable"] and data["store_reachable"]):
        return EXIT_UNREACHABLE
    age = data["oldest_queued_age_seconds"]
    return EXIT_TOO_OLD if age is not None and age > max_age else EXIT_OK


def _finished(counts: Any) -> dict[str, int]:
    return {s: int(counts.get(s, 0)) for s in ("published", "unchanged", "failed")}


def _iso(value: datetime | None) -> str | None:
    """UTC, ISO 8601 with ``Z`` (SQLite hands timestamps back without their zone; they were written in UTC)."""
    if value is None:
        return None
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")


def _store_problem(store: Store, exc: BaseException) -> str:
    from tasks.migrate import is_current

    if isinstance(exc, FileNotFoundError):
        return str(exc)
    with contextlib.suppress(Exception):  # the store itself is down: its own error says more
        if not is_current(store):
            return "the store's schema is not current: run `feedworker migrate`"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render(data: dict[str, Any], max_age: float) -> None:
    from rich.console import Console

    console = Console()
    console.print(_summary_table(data, max_age))
    if data["recent_failures"]:
        console.print(_failures_table(data["recent_failures"]))
        console.print("all failures: [bold]feedworker failures[/]; retry them: [bold]feedworker replay[/]")


def _summary_table(data: dict[str, Any], max_age: float) -> Any:
    from rich.table import Table

    table = Table(title="feedworker status", show_header=False)
    if data["broker_reachable"]:
        queues = ", ".join(f"{name} {n}" for name, n in data["queues"].items())
        flight = f"; {data['in_flight']} in flight" if data["in_flight"] is not None else ""
        table.add_row("broker", "reachable")
        table.add_row("queue depth", f"{queues}{flight}")
        table.add_row("workers", ", ".join(data["workers"]) or "[red]none answered[/]")
    else:
        table.add_row("broker", "[red]UNREACHABLE[/]")
    if not data["store_reachable"]:
        table.add_row("store", f"[red]UNREACHABLE[/]: {data['store_error']}")
        return table
    table.add_row("backlog (queued drops)", str(data["backlog"]))
    table.add_row("oldest queued", _oldest_text(data["oldest_queued_age_seconds"], max_age))
    for span in ("last_hour", "last_day", "all"):
        o = data["outcomes"][span]
        table.add_row(f"outcomes ({span.replace('_', ' ')})",
                      f"published {o['published']}, unchanged {o['unchanged']}, failed {o['failed']}")
    records = data["records"]
    table.add_row("records", f"{records.get('records', 0)} full, {records.get('stubs', 0)} stubs")
    log = data["changes"]
    table.add_row("change log", f"{log['count']} changes, oldest {(log['oldest_at'] or '-')[:19].replace('T', ' ')}")
    for w in data["webhooks"]:
        table.add_row(f"webhook {w['endpoint']}", _webhook_text(w))
    return table


def _oldest_text(age: float | None, max_age: float) -> str:
    if age is None:
        return "-"
    if age > max_age:
        return f"[red]{age_text(age)} ago: OVER --max-age {age_text(max_age)}[/]"
    return f"{age_text(age)} ago"


def _failures_table(failures: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="recent failures (newest first)")
    for col in ("file", "stage", "reason", "when (UTC)"):
        table.add_column(col)
    for f in failures:
        table.add_row(f["file"], f["stage"] or "", f["reason"] or "", (f["at"] or "")[:19].replace("T", " "))
    return table


def _webhook_text(w: dict[str, Any]) -> str:
    if not w["failures"]:
        return f"ok, {w['behind']} changes behind"
    return (f"[red]FAILING since {w['failing_since']} ({w['failures']} tries: {w['last_error']})[/], "
            f"{w['behind']} changes behind")
