"""The change log on SQLite and PostgreSQL: one change per version a publish makes, its kind, its record."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tasks.store.changes import BadCursor, parse_cursor, prune, read, stats
from tasks.store.engine import now
from tasks.store.ledger import Store
from tests.test_store import item, norm, publish, records


def log(store: Store, since: int | None = None) -> list[dict[str, Any]]:
    return read(store, since, 10_000)


def kinds(lines: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(c["kind"], c["url"], c["version"]) for c in lines]


def test_kinds_versions_and_unchanged_writes_nothing(store: Store) -> None:
    cited = {"title": "Cited", "webUrl": "https://x.test/b"}
    publish(store, norm(item("https://x.test/a", "A", related=[cited]), 1))
    publish(store, norm(item("https://x.test/a", "A", related=[cited]), 2))  # same content: unchanged
    publish(store, norm(item("https://x.test/c", "C", related=[{**cited, "title": "Cited again"}]), 3))
    publish(store, norm(item("https://x.test/b", "B"), 4))  # the stub's own file: upgraded
    publish(store, norm(item("https://x.test/a", "A2", related=[cited]), 5))  # changed: updated
    assert kinds(log(store)) == [
        ("created", "https://x.test/a", 1), ("stub_created", "https://x.test/b", 1),
        ("updated", "https://x.test/b", 2), ("created", "https://x.test/c", 1),  # a newer citation: "updated"
        ("stub_upgraded", "https://x.test/b", 3), ("updated", "https://x.test/a", 2)]
    lines = log(store)
    assert lines[2]["record"]["stub"] is True and lines[2]["record"]["title"] == "Cited again"
    assert lines[4]["record"]["stub"] is False and lines[4]["record"]["title"] == "B"
    assert lines[0]["record"]["title"] == "A" and lines[5]["record"]["title"] == "A2"
    latest = {c["url"]: c["record"] for c in lines}
    assert latest == records(store)  # the latest change per URL is the export, "resolved" included


def test_two_versions_in_one_batch_are_two_changes(store: Store) -> None:
    cited = {"title": "Cited", "webUrl": "https://x.test/b"}
    a1, a2 = norm(item("https://x.test/a", "A1", related=[cited]), 1), norm(item("https://x.test/a", "A2"), 2)
    b = norm(item("https://x.test/b", "B"), 3)
    publish(store, a2, b, a1)
    lines = log(store)
    assert kinds(lines) == [("created", "https://x.test/a", 1), ("updated", "https://x.test/a", 2),
                            ("stub_created", "https://x.test/b", 1), ("stub_upgraded", "https://x.test/b", 2)]
    assert [c["record"]["title"] for c in lines] == ["A1", "A2", "Cited", "B"]
    assert lines[0]["record"]["secured"] == lines[1]["record"]["secured"] is not None
    assert {c["url"]: c["record"] for c in lines} == records(store)


def test_cursor_reads_on_exactly_once(store: Store) -> None:
    for n in range(1, 6):
        publish(store, norm(item(f"https://x.test/{n}"), n))
    first = read(store, None, 2)
    assert [c["url"] for c in first] == ["https://x.test/1", "https://x.test/2"]
    rest = log(store, parse_cursor(first[-1]["cursor"]))
    assert [c["url"] for c in rest] == [f"https://x.test/{n}" for n in (3, 4, 5)]
    assert log(store, parse_cursor(rest[-1]["cursor"])) == []


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.5", "9" * 40])
def test_a_bad_cursor_is_refused(bad: str) -> None:
    with pytest.raises(BadCursor, match="not a change cursor"):
        parse_cursor(bad)


def test_retention_prunes_and_refuses_a_pruned_cursor(store: Store) -> None:
    publish(store, norm(item("https://x.test/1"), 1))
    publish(store, norm(item("https://x.test/2"), 2))
    cursor = parse_cursor(log(store)[0]["cursor"])
    assert prune(store, now() - timedelta(days=1)) == 0  # nothing that old
    assert stats(store)["count"] == 2
    assert prune(store, now() + timedelta(seconds=1)) == 2
    assert stats(store) == {"count": 0, "oldest_at": None}
    with pytest.raises(BadCursor, match="older than the change log keeps"):
        log(store, cursor - 1)
    publish(store, norm(item("https://x.test/3"), 3))
    assert [c["url"] for c in log(store)] == ["https://x.test/3"]  # a pruned seq is never handed out again
    assert int(log(store)[0]["cursor"]) > cursor + 1


def test_a_cursor_ahead_of_the_log_is_refused(store: Store) -> None:
    with pytest.raises(BadCursor, match="ahead of this store's change log"):
        log(store, 1)
    assert log(store, 0) == []
    publish(store, norm(item("https://x.test/1"), 1))
    newest = int(log(store)[-1]["cursor"])
    assert log(store, newest) == []
    with pytest.raises(BadCursor, match="ahead"):
        log(store, newest + 1)


def test_huge_integers_and_odd_text_come_back_as_stored(store: Store) -> None:
    big = 123456789012345678901234567890
    publish(store, norm(item("https://x.test/big", "Ünïcode ✓", extraField={"n": big, "m": -(2**70), "f": 0.1}), 1))
    record = log(store)[0]["record"]
    assert record["extra"]["extraField"] == {"n": big, "m": -(2**70), "f": 0.1}
    assert record == records(store)["https://x.test/big"]
