"""The store's batched writes (one statement for many rows): every row gets its own values, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tasks.link.records import Normalized, normalize
from tasks.parse.models import Item
from tasks.shapes import Drop, Failure
from tasks.store.engine import json_text
from tasks.store.ledger import Store


def norm(url: str, title: str, n: int, related: list[dict[str, Any]] | None = None) -> Normalized:
    it = Item.model_validate({"title": title, "webUrl": url, "related": related or []})
    return normalize(it, Drop(key=f"k{n}", name=f"{n:03d}_00000000000000aa.txt", path=f"/d/{n}", size=1,
                              mtime_ns=1_700_000_000_000_000_000 + n))


def ledger_row(n: Normalized) -> dict[str, Any]:
    return {k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")}


def by_url(store: Store) -> dict[str, dict[str, Any]]:
    return {r["url"]: r for r in store.export()}


def test_a_batch_of_updates_and_stub_upgrades_writes_each_row_its_own_values(store: Store) -> None:
    cites = [{"title": f"Stub {i}", "webUrl": f"https://s.test/{i}"} for i in range(20)]
    first = [norm(f"https://x.test/{i}", f"V1 {i}", i) for i in range(20)]
    first.append(norm("https://x.test/citer", "Citer", 20, related=cites))
    store.register_drops([ledger_row(n) for n in first], "run", "ingest")
    store.publish(first, [])
    before = by_url(store)
    # one batch: 20 records change, 20 stubs become full records, 5 same-content drops only move the order
    second = [norm(f"https://x.test/{i}", f"V2 {i}", 100 + i) for i in range(20)]
    second += [norm(f"https://s.test/{i}", f"Own {i}", 200 + i) for i in range(20)]
    second += [norm(f"https://x.test/{i}", f"V2 {i}", 300 + i) for i in range(5)]
    store.register_drops([ledger_row(n) for n in second], "run", "ingest")
    outcomes = store.publish(second, [])
    assert sorted(outcomes.values()).count("published") == 40
    after = by_url(store)
    for i in range(20):
        rec, old = after[f"https://x.test/{i}"], before[f"https://x.test/{i}"]
        assert (rec["title"], rec["version"], rec["first_seen_at"]) == (f"V2 {i}", 2, old["first_seen_at"])
        own, stub = after[f"https://s.test/{i}"], before[f"https://s.test/{i}"]
        assert (own["stub"], own["title"], own["version"]) == (False, f"Own {i}", 2)
        assert own["first_seen_at"] == stub["first_seen_at"] and own["updated_at"] > stub["updated_at"]
    # the order moved forward with the same-content drops: the V2 drops of batch two can no longer win back
    again = [norm(f"https://x.test/{i}", f"V3 {i}", 150 + i) for i in range(5)]
    store.register_drops([ledger_row(n) for n in again], "run", "ingest")
    assert set(store.publish(again, []).values()) == {"unchanged"}
    assert store.run_counts("run") == {"published": 21 + 40, "unchanged": 5 + 5}


def test_drops_the_ledger_never_saw_are_recorded_with_their_outcome(store: Store) -> None:
    known, unknown = norm("https://x.test/a", "A", 1), norm("https://x.test/b", "B", 2)
    store.register_drops([ledger_row(known)], "run", "ingest")
    fail = Failure(key="k3", name="003_00000000000000aa.txt", path="/d/3", size=1, mtime_ns=3, stage="parse",
                   reason="title: must not be empty")
    assert store.publish([known, unknown], [fail]) == {"k1": "published", "k2": "published", "k3": "failed"}
    assert store.run_counts("run") == {"published": 1}
    assert store.run_counts("adhoc") == {"published": 1, "failed": 1}
    assert [(r["name"], r["stage"]) for r in store.failed_drops()] == [("003_00000000000000aa.txt", "parse")]
    assert store.publish([known, unknown], [fail]) == {}  # delivered again: all finished, nothing written



def test_json_text_keeps_what_orjson_refuses() -> None:
    assert json_text({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert '"n": 123456789012345678901234567890' in json_text({"n": 123456789012345678901234567890})
    assert json_text({"s": "\ud800"}) == '{"s": "\\ud800"}'
