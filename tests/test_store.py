"""The store on SQLite and PostgreSQL: idempotent upserts, later-drop-wins, stubs, the ledger."""

from __future__ import annotations

import threading
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tasks.link.records import Normalized, normalize
from tasks.parse.models import Item
from tasks.pipeline import Batch
from tasks.shapes import Drop, Failure, Outcome
from tasks.store.ledger import Store
from tasks.store.migrate import HEAD, MIGRATIONS, current_revision, is_current, upgrade

SECURED = ("P9C+Wo7uXjFqUO/1D/5pBdIuOrSRbxkhLNxWqOpk1cSml5z2DKS1KZxUh3kZiRHK4qC98Q1avEKp2OCMg4HV3/7e=="
           ";JtQtSI/GKvSP0uK3eEHwlA==")


def item(url: str, title: str = "A title", related: list[dict[str, Any]] | None = None, **more: Any) -> Item:
    return Item.model_validate({"title": title, "webUrl": url, "secured": SECURED, "related": related or [],
                                **more})


def drop(n: int, name: str | None = None) -> Drop:
    return Drop(key=f"k{n}-{name}", name=name or f"{n:03d}_00000000000000aa.txt", path=f"/d/{n}",
                size=1, mtime_ns=1_700_000_000_000_000_000 + n)


def norm(it: Item, n: int, name: str | None = None) -> Normalized:
    return normalize(it, drop(n, name))


