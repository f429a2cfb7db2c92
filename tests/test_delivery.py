"""The delivery count (tasks/store/deliveries.py) on SQLite and PostgreSQL, the reasons a poison drop is failed with,
and how split halves are labelled for Flower (tasks/stages.py)."""

from __future__ import annotations

from typing import Any

from tasks.store import deliveries as delivery
from tasks.store.deliveries import BatchTag, count_delivery, for_drop, moved_on, note_lost
from tasks.store.ledger import Store


def test_deliveries_are_counted_per_batch_and_stage(store: Store) -> None:
    tag = BatchTag(id="b1", parent=None, label=None, first="parse")
    assert count_delivery(store, tag, "parse", ["k1", "k2"]).count == 1
    note_lost(store, "b1", "parse", "Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")
    again = count_delivery(store, tag, "parse", ["k1", "k2"])
    assert again.count == 2 and again.lost is not None and "signal 9" in again.lost
    assert not moved_on(store, "b1", "parse")
    assert count_delivery(store, tag, "verify", ["k1", "k2"]).count == 1
    assert moved_on(store, "b1", "parse")  # the next stage started: parse had finished
    child = delivery.split_tags(tag, "parse")[1]
    count_delivery(store, child, "parse", ["k2"])
    rows = for_drop(store, "k2")
    assert [(r["batch_id"], r["stage"], r["count"]) for r in rows] == [
        ("b1", "parse", 2), ("b1", "verify", 1), (child["id"], "parse", 1)]
    assert rows[-1]["parent"] == "b1" and rows[-1]["label"] == "split 2/2 of b1"
    assert [r["batch_id"] for r in for_drop(store, "k1")] == ["b1", "b1"]
    assert for_drop(store, "k%") == []  # a key is matched as text, never as a pattern


def test_poison_reasons_say_what_how_often_and_where() -> None:
    lost = "Worker exited prematurely: signal 9 (SIGKILL) Job: 3."
    assert delivery.poison_reason("parse", 3, lost).startswith(
        "its worker process died 3 times while parsing it (signal 9)")
    assert delivery.poison_reason("verify", 3, None).startswith(
        "its worker process was lost 3 times while verifying it")
    assert delivery.poison_reason("parse", 3, "time limit (55 s)").startswith(
        "it ran past the hard time limit (55 s) 3 times while parsing it")


def test_halves_cover_the_batch_once() -> None:
    for n in (2, 3, 99, 100):
        a, b = delivery.halves(list(range(n)))
        assert a + b == list(range(n)) and abs(len(a) - len(b)) <= 1 and a and b


def test_split_chains_are_labelled_for_flower() -> None:
    from tasks.stages import pipeline_from

    parent = delivery.new_tag()
    child = delivery.split_tags(parent, "parse")[1]
    wire = [{"key": "k", "name": "a.txt"}]
    sig: Any = pipeline_from("parse", wire, child)
    tasks = sig.tasks
    assert [t.task for t in tasks] == ["feedworker.parse", "feedworker.verify", "feedworker.publish"]
    assert all(t.options["argsrepr"] == f"split 2/2 of {parent['id'][:8]}: <1 drops: a.txt>" for t in tasks)
    assert all(t.kwargs["batch"]["parent"] == parent["id"] for t in tasks)


def test_a_sealed_batch_splits_into_two_smaller_halves() -> None:
    """Parsed drops and the failures carried with them: each half smaller than the batch, together all of it."""
    from tasks.stages import Sealed, split_sealed

    for n_ok, n_failed in ((1, 1), (1, 3), (2, 0), (0, 2), (5, 4)):
        ok: Any = [{"drop": {"key": f"o{i}"}} for i in range(n_ok)]
        failed: Any = [{"key": f"f{i}"} for i in range(n_failed)]
        halves = split_sealed(Sealed({"ok": ok, "failed": failed}))
        sizes = [len(h.data["ok"]) + len(h.data["failed"]) for h in halves]
        assert all(0 < size < n_ok + n_failed for size in sizes), (n_ok, n_failed, sizes)
        assert sorted(str(x) for h in halves for x in h.data["ok"] + h.data["failed"]) == sorted(
            str(x) for x in ok + failed)
