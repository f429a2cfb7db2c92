"""`feedworker status`: is it flowing, how far behind, what is failing. A table on a terminal, JSON for scripts.

Exit code (usable as a health check): 0 healthy; 2 when the oldest drop still waiting is older than ``--max-age``;
1 when the store or the broker can't be reached (what could be read is printed all the same).

The broker side (queues, workers) and the ledger side (backlog, outcomes) are read separately, so one being down
never hides the other; the metrics endpoint reads the same views (worker/observing/metricserver.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery

from tasks.names import display
from tasks.shapes import OUTCOMES
from tasks.store.changes import stats as change_stats
from tasks.store.engine import now
from tasks.store.ledger import Store
from tasks.store.webhooks import states as webhook_states
from tasks.utc import as_utc
from worker.observing.probes import broker_view  # queues, in flight, workers: the same probe as health and metrics
from worker.observing.tampered import tampered_folders
from worker.settings import Settings, broker_url

EXIT_OK, EXIT_UNREACHABLE, EXIT_TOO_OLD = 0, 1, 2


def configured_broker(settings: Settings) -> str | None:
    """The broker URL, or None when there is none (no setting and no embedded broker running here)."""
    try:
        return broker_url(settings)
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
        "tampered_folders": tampered_folders(settings.state_dir),
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
    return {s: int(counts.get(s, 0)) for s in OUTCOMES}


def _iso(value: datetime | None) -> str | None:
    """UTC, ISO 8601 with ``Z`` (SQLite hands timestamps back without their zone; they were written in UTC)."""
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def _store_problem(store: Store, exc: BaseException) -> str:
    from tasks.store.migrate import is_current

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
    _folders_row(table, data.get("tampered_folders") or [])
    if data["broker_reachable"]:
        queues = "\n".join(f"{name} {n}" for name, n in data["queues"].items())  # a lane a line
        flight = f"\n{data['in_flight']} in flight" if data["in_flight"] is not None else ""
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
        table.add_row(*_cells(f["file"], f["stage"], f["reason"], (f["at"] or "")[:19].replace("T", " ")))
    return table


def _cells(*values: str | None) -> list[Any]:
    """Untrusted text as table cells: escaped (tasks/names.py), and plain text, never read as rich markup."""
    from rich.text import Text

    return [Text(display(v or "")) for v in values]


def _folders_row(table: Any, tampered: list[dict[str, Any]]) -> None:
    """The reserved folders a watcher found tampered with (worker/observing/tampered.py); nothing when all is well."""
    from rich.text import Text

    for t in tampered:
        table.add_row(Text("reserved folder", style="red"),
                      Text(f"TAMPERED: {display(t['folder'])} {display(t['why'])}", style="red"))


def _webhook_text(w: dict[str, Any]) -> Any:
    """An endpoint's row: its last error is a receiver's text, so it is escaped and never read as rich markup."""
    from rich.text import Text

    if not w["failures"]:
        return Text(f"ok, {w['behind']} changes behind")
    return Text(f"FAILING since {w['failing_since']} ({w['failures']} tries: {display(str(w['last_error']))}), "
                f"{w['behind']} changes behind", style="red")
