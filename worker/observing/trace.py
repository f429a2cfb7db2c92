"""`feedworker trace NAME_OR_PATH`: what happened to a file, from the ledger alone (no logs needed).

For each drop of that name or path: when it was discovered and queued, each delivery of each batch that carried
it (and the split that made that batch), each stage's deliveries and times, its outcome (stage, reason), its
record's URL and version, and where its file went. ``--json``: the same as one object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks.names import display
from tasks.shapes import OUTCOMES
from tasks.store.ledger import Store
from tasks.store.lineage import find_drops, lineage

STAGES = ("parse", "verify", "publish")


def trace(store: Store, name_or_path: str) -> dict[str, Any]:
    """The lineage of every drop known by ``name_or_path``, newest first, as plain JSON values."""
    return {"query": name_or_path, "drops": [_plain(lineage(store, row)) for row in find_drops(store, name_or_path)]}


def _plain(lin: dict[str, Any]) -> dict[str, Any]:
    d = lin["drop"]
    record = lin["record"]
    return {
        "file": d["name"], "path": d["path"], "key": d["key"], "origin": d["origin"], "size": d["size"],
        "discovered_at": _iso(d["discovered_at"]), "queued_at": _iso(d["queued_at"]), "sent": d["attempts"],
        "state": d["state"], "stage": d["stage"], "reason": d["reason"], "finished_at": _iso(d["finished_at"]),
        "record": None if record is None else {"url": record["url"], "version": record["version"],
                                               "updated_at": _iso(record["updated_at"])},
        "file_now": _where(d),
        "batches": _batches(lin["deliveries"]),
    }


def _where(d: dict[str, Any]) -> dict[str, Any]:
    if d["finalized_at"] is None:
        return {"action": "not put away yet" if d["state"] in OUTCOMES else "waiting",
                "path": d["path"], "at": None}
    action = "moved" if d["final_path"] else "deleted or left"
    return {"action": action, "path": d["final_path"], "at": _iso(d["finalized_at"])}


def _batches(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The delivery rows grouped by batch, in the order the batches were first delivered."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = out.setdefault(r["batch_id"], {"batch": r["batch_id"], "parent": r["parent"], "label": r["label"],
                                           "drops": r["size"], "stages": []})
        b["stages"].append({"stage": r["stage"], "deliveries": r["count"], "first_at": _iso(r["first_at"]),
                            "last_at": _iso(r["last_at"]), "lost": r["lost"]})
    for b in out.values():
        b["stages"].sort(key=lambda s: STAGES.index(s["stage"]) if s["stage"] in STAGES else 9)
    return list(out.values())


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def render(data: dict[str, Any]) -> list[str]:
    """The trace as lines of text, every stored text escaped (file names and reasons are untrusted)."""
    if not data["drops"]:
        return [f"no drop known by {_safe(data['query'])}"]
    lines: list[str] = []
    for d in data["drops"]:
        lines += [f"{_safe(d['file'])}  ({_safe(d['path'])}, {d['size']} bytes, {d['origin']})",
                  f"  discovered {d['discovered_at']}, queued {d['queued_at']}, sent {d['sent']} time(s)"]
        for b in d["batches"]:
            how = f"{b['label']} ({b['drops']} drops)" if b["label"] else f"batch of {b['drops']} drops"
            lines.append(f"  batch {b['batch'][:8]}: {how}")
            for s in b["stages"]:
                lost = f"; last lost: {_safe(s['lost'])}" if s["lost"] else ""
                lines.append(f"    {s['stage']:<8} {s['deliveries']} deliveries, "
                             f"{s['first_at']} .. {s['last_at']}{lost}")
        outcome = d["state"] + (f" at {d['stage']}: {_safe(d['reason'])}" if d["reason"] else "")
        lines.append(f"  outcome  {outcome} ({d['finished_at'] or 'not yet'})")
        if d["record"]:
            lines.append(f"  record   {_safe(d['record']['url'])} version {d['record']['version']}")
        lines.append(f"  file     {d['file_now']['action']}: {_safe(d['file_now']['path'] or '-')}")
    return lines


def _safe(text: str | None) -> str:
    """Control characters and the like shown as escapes (the ledger's own form, tasks/names.py), so a file name
    can't drive the terminal."""
    return display(text or "")
