"""`feedworker status`: is it flowing, how far behind, what is failing. A table on a terminal, JSON for scripts.

Exit code 0 when healthy; 2 when the oldest drop still waiting is older than the threshold (usable as a health
check); 1 when the store or broker can't be reached.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from tasks.store import Store, now
from worker.enqueue import queue_depth


def gather(app: Celery, store: Store, broker_ok: bool) -> dict[str, Any]:
    """Everything status shows, as plain data."""
    stamp = now()
    oldest = store.oldest_queued()
    return {
        "queue_depth": _queue_depth(app) if broker_ok else None,
        "workers": _workers(app) if broker_ok else [],
        "backlog": store.state_counts()["queued"],
        "oldest_queued_age_seconds": round((stamp - oldest).total_seconds(), 3) if oldest else None,
        "outcomes": {
            "last_hour": _finished(store.state_counts(stamp - timedelta(hours=1))),
            "last_day": _finished(store.state_counts(stamp - timedelta(days=1))),
            "all": _finished(store.state_counts()),
        },
        "records": dict(store.count_items()),
        "recent_failures": [{"file": f["name"], "stage": f["stage"], "reason": f["reason"],
                             "at": f["finished_at"].isoformat() if f["finished_at"] else None}
                            for f in store.recent_failures()],
    }


def _finished(counts: Any) -> dict[str, int]:
    return {s: int(counts.get(s, 0)) for s in ("published", "unchanged", "failed")}


def _queue_depth(app: Celery) -> int | None:
    try:
        return queue_depth(app)
    except Exception:
        return None


def _workers(app: Celery) -> list[str]:
    replies = app.control.inspect(timeout=1.0).ping() or {}
    return sorted(replies)


def render(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="feedworker status", show_header=False)
    age = data["oldest_queued_age_seconds"]
    table.add_row("queue depth", str(data["queue_depth"]) if data["queue_depth"] is not None else "unknown")
    table.add_row("workers", ", ".join(data["workers"]) or "none answered")
    table.add_row("backlog (queued drops)", str(data["backlog"]))
    table.add_row("oldest queued", f"{age:.1f} s" if age is not None else "-")
    for span in ("last_hour", "last_day", "all"):
        o = data["outcomes"][span]
        table.add_row(f"outcomes ({span.replace('_', ' ')})",
                      f"published {o['published']}, unchanged {o['unchanged']}, failed {o['failed']}")
    table.add_row("records", ", ".join(f"{k} {v}" for k, v in sorted(data["records"].items())) or "0")
    console.print(table)
    if data["recent_failures"]:
        fails = Table(title="recent failures")
        for col in ("file", "stage", "reason"):
            fails.add_column(col)
        for f in data["recent_failures"]:
            fails.add_row(f["file"], f["stage"] or "", f["reason"] or "")
        console.print(fails)
