"""`feedworker trace`: one drop's lineage from the ledger, for a published drop and a refused one, put away by a
running watcher (the poison drop's trace, with its splits, is checked in tests/test_faults_poison.py)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_pg_database
from tests.faults import fault_env, private_redis
from tests.processes import celery_worker, feedworker, wait_for, watch_process

pytestmark = pytest.mark.slow


@contextmanager
def watcher(env: dict[str, str], folder: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = watch_process(env, folder, log)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def trace(env: dict[str, str], what: str) -> Any:
    return json.loads(feedworker(env, "trace", what, "--json").stdout)


def test_trace_published_and_refused_drops(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    drops.mkdir()
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        env = fault_env(broker.url(), store, {"FEEDWORKER_WATCH__SETTLE_SECONDS": "0.2"})
        feedworker(env, "migrate")
        stack.enter_context(celery_worker(env, tmp_path, "w1"))
        stack.enter_context(watcher(env, drops, tmp_path / "watch.log"))
        (drops / "good.txt").write_text("---\ntitle: Good\nwebUrl: https://trace.test/good\n---\nbody\n")
        (drops / "bad\x1b[2J.txt").write_text("---\ntitle: ''\nwebUrl: https://trace.test/bad\n---\n")
        wait_for(lambda: not any(p.is_file() for p in drops.iterdir()), 60)  # both put away
        wait_for(lambda: all(d["file_now"]["action"] == "moved"
                             for name in ("good.txt", "bad\x1b[2J.txt") for d in trace(env, name)["drops"]), 20)
        good = trace(env, "good.txt")["drops"][0]
        bad = trace(env, "bad\x1b[2J.txt")["drops"][0]
        by_path = trace(env, good["file_now"]["path"])["drops"]
        text = feedworker(env, "trace", "bad\x1b[2J.txt").stdout
        unknown = feedworker(env, "trace", "never.txt", check=False)
    assert good["state"] == "published" and good["stage"] is None
    assert good["record"]["url"] == "https://trace.test/good" and good["record"]["version"] == 1
    assert "/processed/" in good["file_now"]["path"] and by_path[0]["key"] == good["key"]
    assert good["discovered_at"] and good["queued_at"] and good["finished_at"]
    [batch] = good["batches"]
    assert batch["label"] is None and batch["parent"] is None
    assert [(s["stage"], s["deliveries"]) for s in batch["stages"]] == [("parse", 1), ("verify", 1), ("publish", 1)]
    assert bad["state"] == "failed" and bad["stage"] == "parse" and "title" in bad["reason"]
    assert bad["record"] is None and "/failed/" in bad["file_now"]["path"]
    assert "\x1b" not in text and "bad\\u001b[2J.txt" in text and "failed at parse" in text
    assert unknown.returncode == 1 and "no drop known by never.txt" in unknown.stdout
