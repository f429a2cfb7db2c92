"""The lost-task requeue racing a task that finishes: the drop keeps its outcome and is not sent again.

`ingest --wait` and the watcher read the drops queued too long (``stale_queued``), then mark them queued again
and resend them. A drop whose task finishes between that read and the mark must keep its outcome: resetting it
would send it again and count it twice (measured before the fix: a run of 62 new items reported
``published 0, unchanged 62`` after a Redis restart).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tasks.link.records import normalize
from tasks.parse.models import Item
from tasks.shapes import Drop
from tasks.store.engine import now
from tasks.store.ledger import Store
from worker.settings import Settings
from worker.watching.enqueue import Enqueuer


def _queued(store: Store, tmp_path: Path, n: int) -> Drop:
    path = tmp_path / f"{n:03d}_{n:016x}.txt"
    path.write_text(f"---\ntitle: Item {n}\nwebUrl: https://news.test/{n}\n---\n")
    d = Drop(key=f"key{n}", name=path.name, path=str(path), size=path.stat().st_size, mtime_ns=path.stat().st_mtime_ns)
    store.register_drops([d], "run", "ingest")
    return d


def test_a_drop_finished_after_the_stale_read_keeps_its_outcome(store: Store, tmp_path: Path) -> None:
    finished, lost = _queued(store, tmp_path, 1), _queued(store, tmp_path, 2)
    stale = store.stale_queued(now() + timedelta(seconds=1))  # both look lost...
    assert {r["key"] for r in stale} == {finished["key"], lost["key"]}
    item = Item.model_validate({"title": "Item 1", "webUrl": "https://news.test/1"})
    assert store.publish([normalize(item, finished)], []) == {finished["key"]: "published"}  # ...one finishes now
    assert store.requeue([r["key"] for r in stale], state="queued") == [lost["key"]]
    states = {r["key"]: r["state"] for r in store.stale_queued(now() + timedelta(seconds=1))}
    assert states == {lost["key"]: "queued"}
    assert store.run_counts("run") == {"published": 1, "queued": 1}


def test_resend_sends_only_what_is_still_waiting(store: Store, tmp_path: Path) -> None:
    done = _queued(store, tmp_path, 1)
    stale = store.stale_queued(now() + timedelta(seconds=1))
    item = Item.model_validate({"title": "Item 1", "webUrl": "https://news.test/1"})
    store.publish([normalize(item, done)], [])
    enq = Enqueuer(app=None, store=store, limits=Settings().parse, run_id="run", origin="ingest",
                   scope="ingest:run")
    assert enq.resend(stale) == 0  # nothing sent (the app, None here, is never touched)
    assert store.run_counts("run") == {"published": 1}
