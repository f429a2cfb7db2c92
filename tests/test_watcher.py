"""The watcher on a real folder (inotify), a real Redis broker and a real store: what it takes, when, and how often.

What went out is read from the broker itself: the parse messages waiting in the queue carry each drop's name
and bytes, so "enqueued once" and "never half-written" are checked on what a worker would receive.

Over 300 lines: one scenario a test against the same real watcher, broker and ledger fixtures.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.serialization import loads as kombu_loads
from sqlalchemy import select

from tasks.queues import LIVE_QUEUE, QUEUE, STAGE_QUEUES
from tasks.store.ledger import Store
from tasks.store.migrate import upgrade
from tasks.store.schema import drops
from tests.processes import BIN, celery_worker, env_for, export, feedworker, wait_for, watch_process
from worker.celeryapp.celery_app import make_app
from worker.settings import Settings, WatchSettings
from worker.watching.batcher import Batch, Batcher
from worker.watching.watcher import DropWatcher

GOOD = "---\ntitle: {title}\nwebUrl: https://news.test/{slug}\nquality: 5\n---\nbody\n"


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def settings_for(broker: str, store_url: str, **watch: Any) -> Settings:
    opts: dict[str, Any] = {"settle_seconds": 0.3, "rescan_seconds": 60.0, "batch_window_ms": 10, **watch}
    return Settings(broker_url=broker, store_url=store_url, watch=WatchSettings(**opts))


def new_watcher(folder: Path, settings: Settings) -> DropWatcher:
    store = Store(settings.store_url)
    upgrade(store)
    return DropWatcher(folder, settings.watch, store, make_app(settings), settings)


@contextmanager
def running(watcher: DropWatcher) -> Iterator[DropWatcher]:
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    time.sleep(0.3)  # the observer is up (files dropped earlier are the start scan's)
    try:
        yield watcher
    finally:
        watcher.stop()
        thread.join(10)
        assert not thread.is_alive()
        watcher.store.dispose()


def sent(broker: str) -> list[dict[str, Any]]:
    """The drops in the parse messages waiting in the queues, either lane (name, path, bytes)."""
    out: list[dict[str, Any]] = []
    for raw in queued(broker):
        msg = json.loads(raw)
        if msg["headers"]["task"] == "feedworker.parse":
            # decoded with whatever serializer the app registered, as a worker would
            body = kombu_loads(base64.b64decode(msg["body"]), msg["content-type"],  # type: ignore[no-untyped-call]
                               msg["content-encoding"])
            out.extend({**w, "bytes": base64.b64decode(w["data"])} for w in body[0][0])
    return out


def queued(broker: str) -> list[Any]:
    """Every message waiting in the stage queues, oldest first within each (kombu pushes on the left)."""
    client = redis.Redis.from_url(broker)
    return [raw for q in STAGE_QUEUES for raw in reversed(client.lrange(q, 0, -1))]


def sent_names(broker: str) -> Counter[str]:
    return Counter(w["name"] for w in sent(broker))


def drop_renamed(folder: Path, name: str, text: str) -> Path:
    tmp = folder / f".{name}.part"
    tmp.write_text(text)
    os.rename(tmp, folder / name)
    return folder / name


def ledger(store_url: str) -> list[dict[str, Any]]:
    store = Store(store_url)
    try:
        with store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(drops))]
    finally:
        store.dispose()


def test_renamed_file_is_taken_at_once_temp_and_dot_files_never(tmp_path: Path, broker: str,
                                                                  store_url: str) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    with running(new_watcher(folder, settings_for(broker, store_url))):
        (folder / "a.txt.part").write_text(GOOD.format(title="A", slug="a"))
        (folder / ".hidden.txt").write_text("x")
        (folder / "b.tmp").write_text("x")
        (folder / "c.txt~").write_text("x")
        time.sleep(0.8)
        assert sent_names(broker) == Counter()
        started = time.monotonic()
        os.rename(folder / "a.txt.part", folder / "a.txt")
        wait_for(lambda: sent_names(broker) == Counter({"a.txt": 1}), 2, interval=0.01)
        assert time.monotonic() - started < 0.5  # no settle wait for a renamed file
        time.sleep(0.5)
    assert sent_names(broker) == Counter({"a.txt": 1})
    assert [r["name"] for r in ledger(store_url)] == ["a.txt"]


def test_in_place_writer_is_waited_for_never_taken_half_written(tmp_path: Path, broker: str,
                                                                 store_url: str) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    text = GOOD.format(title="Slow", slug="slow").encode() * 40
    with running(new_watcher(folder, settings_for(broker, store_url, settle_seconds=0.3))):
        with open(folder / "slow.txt", "wb") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            time.sleep(1.0)  # over three times the settle time, with the writer still holding the file open
            assert sent_names(broker) == Counter()
            f.write(text[len(text) // 2:])
        closed = time.monotonic()
        wait_for(lambda: sent_names(broker), 2, interval=0.01)
        assert time.monotonic() - closed < 0.5  # the close shortens the wait
        # Written in two opens, close together (a shell's `>` then `>>`): the reopen resets the grace.
        with open(folder / "twice.txt", "wb") as f:
            f.write(text[:100])
        with open(folder / "twice.txt", "ab") as f:
            f.write(text[100:])
        wait_for(lambda: "twice.txt" in sent_names(broker), 2, interval=0.01)
    got = {w["name"]: w["bytes"] for w in sent(broker)}
    assert got == {"slow.txt": text, "twice.txt": text}


def test_scan_alone_settles_files_without_events(tmp_path: Path, broker: str, store_url: str) -> None:
    """The reconciling scan with no event source at all (NFS, bind mounts): a growing file waits until it holds
    still for the settle time."""
    folder = tmp_path / "drops"
    (folder / "sub").mkdir(parents=True)
    watcher = new_watcher(folder, settings_for(broker, store_url, rescan_seconds=0.2, settle_seconds=0.4))
    watcher.app.set_current()
    (folder / "sub" / "done.txt").write_text(GOOD.format(title="Done", slug="done"))
    grower = folder / "grows.txt"
    grower.write_text("---\n")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # grows every 0.1 s: never still for 0.4 s
        with open(grower, "a") as f:
            f.write("title: x\n")
        watcher.turn()
        time.sleep(0.1)
    assert sent_names(broker) == Counter({"done.txt": 1})

    def both_sent() -> bool:
        watcher.turn()
        return sent_names(broker) == Counter({"done.txt": 1, "grows.txt": 1})

    wait_for(both_sent, 3, interval=0.05)
    assert next(w for w in sent(broker) if w["name"] == "grows.txt")["bytes"] == grower.read_bytes()
    watcher.store.dispose()


def test_restart_finds_files_dropped_while_stopped_and_sends_nothing_twice(tmp_path: Path, broker: str,
                                                                          store_url: str) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    settings = settings_for(broker, store_url, after="keep")
    with running(new_watcher(folder, settings)):
        for i in range(3):
            drop_renamed(folder, f"live{i}.txt", GOOD.format(title=f"L{i}", slug=f"l{i}"))
        wait_for(lambda: sum(sent_names(broker).values()) == 3, 3)
    for i in range(3):  # while nobody watches
        drop_renamed(folder, f"down{i}.txt", GOOD.format(title=f"D{i}", slug=f"d{i}"))
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "nested" / "deeper" / "n.txt").write_text(GOOD.format(title="N", slug="n"))
    with running(new_watcher(folder, settings)):
        wait_for(lambda: sum(sent_names(broker).values()) == 7, 3)
        time.sleep(0.5)
    names = sent_names(broker)
    assert set(names.values()) == {1}
    assert set(names) == {f"live{i}.txt" for i in range(3)} | {f"down{i}.txt" for i in range(3)} | {"n.txt"}
    assert len(ledger(store_url)) == 7


def test_the_first_scan_is_a_backfill_and_what_follows_is_live(tmp_path: Path, broker: str, store_url: str) -> None:
    """What the folder held before the watcher started (the first scan's finds) goes to the backfill lane;
    what is dropped once that scan is done goes to the live lane, never queued behind it (docs/queues.md)."""
    folder = tmp_path / "drops"
    folder.mkdir()
    for i in range(3):
        drop_renamed(folder, f"old{i}.txt", GOOD.format(title=f"O{i}", slug=f"o{i}"))
    with running(new_watcher(folder, settings_for(broker, store_url))):
        wait_for(lambda: sum(sent_names(broker).values()) == 3, 3)
        drop_renamed(folder, "new.txt", GOOD.format(title="New", slug="new"))
        wait_for(lambda: sum(sent_names(broker).values()) == 4, 3)
    client = redis.Redis.from_url(broker)

    def names_in(queue: str) -> set[str]:
        return {w["name"] for raw in client.lrange(queue, 0, -1) for w in _parse_args(raw)}

    assert names_in(QUEUE) == {"old0.txt", "old1.txt", "old2.txt"}
    assert names_in(LIVE_QUEUE) == {"new.txt"}


def _parse_args(raw: Any) -> list[dict[str, Any]]:
    msg = json.loads(raw)
    body = kombu_loads(base64.b64decode(msg["body"]), msg["content-type"],  # type: ignore[no-untyped-call]
                       msg["content-encoding"])
    return list(body[0][0])


def test_symlinks_are_never_followed_out_of_the_folder(tmp_path: Path, broker: str, store_url: str) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text(GOOD.format(title="Secret", slug="secret"))
    (outside / "dir" / "other.txt").write_text(GOOD.format(title="Other", slug="other"))
    folder = tmp_path / "drops"
    folder.mkdir()
    (folder / "early-link.txt").symlink_to(outside / "secret.txt")
    (folder / "early-dir").symlink_to(outside / "dir")
    with running(new_watcher(folder, settings_for(broker, store_url, rescan_seconds=0.3))):
        (folder / "link.txt").symlink_to(outside / "secret.txt")
        (folder / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
        tmp_link = folder / ".renamed.part"
        tmp_link.symlink_to(outside / "secret.txt")
        os.rename(tmp_link, folder / "renamed-link.txt")  # a symlink renamed into place is still a symlink
        drop_renamed(folder, "real.txt", GOOD.format(title="Real", slug="real"))
        time.sleep(1.2)  # several rescans
    assert sent_names(broker) == Counter({"real.txt": 1})
    assert [r["name"] for r in ledger(store_url)] == ["real.txt"]


def test_reserved_folders_and_non_recursive_watch(tmp_path: Path, broker: str, store_url: str) -> None:
    folder = tmp_path / "drops"
    for sub in ("processed/2024-01-01", "failed", "sub"):
        (folder / sub).mkdir(parents=True)
    with running(new_watcher(folder, settings_for(broker, store_url, recursive=False, rescan_seconds=0.3))):
        drop_renamed(folder / "processed" / "2024-01-01", "old.txt", "x")
        drop_renamed(folder / "failed", "bad.txt", "x")
        drop_renamed(folder / "sub", "nested.txt", "x")
        drop_renamed(folder, "top.txt", GOOD.format(title="Top", slug="top"))
        time.sleep(1.0)
    assert sent_names(broker) == Counter({"top.txt": 1})


def test_lost_task_is_sent_again(tmp_path: Path, broker: str, store_url: str) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    with running(new_watcher(folder, settings_for(broker, store_url, requeue_after_seconds=1.0))):
        drop_renamed(folder, "a.txt", GOOD.format(title="A", slug="a"))
        wait_for(lambda: sent_names(broker) == Counter({"a.txt": 1}), 2)
        redis.Redis.from_url(broker).flushdb()  # the broker lost it (a flush, a crash without persistence)
        wait_for(lambda: sent_names(broker) == Counter({"a.txt": 1}), 5)
    [row] = ledger(store_url)
    assert row["attempts"] == 2 and row["state"] == "queued"


def test_files_move_only_after_their_outcome_committed(tmp_path: Path, broker: str, store_url: str) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    env = env_for(broker, store_url)
    with running(new_watcher(folder, settings_for(broker, store_url))):
        drop_renamed(folder, "good.txt", GOOD.format(title="Good", slug="good"))
        drop_renamed(folder, "bad.txt", "---\ntitle: ''\nwebUrl: https://news.test/bad\n---\n")
        time.sleep(1.5)  # queued, but no worker yet: no outcome, so nothing moves
        assert sorted(p.name for p in folder.iterdir()) == ["bad.txt", "good.txt"]
        assert {r["state"] for r in ledger(store_url)} == {"queued"}
        with celery_worker(env, tmp_path, concurrency=1):
            wait_for(lambda: not (folder / "good.txt").exists() and not (folder / "bad.txt").exists(), 20)
            wait_for(lambda: all(r["finalized_at"] for r in ledger(store_url)), 5)
    [moved] = list((folder / "processed").glob("*/good.txt"))
    assert moved.read_text() == GOOD.format(title="Good", slug="good")
    assert [r["title"] for r in export(env)] == ["Good"]
    report = json.loads((folder / "failed" / "bad.txt.error.json").read_text())
    assert report["stage"] == "parse" and "title" in report["reason"]
    assert (folder / "failed" / "bad.txt").exists()
    rows = {r["name"]: r for r in ledger(store_url)}
    assert rows["good.txt"]["state"] == "published" and rows["good.txt"]["final_path"] == str(moved)
    assert rows["bad.txt"]["final_path"] == str(folder / "failed" / "bad.txt")


def test_two_watcher_processes_on_one_folder_enqueue_each_file_once(tmp_path: Path, broker: str,
                                                                   pg_url: str) -> None:
    from tests.conftest import fresh_pg_database

    folder = tmp_path / "drops"
    folder.mkdir()
    for i in range(5):  # both start scans see these
        drop_renamed(folder, f"early{i}.txt", GOOD.format(title=f"E{i}", slug=f"e{i}"))
    with fresh_pg_database() as store:
        env = env_for(broker, store, FEEDWORKER_WATCH__AFTER="keep", FEEDWORKER_WATCH__SETTLE_SECONDS="0.3",
                      FEEDWORKER_WATCH__RESCAN_SECONDS="0.5")
        Store(store).dispose()
        procs = [subprocess.Popen([str(BIN / "feedworker"), "watch", str(folder)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
        try:
            wait_for(lambda: sum(sent_names(broker).values()) == 5, 20)
            for i in range(30):
                drop_renamed(folder, f"live{i}.txt", GOOD.format(title=f"L{i}", slug=f"l{i}"))
                time.sleep(0.01)
            wait_for(lambda: sum(sent_names(broker).values()) == 35, 10)
            time.sleep(1.2)  # a couple of rescans by both
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            codes = [p.wait(15) for p in procs]
        logs = [p.stdout.read().decode() if p.stdout else "" for p in procs]
        assert codes == [0, 0], logs
        names = sent_names(broker)
        assert len(names) == 35 and set(names.values()) == {1}
        assert len(ledger(store)) == 35


class RecordingBatcher(Batcher):
    """The watcher's own batcher, noting each batch it decides to send (names), so the test can compare them with
    what reached the broker."""

    def __init__(self, batch_max: int, window: float) -> None:
        super().__init__(batch_max, window)
        self.decided: list[list[str]] = []

    def due(self, now: float, force: bool = False) -> list[Batch]:
        out = super().due(now, force)
        self.decided.extend([p.name for p in b.paths] for b in out)
        return out


def chains(broker: str) -> list[list[str]]:
    """The drops of each parse message waiting in the queue, oldest first (kombu pushes on the left)."""
    out: list[list[str]] = []
    for raw in queued(broker):
        msg = json.loads(raw)
        body = kombu_loads(base64.b64decode(msg["body"]), msg["content-type"],  # type: ignore[no-untyped-call]
                           msg["content-encoding"])
        out.append([w["name"] for w in body[0][0]])
    return out


def test_batches_grow_while_workers_are_behind(tmp_path: Path, broker: str, store_url: str) -> None:
    """No worker: the queue fills, so the watcher holds batches (up to a quarter second) to send fewer chains.
    How many chains exactly is the batcher's rule, tested with exact times in tests/test_batcher.py; here, on a
    real folder and broker, the queue holds exactly the batches the batcher decided, in arrival order."""
    folder = tmp_path / "drops"
    folder.mkdir()
    watcher = new_watcher(folder, settings_for(broker, store_url, batch_window_ms=10))
    watcher.batcher = recorder = RecordingBatcher(watcher.batcher.batch_max, watcher.batcher.window)
    with running(watcher):
        for i in range(30):
            drop_renamed(folder, f"{i:02d}.txt", GOOD.format(title=f"T{i}", slug=f"t{i}"))
            time.sleep(0.03)
        wait_for(lambda: sum(sent_names(broker).values()) == 30, 3)
    queued = chains(broker)
    assert queued == recorder.decided
    assert [name for chain in queued for name in chain] == [f"{i:02d}.txt" for i in range(30)]
    assert max(len(chain) for chain in queued) > 1  # with four messages waiting, batches were held for company


def test_watcher_killed_and_restarted_mid_stream_misses_nothing(tmp_path: Path, broker: str, store_url: str) -> None:
    """The acceptance's restart: files keep coming while `feedworker watch` is SIGKILLed and started again. Every
    file becomes one record, is in the ledger once, and is put away; a drop registered just before the kill but
    never sent comes back through the lost-task requeue."""
    folder = tmp_path / "drops"
    folder.mkdir()
    env = env_for(broker, store_url, FEEDWORKER_WATCH__SETTLE_SECONDS="0.3",
                  FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS="3")

    def watch() -> subprocess.Popen[bytes]:
        return watch_process(env, folder)

    def stream() -> None:
        for i in range(60):
            text = GOOD.format(title=f"Stream {i}", slug=f"s{i}")
            if i % 10 == 9:  # written in place, in two halves
                with open(folder / f"{i:03d}.txt", "w") as f:
                    f.write(text[:20])
                    f.flush()
                    time.sleep(0.2)
                    f.write(text[20:])
            else:
                drop_renamed(folder, f"{i:03d}.txt", text)
            time.sleep(1 / 30)

    with celery_worker(env, tmp_path, concurrency=2):
        first = watch()
        time.sleep(2)
        producer = threading.Thread(target=stream)
        producer.start()
        time.sleep(0.9)
        first.kill()
        first.wait()
        time.sleep(0.3)
        second = watch()
        try:
            producer.join()
            wait_for(lambda: len({r["title"] for r in export(env)}) == 60, 30)
            wait_for(lambda: sorted(p.name for p in folder.iterdir()) == ["processed"], 15)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
    records = export(env)
    assert sorted(r["title"] for r in records) == sorted(f"Stream {i}" for i in range(60))
    rows = ledger(store_url)
    assert sorted(r["name"] for r in rows) == sorted(f"{i:03d}.txt" for i in range(60))
    assert {r["state"] for r in rows} == {"published"}
    assert len(list((folder / "processed").glob("*/*.txt"))) == 60


@contextmanager
def own_redis(port: int) -> Iterator[str]:
    """A Redis server of this test's own on ``port`` (stopped and started again to fake an outage)."""
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), 10, interval=0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_broker_outage_holds_drops_and_sends_them_once_it_is_back(tmp_path: Path, store_url: str) -> None:
    """The drops are registered in the ledger and their send fails: when the broker is back they must be sent
    from the ledger (a plain submit would skip them as known), each once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path / "drops"
    folder.mkdir()
    with own_redis(port) as url:
        watcher = new_watcher(folder, settings_for(url, store_url))
    with running(watcher):  # the broker is down from the start
        for i in range(3):
            drop_renamed(folder, f"{i}.txt", GOOD.format(title=f"T{i}", slug=f"t{i}"))
        wait_for(lambda: watcher.pause.failing, 5)  # the error was caught: the loop goes on (stop() still works)
        wait_for(lambda: sorted(p.name for p in watcher.batcher.retrying) == ["0.txt", "1.txt", "2.txt"], 10)
        assert {r["state"] for r in ledger(store_url)} == {"queued"}
        with own_redis(port) as url:
            wait_for(lambda: sum(sent_names(url).values()) == 3, 10)
            time.sleep(1.0)
            assert sent_names(url) == Counter({"0.txt": 1, "1.txt": 1, "2.txt": 1})
    assert len(ledger(store_url)) == 3


def test_replay_after_a_config_change_takes_the_file_out_of_failed(tmp_path: Path, broker: str,
                                                                   store_url: str) -> None:
    from tasks.limits import ParseLimits

    folder = tmp_path / "drops"
    folder.mkdir()
    env = env_for(broker, store_url)
    settings = settings_for(broker, store_url).model_copy(update={"parse": ParseLimits(max_bytes=40)})
    with running(new_watcher(folder, settings)), celery_worker(env, tmp_path, concurrency=1):
        drop_renamed(folder, "big.txt", GOOD.format(title="Big", slug="big"))  # over 40 bytes: refused
        wait_for(lambda: (folder / "failed" / "big.txt.error.json").is_file(), 20)
        report = json.loads((folder / "failed" / "big.txt.error.json").read_text())
        assert report["stage"] == "read" and "limit" in report["reason"]
        feedworker(env, "replay")  # the limit is the default again: it reads the file from failed/
        wait_for(lambda: list((folder / "processed").glob("*/big.txt")), 20)
        wait_for(lambda: not (folder / "failed" / "big.txt.error.json").exists(), 5)
    assert not (folder / "failed" / "big.txt").exists()
    assert [r["title"] for r in export(env)] == ["Big"]
    assert feedworker(env, "failures", "--json").stdout == ""


def test_a_file_after_a_quiet_window_does_not_wait_for_the_window(tmp_path: Path, broker: str,
                                                                  store_url: str) -> None:
    folder = tmp_path / "drops"
    folder.mkdir()
    with running(new_watcher(folder, settings_for(broker, store_url, batch_window_ms=400))):
        started = time.monotonic()
        drop_renamed(folder, "first.txt", GOOD.format(title="First", slug="first"))
        wait_for(lambda: sent_names(broker) == Counter({"first.txt": 1}), 2, interval=0.01)
        assert time.monotonic() - started < 0.3  # sent at once, not at the end of the 0.4 s window
        for i in range(3):  # these follow within the window: one batch when it ends
            drop_renamed(folder, f"next{i}.txt", GOOD.format(title=f"N{i}", slug=f"n{i}"))
        wait_for(lambda: sum(sent_names(broker).values()) == 4, 3, interval=0.01)
    assert len(queued(broker)) == 2
