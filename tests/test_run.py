"""`feedworker run DIR` as a new user runs it: nothing configured (no broker, no store), a fresh folder.

It must start the embedded broker and a SQLite store in the working folder, turn dropped files into records, put
them away, stop cleanly on SIGTERM (exit 0) and lose nothing across a stop in the middle of work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.corpus import write_corpus
from tests.imagehost import png, serve_images
from tests.processes import BIN, autogroups_on, feedworker, group_nice, wait_for, wait_started
from tools.procs import stop_process
from worker.running.broker import ping

pytestmark = pytest.mark.slow


def user_env(**more: str) -> dict[str, str]:
    """A user's environment: no FEEDWORKER_* settings but the test's loopback image host and short timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDWORKER_", "FLOWER_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", FEEDWORKER_IMAGES__ALLOW_NETWORKS='["127.0.0.1/32"]',
               FEEDWORKER_IMAGES__ALLOW_PORTS='["1-65535"]',  # the test image host's random port
               FEEDWORKER_IMAGES__TIMEOUT_SECONDS="5", FEEDWORKER_WATCH__SETTLE_SECONDS="0.3",
               FEEDWORKER_LOG_LEVEL="INFO", **more)
    return env


@contextmanager
def feedworker_run(cwd: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    log: IO[bytes] = open(cwd / "run.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(BIN / "feedworker"), "run", "drops", *args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_started(proc, (cwd / ".feedworker" / "broker.url").is_file, cwd / "run.log")
        yield proc
    finally:
        stop_process(proc, 60)  # a failed test: stop it as a user would, so nothing outlives the test
        log.close()


def stop(proc: subprocess.Popen[bytes], cwd: Path, timeout: float = 60) -> None:
    url = (cwd / ".feedworker" / "broker.url").read_text().strip()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout) == 0, (cwd / "run.log").read_text()[-3000:]
    assert not (cwd / ".feedworker" / "broker.url").exists()
    assert not ping(url), "the embedded broker outlived `feedworker run`"


def drop_all(src: Path, drops: Path, spacing: float = 0.03) -> None:
    """Each file in by atomic rename (its mtime kept: drop order), one at a time."""
    for path in sorted(src.iterdir()):
        tmp = drops / f".{path.name}.part"
        shutil.copy2(path, tmp)
        os.rename(tmp, drops / path.name)
        time.sleep(spacing)


def export(cwd: Path) -> list[dict[str, Any]]:
    """`feedworker export` from the run's folder: its SQLite store, nothing configured."""
    out = feedworker(user_env(), "export", cwd=cwd).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def leftovers(drops: Path) -> list[str]:
    return sorted(p.name for p in drops.iterdir() if p.name not in ("processed", "failed"))


def ledger_states(cwd: Path) -> dict[str, str]:
    with sqlite3.connect(cwd / "feedworker.db") as conn:
        return dict(conn.execute("SELECT name, state FROM drops"))


def test_run_on_embedded_defaults(tmp_path: Path, httpserver: HTTPServer) -> None:
    ans = write_corpus(tmp_path / "corpus", serve_images(httpserver))
    env = user_env()
    with feedworker_run(tmp_path, env, "-c", "2") as run:
        # A second worker, started as any Celery user starts one, on the embedded broker (found through
        # .feedworker/broker.url): the embedded Valkey serves several worker processes and nodes at once.
        extra_log = open(tmp_path / "extra.log", "wb")  # noqa: SIM115
        extra = subprocess.Popen([str(BIN / "celery"), "-A", "worker", "worker", "-c", "1", "-n", "extra@%h",
                                  "--without-mingle", "--without-gossip"], cwd=tmp_path, env=env,
                                 stdout=extra_log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "ready" in (tmp_path / "extra.log").read_text(), 30)
            drop_all(tmp_path / "corpus", tmp_path / "drops", spacing=0.1)
            wait_for(lambda: not leftovers(tmp_path / "drops"), 60)
        finally:
            extra.send_signal(signal.SIGTERM)
            extra.wait(30)
            extra_log.close()
        stop(run, tmp_path)
    # The extra node took its share: some stage of some batch (which stage it gets first depends on timing: under
    # load the run's own pool may have taken every parse before the extra node asked).
    extra_text = (tmp_path / "extra.log").read_text()
    assert any(f"feedworker.{stage}" in extra_text for stage in ("parse", "verify", "publish")), extra_text[-2000:]
    run_log = (tmp_path / "run.log").read_text()
    assert "feedworker.parse" in run_log  # and so did run's own worker
    records = export(tmp_path)
    assert sorted(r["title"] for r in records if not r["stub"]) == sorted(ans.titles)
    processed = {p.name for p in (tmp_path / "drops" / "processed").glob("*/*")}
    assert processed == {p.name for p in (tmp_path / "corpus").iterdir()} - set(ans.refused)
    failed = {p.name for p in (tmp_path / "drops" / "failed").iterdir()}
    assert failed == set(ans.refused) | {f"{n}.error.json" for n in ans.refused}
    secured = next(r["secured"] for r in records if not r["stub"])
    assert secured not in run_log

    # Files dropped while it is stopped are found when it starts again (the embedded broker restarts on its data).
    (tmp_path / "corpus2").mkdir()
    text = (tmp_path / "corpus" / "000_0000000000000000.txt").read_text()
    (tmp_path / "corpus2" / "late.txt").write_text(text.replace("Story 0 café", "Late story"))
    drop_all(tmp_path / "corpus2", tmp_path / "drops")
    with feedworker_run(tmp_path, env, "-c", "1") as run:
        wait_for(lambda: not leftovers(tmp_path / "drops"), 30)
        stop(run, tmp_path)
    assert "Late story" in {r["title"] for r in export(tmp_path)}


def test_run_starts_a_worker_per_role_and_each_serves_its_queues(tmp_path: Path, httpserver: HTTPServer) -> None:
    """As shipped: `feedworker run` starts a general, a live and a verify worker (worker/running/roles.py). Drops
    seen by the watcher run every stage on the live worker; a backfill sent by `ingest` has its image checks on
    the verify worker (threads pool) and its parse and publish on the general one."""
    ans = write_corpus(tmp_path / "backfill", serve_images(httpserver), count=12)
    live_src = tmp_path / "live"
    live_src.mkdir()
    for i in range(3):
        (live_src / f"live{i}.txt").write_text(f"---\ntitle: Live {i}\nwebUrl: https://news.test/live-{i}\n"
                                               f"images: [{{url: '{httpserver.url_for(f'/live{i}.png')}'}}]\n---\n")
        httpserver.expect_request(f"/live{i}.png").respond_with_data(png(4, 3), content_type="image/png")
    env = user_env()
    with feedworker_run(tmp_path, env, "-c", "1") as run:
        wait_for(lambda: len(_nodes(tmp_path, env)) == 3, 60)
        priorities = _priorities(tmp_path, env)
        drop_all(live_src, tmp_path / "drops")
        feedworker(env, "ingest", str(tmp_path / "backfill"), cwd=tmp_path)
        total = 3 + len(list((tmp_path / "backfill").iterdir()))
        wait_for(lambda: len(ledger_states(tmp_path)) == total and "queued" not in ledger_states(tmp_path).values()
                 and not leftovers(tmp_path / "drops"), 60)
        totals = _nodes(tmp_path, env)
        stop(run, tmp_path)
    by_role = {node.split("-")[0]: set(done) for node, done in totals.items()}
    assert by_role == {"live": {"feedworker.parse", "feedworker.verify", "feedworker.publish"},
                       "verify": {"feedworker.verify"},
                       "feedworker": {"feedworker.parse", "feedworker.publish"}}, totals
    titles = {r["title"] for r in export(tmp_path) if not r["stub"]}
    assert titles == set(ans.titles) | {"Live 0", "Live 1", "Live 2"}
    # The backfill's workers yield the CPU to the live one: niced, and where the kernel shares the CPU between
    # sessions first (autogroups), their sessions' groups niced too (worker/running/children.py).
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert {role: nice for role, (nice, _) in priorities.items()} == {"live": mine, "verify": mine + 10,
                                                                     "feedworker": mine + 10}, priorities
    if autogroups_on():
        assert {role: group for role, (_, group) in priorities.items()} == {"live": 0, "verify": 10,
                                                                            "feedworker": 10}, priorities


def _priorities(cwd: Path, env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Each worker role's main process: its niceness and its session's autogroup niceness (0 without one)."""
    out: dict[str, tuple[int, int]] = {}
    for node, stats in _stats(cwd, env).items():
        pid = int(stats["pid"])
        group = Path(f"/proc/{pid}/autogroup")
        out[node.split("-")[0]] = (os.getpriority(os.PRIO_PROCESS, pid),
                                   group_nice(group.read_text()) if group.exists() else 0)
    return out


def _nodes(cwd: Path, env: dict[str, str]) -> dict[str, dict[str, int]]:
    """Each worker node that answers, with the tasks it has run."""
    return {node: dict(stats.get("total", {})) for node, stats in _stats(cwd, env).items()}


def _stats(cwd: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``celery inspect stats`` of each worker node that answers, as an operator asks ({} when none does)."""
    res = subprocess.run([str(BIN / "celery"), "-A", "worker", "inspect", "stats", "--json", "--timeout", "2"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        return {}
    stats: dict[str, dict[str, Any]] = json.loads(res.stdout)
    return stats


def test_sigterm_in_the_middle_of_work_loses_nothing(tmp_path: Path, httpserver: HTTPServer) -> None:
    def slow_image(_request: Request) -> Response:
        time.sleep(1.0)
        return Response(png(4, 3), content_type="image/png")

    httpserver.expect_request("/slow.png").respond_with_handler(slow_image)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        img = httpserver.url_for(f"/slow.png?n={i}")
        (src / f"{i:03d}_{i:016x}.txt").write_text(
            f"---\ntitle: Slow {i}\nwebUrl: https://news.test/slow-{i}\nimages:\n  - url: {img}\n---\n")
    env = user_env()
    with feedworker_run(tmp_path, env, "-c", "1") as run:
        time.sleep(3)  # the worker is up
        drop_all(src, tmp_path / "drops", spacing=0.05)  # six chains, each about 1 s of image check
        wait_for(lambda: "published" in ledger_states(tmp_path).values(), 20)
        stop(run, tmp_path)
    states = ledger_states(tmp_path)
    assert len(states) == 6
    assert "queued" in states.values(), "stopped too late to test anything"
    with feedworker_run(tmp_path, env, "-c", "2") as run:
        wait_for(lambda: set(ledger_states(tmp_path).values()) == {"published"}, 30)
        wait_for(lambda: not leftovers(tmp_path / "drops"), 10)
        stop(run, tmp_path)
    assert sorted(r["title"] for r in export(tmp_path)) == [f"Slow {i}" for i in range(6)]


def test_a_second_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    env = user_env()
    with feedworker_run(tmp_path, env, "-c", "1") as run:
        second = subprocess.run([str(BIN / "feedworker"), "run", "drops"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert "another `feedworker run`" in second.stderr
        stop(run, tmp_path)


def test_run_restarts_a_dead_worker_and_serves_flower(tmp_path: Path) -> None:
    import base64
    import re
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = user_env(FLOWER_PORT=str(port))
    api = f"http://127.0.0.1:{port}/api/workers?refresh=1"

    def workers(auth: bool = True) -> dict[str, Any]:
        request = urllib.request.Request(api)
        if auth:  # run --flower made credentials and keeps them for the user in .feedworker/flower.auth
            token = base64.b64encode((tmp_path / ".feedworker" / "flower.auth").read_bytes().strip()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return dict(json.loads(response.read()))
        except OSError:
            return {}

    def started() -> list[int]:
        return [int(p) for p in re.findall(r"started celery worker \(pid (\d+)\)", (tmp_path / "run.log").read_text())]

    with feedworker_run(tmp_path, env, "-c", "1", "--flower") as run:
        # Flower on loopback; with no password configured, its API still needs the generated one
        wait_for(lambda: any(name.startswith("feedworker-") for name in workers()), 30)
        assert workers(auth=False) == {}  # 401 without credentials
        assert os.stat(tmp_path / ".feedworker" / "flower.auth").st_mode & 0o077 == 0
        [first] = started()
        os.kill(first, signal.SIGKILL)  # the worker dies unexpectedly: the supervisor starts another
        wait_for(lambda: len(started()) == 2, 15)
        (tmp_path / "drops" / ".a.part").write_text("---\ntitle: After the crash\nwebUrl: https://news.test/a\n---\n")
        os.rename(tmp_path / "drops" / ".a.part", tmp_path / "drops" / "a.txt")
        wait_for(lambda: not leftovers(tmp_path / "drops"), 30)
        stop(run, tmp_path)
    assert "celery worker exited with code -9" in (tmp_path / "run.log").read_text()
    assert [r["title"] for r in export(tmp_path)] == ["After the crash"]
    for pid in started():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_killed_run_leaves_nothing_running_that_the_next_run_does_not_clean_up(tmp_path: Path) -> None:
    import re

    import redis

    env = user_env()
    text = "---\ntitle: {t}\nwebUrl: https://news.test/{t}\n---\n"
    (tmp_path / "drops").mkdir()
    with feedworker_run(tmp_path, env, "-c", "1") as run:
        drop_all_text(tmp_path / "drops", {"a.txt": text.format(t="a")})
        wait_for(lambda: not leftovers(tmp_path / "drops"), 30)
        url = (tmp_path / ".feedworker" / "broker.url").read_text().strip()
        [worker] = [int(p) for p in re.findall(r"started celery worker \(pid (\d+)\)",
                                               (tmp_path / "run.log").read_text())]
        run.kill()  # SIGKILL: no clean-up at all
        run.wait()
    try:
        wait_for(lambda: not _alive(worker), 20)  # the worker was told (parent-death signal) and drained
        wait_for(lambda: not ping(url), 20)  # so was the embedded broker: it flushed its data and stopped
        drop_all_text(tmp_path / "drops", {"b.txt": text.format(t="b"), "c.txt": text.format(t="c")})
        with feedworker_run(tmp_path, env, "-c", "1") as run:
            url_file = tmp_path / ".feedworker" / "broker.url"
            wait_for(lambda: url_file.is_file() and url_file.read_text().strip() != url, 30)
            wait_for(lambda: not leftovers(tmp_path / "drops"), 30)
            stop(run, tmp_path)
    finally:
        if ping(url):
            redis.Redis.from_url(url).shutdown(nosave=True)
    assert sorted(r["title"] for r in export(tmp_path)) == ["a", "b", "c"]


def drop_all_text(drops: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (drops / f".{name}.part").write_text(text)
        os.rename(drops / f".{name}.part", drops / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
