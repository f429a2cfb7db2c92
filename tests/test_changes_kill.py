"""A publisher SIGKILLed inside its publish transaction, after it wrote its change rows and before its commit:
nothing of it is logged, and the batch published again (here: by a publisher already waiting for its locks)
logs each change exactly once. Both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tasks.link.records import Normalized
from tasks.shapes import Outcome
from tasks.store.changes import read
from tasks.store.ledger import Store
from tests.test_store import item, norm

ROOT = Path(__file__).parent.parent
VICTIM = """
import sys, time
from tasks.store.ledger import Store
from tests.test_changes_kill import batch
store = Store(sys.argv[1])
with store.engine.connect() as conn:
    conn.begin()
    store._publish(conn, batch(), [])
    print("written", flush=True)
    time.sleep(600)
"""


def batch() -> list[Normalized]:
    cited = {"title": "Cited", "webUrl": "https://x.test/stub"}
    return [norm(item(f"https://x.test/{n}", f"T{n}", related=[cited]), n) for n in range(5)]


def test_killed_mid_publish_logs_nothing_twice_or_lost(store: Store) -> None:
    rows = [{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in batch()]
    store.register_drops(rows, "run", "ingest")
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, store.url], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert victim.stdout is not None and victim.stdout.readline() == "written\n"
        outcomes: list[dict[str, Outcome]] = []
        retry = threading.Thread(target=lambda: outcomes.append(store.publish(batch(), [])))
        retry.start()  # waits for the victim's locks (row locks on PostgreSQL, the write lock on SQLite)
        if store.dialect == "postgresql":  # (a SQLite read waits for the writer: every transaction is IMMEDIATE)
            assert read(store, None, 100) == []  # the victim's changes are not visible
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        retry.join(60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert outcomes and set(outcomes[0].values()) == {"published"}
    lines = read(store, None, 100)
    assert sorted((c["url"], c["version"]) for c in lines) == sorted(
        [(f"https://x.test/{n}", 1) for n in range(5)] + [("https://x.test/stub", 1)])
    assert [c["kind"] for c in lines].count("stub_created") == 1
    assert store.publish(batch(), []) == {}  # a third delivery: done already, nothing more logged
    assert len(read(store, None, 100)) == 6
