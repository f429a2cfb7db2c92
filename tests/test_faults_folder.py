"""Fault 5: the drop folder itself misbehaves under a running watcher. A read-only folder (``chattr +i``: even
root cannot move files out), files deleted between detection and processing, a full disk (a small tmpfs).
Every drop still gets its outcome; errors are clear; nothing crashes or loops; once the folder is fixed, the
files are put away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database
from tests.corpus import write_corpus
from tests.faults import check_answers, fault_env, image_host, ledger, private_redis
from tests.processes import celery_worker, export, feedworker, wait_for, watch_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chattr +i and mounting a tmpfs"),
]


@contextmanager
def watching(tmp_path: Path, drops: Path, settings: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, str],
                                                                                                  subprocess.Popen[bytes]]]:
    """A private Redis, a fresh store, a worker and `feedworker watch DROPS`; yields (store URL, env, watcher)."""
    with ExitStack() as stack:
        broker = stack.enter_context(private_redis(tmp_path / "redis"))
        store = stack.enter_context(fresh_pg_database())
        env = fault_env(broker.url(), store, settings or {})
        feedworker(env, "migrate")
        stack.enter_context(celery_worker(env, tmp_path, "w1"))
        watcher = watch_process(env, drops, tmp_path / "watch.log")
        try:
            yield store, env, watcher
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(30)


def _all_finished(store: str, count: int) -> bool:
    rows = ledger(store)
    return len(rows) >= count and all(r["state"] != "queued" for r in rows)


def _put_away(drops: Path) -> bool:
    return not [p for p in drops.iterdir() if p.is_file()]


def test_read_only_drop_folder(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    with ExitStack() as stack:
        base = stack.enter_context(image_host())
        ans = write_corpus(drops, base, count=6)
        total = len(list(drops.iterdir()))
        subprocess.run(["chattr", "+i", str(drops)], check=True)  # nothing can be moved in or out of it
        stack.callback(subprocess.run, ["chattr", "-i", str(drops)], check=False)
        store, env, watcher = stack.enter_context(watching(tmp_path, drops))
        wait_for(lambda: _all_finished(store, total), 60)  # outcomes need no write access to the folder
        time.sleep(2)  # the watcher meets the read-only folder for a while
        assert watcher.poll() is None, "the watcher died on a read-only folder"
        log = (tmp_path / "watch.log").read_text()
        assert "Operation not permitted" in log and str(drops) in log  # the cause and the place
        subprocess.run(["chattr", "-i", str(drops)], check=True)  # fixed: the files are put away
        wait_for(lambda: _put_away(drops), 30)
        records = export(env)
    check_answers(records, ans)
    failed = sorted(p.name for p in (drops / "failed").iterdir())
    assert failed == sorted([*ans.refused, *(f"{n}.error.json" for n in ans.refused)])


def test_files_deleted_between_detection_and_processing(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    drops.mkdir()
    with ExitStack() as stack:
        store, env, watcher = stack.enter_context(watching(tmp_path, drops))
        time.sleep(2)  # the watcher is up
        for i in range(40):  # written in place, then gone at once or a moment later: seen, never readable
            gone = drops / f"gone_{i}.txt"
            gone.write_text(f"---\ntitle: Gone {i}\nwebUrl: https://gone.test/{i}\n---\n")
            time.sleep((i % 5) * 0.03)
            gone.unlink(missing_ok=True)  # the watcher may have read and put it away already: "in time"
        for i in range(10):  # good drops among them, renamed into place
            tmp = drops / f".good_{i}.part"
            tmp.write_text(f"---\ntitle: Kept {i}\nwebUrl: https://kept.test/{i}\n---\n")
            tmp.rename(drops / f"good_{i}.txt")
        wait_for(lambda: _all_finished(store, 10) and _put_away(drops), 60)
        time.sleep(2)  # nothing more is coming: no late retries of the vanished files
        rows = ledger(store)
        records = export(env)
        assert watcher.poll() is None
    taken = [r["state"] for r in rows if r["name"].startswith("gone_")]
    print(f"40 files deleted after detection: {40 - len(taken)} never taken, {taken.count('published')} read in "
          f"time and published, {taken.count('failed')} failed as vanished")
    titles = {r["title"] for r in records}
    assert {f"Kept {i}" for i in range(10)} <= titles
    assert all(r["state"] != "queued" for r in rows)  # nothing left waiting, nothing sent again and again
    for r in rows:
        if r["name"].startswith("gone_") and r["state"] == "failed":  # seen, then unreadable: said so, once
            assert r["stage"] == "read" and "vanished" in (r["reason"] or ""), r
    read_in_time = {f"Gone {r['name'][5:-4]}" for r in rows if r["name"].startswith("gone_") and r["state"] != "failed"}
    assert titles - {f"Kept {i}" for i in range(10)} == read_in_time  # read before it went: it landed


def test_disk_full_drop_folder(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    drops.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(drops)], check=True)
    try:
        with ExitStack() as stack:
            for i in range(5):
                (drops / f"good_{i}.txt").write_text(f"---\ntitle: Full {i}\nwebUrl: https://full.test/{i}\n---\n")
            (drops / "bad.txt").write_text("---\ntitle: ''\nwebUrl: https://full.test/bad\n---\n")
            filler = drops / ".filler"
            _fill(filler)  # the disk is full: no byte more can be written
            store, env, watcher = stack.enter_context(watching(tmp_path, drops))
            wait_for(lambda: _all_finished(store, 6), 60)  # outcomes live in the store, not on this disk
            time.sleep(1)
            assert watcher.poll() is None
            filler.unlink()  # space again: the failure report is written
            wait_for(lambda: (drops / "failed" / "bad.txt.error.json").exists(), 4)
            leftovers = [p.name for p in (drops / "failed").iterdir() if p.name.endswith(".tmp")]
            assert not leftovers, leftovers
            assert {r["title"] for r in export(env)} == {f"Full {i}" for i in range(5)}
    finally:
        subprocess.run(["umount", "-l", str(drops)], check=False)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
