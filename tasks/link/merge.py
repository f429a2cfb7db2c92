"""The merge rules, as pure functions over the rows a batch touches (the store locks and writes them).

- A full record is created, or updated when its content changed and its drop is later (file mtime, then name).
  The same content from a later drop only moves the order forward, so an older version can't win afterwards.
- A stub carries its latest citation; it never overwrites a full record. A full record replaces a stub.
- Only a drop that changed its own record writes its citations: a superseded or repeated drop changes nothing.
- Every version a batch makes is a change for the change log (created, updated, stub_created, stub_upgraded),
  the ones a later drop of the same batch overwrote too. A stub rewritten by a newer citation is "updated".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.link.records import Draft, Normalized, stub_drafts
from tasks.shapes import Outcome

Order = tuple[int, str]


@dataclass
class _State:
    stub: bool
    version: int
    sha: str
    order: Order
    new: bool
    draft: Draft | None = None  # set when the content is (re)written by this batch
    reordered: bool = False
    steps: list[tuple[str, Draft, int]] = field(default_factory=list)  # (kind, draft, version) this batch made


@dataclass
class Applied:
    """What the store must write, and each drop's outcome (published | unchanged)."""

    created: list[tuple[Draft, int]] = field(default_factory=list)
    updated: list[tuple[Draft, int]] = field(default_factory=list)
    reordered: list[tuple[str, Order]] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    """One version a batch made. ``final``: the version the items row ends on (the log copies it from there);
    otherwise an intermediate one, overwritten later in the same batch (the log writes ``draft`` as it was)."""

    kind: str
    url: str
    version: int
    final: bool
    draft: Draft


def apply_drafts(current: dict[str, dict[str, Any]], batch: Sequence[Normalized]) -> Applied:
    """Apply the batch's drafts in drop order to the current rows (url -> row); return the writes."""
    state = {url: _State(row["stub"], row["version"], row["content_sha256"],
                         (row["order_mtime_ns"], row["order_name"]), new=False) for url, row in current.items()}
    applied = Applied()
    for n in sorted(batch, key=lambda n: (n["drop"]["mtime_ns"], n["drop"]["name"])):
        changed = _apply_full(state, n["record"])
        applied.outcomes[n["drop"]["key"]] = "published" if changed else "unchanged"
        if changed:
            for stub in stub_drafts(n):
                _apply_stub(state, stub)
    for url, s in state.items():
        if s.draft is not None:  # written with the order it ended on (a later same-content drop may move it)
            final = Draft(**{**s.draft, "order_mtime_ns": s.order[0], "order_name": s.order[1]})
            (applied.created if s.new else applied.updated).append((final, s.version))
            last = len(s.steps) - 1
            applied.changes += [Change(kind, url, v, i == last, d) for i, (kind, d, v) in enumerate(s.steps)]
        elif s.reordered:
            applied.reordered.append((url, s.order))
    return applied


def _order(d: Draft) -> Order:
    return (d["order_mtime_ns"], d["order_name"])


def _apply_full(state: dict[str, _State], d: Draft) -> bool:
    cur = state.get(d["url"])
    if cur is None:
        state[d["url"]] = _State(False, 1, d["sha256"], _order(d), new=True, draft=d, steps=[("created", d, 1)])
        return True
    if cur.stub:  # the item's own file arrived: the stub becomes a full record
        _rewrite(cur, d, "stub_upgraded")
        return True
    if _order(d) <= cur.order:  # older than (or the same as) the drop that already won: superseded
        return False
    if d["sha256"] == cur.sha:
        cur.order, cur.reordered = _order(d), True
        return False
    _rewrite(cur, d, "updated")
    return True


def _apply_stub(state: dict[str, _State], d: Draft) -> None:
    cur = state.get(d["url"])
    if cur is None:
        state[d["url"]] = _State(True, 1, d["sha256"], _order(d), new=True, draft=d, steps=[("stub_created", d, 1)])
    elif not cur.stub or _order(d) < cur.order:  # never over a full record; an older citation loses
        return
    elif d["sha256"] == cur.sha:
        cur.order, cur.reordered = _order(d), True
    else:
        _rewrite(cur, d, "updated")


def _rewrite(cur: _State, d: Draft, kind: str) -> None:
    cur.stub, cur.sha, cur.order, cur.draft = d["stub"], d["sha256"], _order(d), d
    cur.version += 1
    cur.steps.append((kind, d, cur.version))
