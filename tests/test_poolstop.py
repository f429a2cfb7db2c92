"""A warm shutdown that finds a job in a pool process's pipe ends promptly, the job run once
(worker/celeryapp/patches/poolstop.py).

The worker's only pool process is stopped (SIGSTOP) while it waits for work, and a batch is sent. Its job, with a
600 KB drop, fills the pipe and its write waits for the pipe to drain; with a 1 KB drop it is written in full and
waits to be read. The worker then gets SIGTERM, and the pool process is let go. Without the patch, the half-written
job gets the pool's stop sentinel in the middle of it: the process waits for the rest for ever, and the worker for
the process. The whole one is handed back to the broker by Celery's flush though the process runs it anyway: it
runs twice, and the process waits 30 s for its result to be read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tasks.store.deliveries import for_drop
from tasks.store.ledger import Store
from tests.faults import children, control_app, node_name, pong
from tests.processes import BIN, celery_worker, env_for, feedworker, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("size", [600_000, 1_000], ids=["half-written", "written"])
def test_a_warm_shutdown_with_a_job_in_its_pool_process_pipe_ends_and_runs_it_once(tmp_path: Path, redis_url: str,
                                                                                   size: int) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    env = env_for(redis_url, f"sqlite:///{tmp_path / 'fw.db'}")
    feedworker(env, "migrate")
    drops = tmp_path / "drops"
    drops.mkdir()
    (drops / "big.txt").write_bytes(b"x" * size)  # no front matter: refused at once once it is read
    with open(tmp_path / "worker.log", "ab") as log:
        worker = subprocess.Popen([str(BIN / "celery"), "-A", "worker", "worker", "-c", "1", "-n", "half@%h",
                                   "--loglevel=WARNING"], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_for(lambda: pong(redis_url, node_name("half")), 60)
        (pool_process,) = children(worker.pid)
        os.kill(pool_process, signal.SIGSTOP)
        feedworker(env, "ingest", str(drops))
        wait_for(lambda: _reserved(redis_url, node_name("half")), 30)
        time.sleep(1.0)  # its write to the stopped process has filled the pipe and waits, or is done
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the warm shutdown is under way
        os.kill(pool_process, signal.SIGCONT)
        try:
            # 20 s: not billiard's 30 s wait for a job's result to be read, as when its job is handed back too
            code = worker.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker did not exit in 20 s: its pool process waits for the rest of a half-written "
                        "job, or for its result to be read\n" + (tmp_path / "worker.log").read_text()[-3000:])
        assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
        with celery_worker(env, tmp_path, "after", concurrency=1):  # the batch's next stage, sent meanwhile
            failed = wait_for(lambda: _failures(env), 60)
    finally:
        for pid in [worker.pid, *children(worker.pid)]:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.wait()
    # The job ran once, in the process it was written to, and its message was acknowledged: not delivered again.
    assert [(f["file"], f["stage"]) for f in failed] == [("big.txt", "parse")]
    store = Store(env["FEEDWORKER_STORE_URL"])
    try:
        (drop,) = store.failed_drops()
        counts = [(r["stage"], r["count"]) for r in for_drop(store, drop["key"])]
        assert counts == [("parse", 1), ("verify", 1), ("publish", 1)]
    finally:
        store.dispose()


def _failures(env: dict[str, str]) -> list[dict[str, str]]:
    return [json.loads(line) for line in feedworker(env, "failures", "--json").stdout.splitlines() if line.strip()]


def _reserved(broker_url: str, node: str) -> bool:
    """The worker took the batch's message (its job is then written to the idle pool process at once)."""
    app = control_app(broker_url)
    try:
        return bool((app.control.inspect(destination=[node], timeout=1.0).reserved() or {}).get(node))
    finally:
        app.close()