def publish(store: Store, *ns: Normalized, failed: list[Failure] | None = None) -> dict[str, Outcome]:
    rows = [{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in ns]
    rows += [{k: f[k] for k in ("key", "name", "path", "size", "mtime_ns")} for f in failed or []]
    store.register_drops(rows, "run", "ingest")
    return store.publish(list(ns), failed or [])


def records(store: Store) -> dict[str, dict[str, Any]]:
    return {r["url"]: r for r in store.export()}


def test_migrations_reach_head_and_are_idempotent(store: Store) -> None:
    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == HEAD  # a new migration moves HEAD too
    with store.engine.connect() as conn:
        alembics = MigrationContext.configure(conn).get_current_revision()
    assert alembics == current_revision(store) == HEAD
    assert is_current(store)
    upgrade(store)  # a second run changes nothing
    assert is_current(store)


def test_same_content_twice_is_one_unchanged_record(store: Store) -> None:
    a = norm(item("https://x.test/a"), 1, name="001_00000000000000aa.txt")
    b = norm(item("https://x.test/a"), 2, name="002_00000000000000aa.txt")  # the same item dropped again
    assert publish(store, a) == {a["drop"]["key"]: "published"}
    assert publish(store, b) == {b["drop"]["key"]: "unchanged"}
    recs = records(store)
    assert list(recs) == ["https://x.test/a"]
    assert recs["https://x.test/a"]["version"] == 1
    c = norm(item("http://X.TEST/a#frag"), 3, name="003_00000000000000aa.txt")  # another spelling: same identity
    assert publish(store, c) == {c["drop"]["key"]: "published"}  # web_url as given changed: a new version
    assert list(records(store)) == ["https://x.test/a"]


def test_changed_item_bumps_version_and_later_drop_wins_in_any_order(store: Store) -> None:
    old, new = norm(item("https://x.test/a", "Old"), 1), norm(item("https://x.test/a", "New"), 2)
    assert publish(store, new) == {new["drop"]["key"]: "published"}
    assert publish(store, old) == {old["drop"]["key"]: "unchanged"}  # older than the winner: superseded
    rec = records(store)["https://x.test/a"]
    assert (rec["title"], rec["version"]) == ("New", 1)
    newer = norm(item("https://x.test/a", "Newer"), 3)
    publish(store, newer)
    rec = records(store)["https://x.test/a"]
    assert (rec["title"], rec["version"]) == ("Newer", 2)


def test_same_mtime_later_name_wins(store: Store) -> None:
    a = normalize(item("https://x.test/a", "From a"), Drop(key="ka", name="a.txt", path="/a", size=1, mtime_ns=5))
    b = normalize(item("https://x.test/a", "From b"), Drop(key="kb", name="b.txt", path="/b", size=1, mtime_ns=5))
    publish(store, b)
    publish(store, a)
    assert records(store)["https://x.test/a"]["title"] == "From b"


def test_repeat_of_an_old_version_after_a_change_does_not_win_back(store: Store) -> None:
    v1, v2, v1_again = (norm(item("https://x.test/a", "V1"), 1), norm(item("https://x.test/a", "V2"), 2),
                        norm(item("https://x.test/a", "V1"), 3))
    publish(store, v1)
    publish(store, v1_again)  # same content as the record, but a later drop: it moves the order forward
    publish(store, v2)  # older than v1_again: superseded
    rec = records(store)["https://x.test/a"]
    assert (rec["title"], rec["version"]) == ("V1", 1)


def test_redelivered_batch_counts_once(store: Store) -> None:
    a = norm(item("https://x.test/a"), 1)
    assert publish(store, a) == {a["drop"]["key"]: "published"}
    assert store.publish([a], []) == {}  # the same task again: its drop is finished, nothing is written
    assert store.run_counts("run")["published"] == 1


def test_stub_then_full_record_keeps_first_seen_and_bumps_version(store: Store) -> None:
    rel = [{"title": "Cited", "webUrl": "https://y.test/b?utm_source=feed", "images": [{"url": "https://i/1.png"}]}]
    publish(store, norm(item("https://x.test/a", related=rel), 1))
    stub = records(store)["https://y.test/b"]
    assert stub["stub"] is True and stub["title"] == "Cited" and stub["version"] == 1
    assert records(store)["https://x.test/a"]["related"][0]["resolved"] is False
    publish(store, norm(item("https://y.test/b", "Own file"), 2))
    recs = records(store)
    full = recs["https://y.test/b"]
    assert (full["stub"], full["title"], full["version"]) == (False, "Own file", 2)
    assert full["first_seen_at"] == stub["first_seen_at"]
    assert full["updated_at"] > stub["updated_at"]
    assert recs["https://x.test/a"]["related"][0]["resolved"] is True


def test_stub_never_overwrites_full_record(store: Store) -> None:
    publish(store, norm(item("https://y.test/b", "Own file"), 1))
    publish(store, norm(item("https://x.test/a", related=[{"title": "Cited", "webUrl": "https://y.test/b"}]), 2))
    rec = records(store)["https://y.test/b"]
    assert (rec["stub"], rec["title"], rec["version"]) == (False, "Own file", 1)


def test_stub_carries_latest_citation(store: Store) -> None:
    def cite(title: str) -> list[dict[str, Any]]:
        return [{"title": title, "webUrl": "https://y.test/b"}]

    publish(store, norm(item("https://x.test/2", related=cite("Later")), 2))
    publish(store, norm(item("https://x.test/1", related=cite("Earlier")), 1))
    rec = records(store)["https://y.test/b"]
    assert (rec["title"], rec["version"]) == ("Later", 1)


def test_record_shape_and_secured_byte_for_byte(store: Store) -> None:
    it = item("https://x.test/a?b=2&a=1", quality="37", published="true", topics=["AI"], provider={
        "name": "BGR", "domain": "bgr.com"}, future_field={"k": [1, 2]}, publishedDateTime="2023-02-02T22:17:00Z")
    publish(store, norm(it, 1, name="000_fb3687fbf0a8c61d.txt"))
    rec = records(store)["https://x.test/a?b=2&a=1"]
    assert rec["secured"] == SECURED
    assert (rec["quality"], rec["published"], rec["source_id"]) == (37, True, "fb3687fbf0a8c61d")
    assert rec["published_at"] == "2023-02-02T22:17:00Z"
    assert rec["extra"] == {"future_field": {"k": [1, 2]}}
    assert rec["provider"] == {"name": "BGR", "domain": "bgr.com"}
    for key in ("url", "stub", "title", "excerpt", "category", "type", "quality", "heat", "published",
                "published_at", "web_url", "original_url", "source_id", "provider", "topics", "secured", "extra",
                "images", "related", "version", "content_sha256", "first_seen_at", "updated_at"):
        assert key in rec, key
    assert rec["updated_at"].endswith("Z") and len(rec["updated_at"].split(".")[1]) == 7  # microseconds + Z


def test_failures_are_listed_and_leave_on_success(store: Store) -> None:
    d = drop(1)
    fail = Failure(**d, stage="parse", reason="title: must not be empty")
    publish(store, failed=[fail])
    assert [(r["name"], r["stage"], r["reason"]) for r in store.failed_drops()] == [
        (d["name"], "parse", "title: must not be empty")]
    store.requeue([d["key"]])  # a replay
    assert store.publish([normalize(item("https://x.test/a"), d)], []) == {d["key"]: "published"}
    assert store.failed_drops() == []


def test_concurrent_batches_creating_the_same_urls(store: Store) -> None:
    """Many writers, overlapping new URLs (records and stubs): one row per URL, every drop counted once."""
    rel = [{"title": "Shared", "webUrl": f"https://shared.test/{i}"} for i in range(5)]
    batches: list[Batch] = []
    for w in range(6):
        ns = [norm(item(f"https://x.test/{w}-{i}", related=rel), w * 100 + i) for i in range(10)]
        ns.append(norm(item("https://x.test/common", f"Common {w}"), w * 100 + 50))
        batches.append(Batch(ok=ns, failed=[]))
        publish_rows = [{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in ns]
        store.register_drops(publish_rows, "run", "ingest")
    errors: list[BaseException] = []

    def go(b: Batch) -> None:
        try:
            store.publish(b["ok"], [])
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    recs = records(store)
    assert len(recs) == 6 * 10 + 1 + 5
    assert recs["https://x.test/common"]["title"] == "Common 5"  # the latest drop, whatever order they ran
    assert store.run_counts("run")["queued"] == 0
