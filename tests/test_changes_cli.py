"""`feedworker changes` as a consumer runs it: lines, cursors, --limit, --follow, bad cursors (both backends)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from typing import Any

import pytest

from tasks.store.ledger import Store
from tests.processes import BIN, env_for, feedworker
from tests.test_store import item, norm, publish


def lines(store: Store, *args: str) -> list[dict[str, Any]]:
    out = feedworker(env_for("redis://127.0.0.1:9/0", store.url), "changes", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_read_all_then_on_from_the_last_cursor_with_limit(store: Store) -> None:
    for n in range(1, 4):
        publish(store, norm(item(f"https://x.test/{n}", f"T{n}"), n))
    everything = lines(store)
    assert [(c["kind"], c["url"], c["version"]) for c in everything] == [
        ("created", f"https://x.test/{n}", 1) for n in range(1, 4)]
    assert set(everything[0]) == {"cursor", "kind", "url", "version", "at", "record"}
    assert everything[0]["record"]["title"] == "T1" and everything[0]["at"].endswith("Z")
    first = lines(store, "--limit", "1")
    assert first == everything[:1]
    assert lines(store, "--since", first[0]["cursor"]) == everything[1:]
    assert lines(store, "--since", everything[-1]["cursor"]) == []
    assert lines(store, "--since", "") == everything  # an empty cursor file: from the start


@pytest.mark.parametrize(("cursor", "says"), [("yesterday", "not a change cursor"), ("99", "ahead of")])
def test_a_bad_cursor_is_one_line_and_exit_2(store: Store, cursor: str, says: str) -> None:
    publish(store, norm(item("https://x.test/1"), 1))
    res = feedworker(env_for("redis://127.0.0.1:9/0", store.url), "changes", "--since", cursor, check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and says in res.stderr


def test_follow_prints_new_changes_as_they_commit(store: Store) -> None:
    publish(store, norm(item("https://x.test/1"), 1))
    proc = subprocess.Popen([str(BIN / "feedworker"), "changes", "--follow"], text=True, stdout=subprocess.PIPE,
                            env=env_for("redis://127.0.0.1:9/0", store.url))
    got: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(proc, got), daemon=True).start()
    try:
        assert json.loads(got.get(timeout=30))["url"] == "https://x.test/1"
        publish(store, norm(item("https://x.test/2"), 2))
        assert json.loads(got.get(timeout=10))["url"] == "https://x.test/2"  # well before the 30 s re-check
        publish(store, norm(item("https://x.test/2", "changed"), 3))
        change = json.loads(got.get(timeout=10))
        assert (change["kind"], change["version"], change["record"]["title"]) == ("updated", 2, "changed")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


def _pump(proc: subprocess.Popen[str], into: queue.Queue[str]) -> None:
    for line in proc.stdout or ():
        into.put(line)
