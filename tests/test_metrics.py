"""Metrics as Prometheus scrapes them, from real processes.

- A Celery worker (prefork, -c 2) serving ``--metrics-port``, fed by `feedworker ingest` sharing its metrics
  directory (the shape of `feedworker run`: an enqueuing process and forked workers, one endpoint): the counters
  move by exactly the right amounts (20 drops, 3 refused: published 17, failed 3 with their stages), and the
  values come from several processes.
- :func:`worker.observing.metricserver.serve` (what `run` / `watch` call) reads the ledger and broker at scrape time:
  backlog, oldest queued drop, queue depth, workers; and answers /livez and /readyz.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer

from tests.imagehost import serve_images
from tests.processes import BIN, env_for, feedworker, free_port, wait_for, wait_started
from tools.procs import stop_process

EXCERPT = "Zebra-quartz excerpt sentence that must never reach a log line"
SECURED = base64.b64encode(b"S" * 400).decode() + ";" + base64.b64encode(b"v" * 16).decode()
IMAGE_KINDS = ("ok", "broken", "not_image")


@dataclass
class OpsCorpus:
    total: int
    refused: dict[str, str] = field(default_factory=dict)  # file -> stage
    images: dict[str, int] = field(default_factory=dict)  # status -> URLs checked
    urls: set[str] = field(default_factory=set)  # canonical record URLs


def write_drops(folder: Path, base: str, total: int = 20) -> OpsCorpus:
    """``total`` drops: three refused (one at read: too big; two at parse), the rest valid, each with one image
    (ok, broken or not an image, in turn), an excerpt and a ``secured`` blob."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = OpsCorpus(total)
    for i in range(total - 3):
        kind = IMAGE_KINDS[i % 3]
        img = {"ok": f"{base}/ok/{20 + i}/10/m{i}.png", "broken": f"{base}/status/404/m{i}.png",
               "not_image": f"{base}/html/m{i}.png"}[kind]
        corpus.images[kind] = corpus.images.get(kind, 0) + 1
        corpus.urls.add(f"https://ops.test/item-{i}")
        (folder / f"{i:03d}_{i:016x}.txt").write_text("\n".join([
            "---", f"title: Item {i}", f"webUrl: https://ops.test/item-{i}", f"excerpt: {json.dumps(EXCERPT)}",
            f"images: [{{url: {json.dumps(img)}, width: 1, height: 1}}]", f"secured: {json.dumps(SECURED)}",
            "---", ""]), encoding="utf-8")
    (folder / "bad_yaml.txt").write_text("---\ntitle: [unclosed\n---\n", encoding="utf-8")
    (folder / "bad_title.txt").write_text("---\ntitle: ''\nwebUrl: https://ops.test/x\n---\n", encoding="utf-8")
    (folder / "too_big.txt").write_text("---\ntitle: big\n---\n" + "x" * 1_100_000, encoding="utf-8")
    corpus.refused = {"bad_yaml.txt": "parse", "bad_title.txt": "parse", "too_big.txt": "read"}
    return corpus


def _all_finished(states: dict[str, str], total: int) -> bool:
    return len(states) == total and all(s in ("published", "unchanged", "failed") for s in states.values())


@contextmanager
def worker_with_metrics(env: dict[str, str], log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A worker worker -c 2 --metrics-port PORT`, stopped with a warm shutdown."""
    with log.open("ab") as out:
        proc = subprocess.Popen([str(BIN / "celery"), "-A", "worker", "worker", "-c", "2", "-n", "m1@%h",
                                 f"--metrics-port={port}"], env=env, cwd=Path(__file__).parent.parent,
                                stdout=out, stderr=out)
        try:
            wait_started(proc, lambda: _answers(port), log)
            yield proc
        finally:
            stop_process(proc, 20)


def _answers(port: int) -> bool:
    try:
        return get(port, "/metrics")[0] == 200
    except OSError:
        return False


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (name, labels) -> value


def scrape(port: int) -> Samples:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def broker(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.mark.slow
def test_counters_move_by_the_right_amounts_during_an_ingest(tmp_path: Path, broker: str,
                                                              httpserver: HTTPServer) -> None:
    corpus = write_drops(tmp_path / "drops", serve_images(httpserver))
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = env_for(broker, f"sqlite:///{tmp_path / 'fw.db'}", FEEDWORKER_WATCH__BATCH_MAX="2",
                  PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    port = free_port()
    with worker_with_metrics(env, tmp_path / "worker.log", port):
        before = scrape(port)
        assert value(before, "feedworker_drops_total", outcome="published", stage="publish") == 0
        ingest = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(tmp_path / "drops"), "--wait", "--json"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        while ingest.poll() is None:  # scraped while the drops flow: totals only ever grow
            samples = scrape(port)
            seen.append(sum(v for (n, _), v in samples.items() if n == "feedworker_drops_total"))
            time.sleep(0.1)
        out, err = ingest.communicate()
        assert ingest.returncode == 0, err[-2000:]
        assert json.loads(out) == {"published": 17, "unchanged": 0, "failed": 3}
        assert seen == sorted(seen)
        after = scrape(port)

    def drops(outcome: str, stage: str) -> float:
        return value(after, "feedworker_drops_total", outcome=outcome, stage=stage)

    assert drops("published", "publish") == 17
    assert drops("unchanged", "publish") == 0
    assert (drops("failed", "read"), drops("failed", "parse"), drops("failed", "verify")) == (1, 2, 0)
    assert value(after, "feedworker_drops_discovered_total", origin="ingest") == 20  # from the ingest process
    for status in IMAGE_KINDS:
        assert value(after, "feedworker_image_checks_total", status=status) == corpus.images[status], status
    batches = 10  # 20 drops in batches of 2: one parse, verify and publish task each
    assert value(after, "feedworker_stage_duration_seconds_count", stage="parse") == batches
    assert value(after, "feedworker_stage_duration_seconds_count", stage="verify") == batches
    assert value(after, "feedworker_stage_duration_seconds_count", stage="publish") >= batches  # + retries
    assert value(after, "feedworker_store_write_seconds_count", operation="register") == batches
    assert value(after, "feedworker_store_write_seconds_count", operation="publish") >= batches
    assert value(after, "feedworker_stage_duration_seconds_sum", stage="verify") > 0
    assert all(value(after, "feedworker_stage_in_progress", stage=s) == 0 for s in ("parse", "verify", "publish"))
    # The totals were added up over processes: the ingest process and both pool children wrote their own files.
    writers = {f.stem.rsplit("_", 1)[1] for f in prom_dir.glob("counter_*.db")}
    assert len(writers) >= 3, writers
    # Labels come from fixed sets: no file name or URL ever becomes one.
    assert not any(".txt" in str(labels) or "http" in str(labels) for (_, labels) in after)


@pytest.mark.slow
def test_served_ledger_gauges_and_health(tmp_path: Path, broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` as `run` calls it: a real stale backlog (enqueued, no worker running) shows in the gauges."""
    from worker.celeryapp.celery_app import make_app
    from worker.observing.metricserver import serve
    from worker.settings import Settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    corpus_dir = tmp_path / "drops"
    write_drops(corpus_dir, "http://127.0.0.1:9", total=7)  # no worker runs: nothing is checked or published
    store_url = f"sqlite:///{tmp_path / 'fw.db'}"
    env = env_for(broker, store_url, FEEDWORKER_WATCH__BATCH_MAX="3")
    assert "enqueued 7" in feedworker(env, "ingest", str(corpus_dir)).stdout
    settings = Settings(broker_url=broker, store_url=store_url)
    server = serve(0, "127.0.0.1", settings, app=make_app(settings))
    try:
        from worker.observing import metrics

        metrics.drops_discovered("watch", 4)  # this process's own counters are served too
        time.sleep(0.3)
        samples = scrape(server.port)
        assert value(samples, "feedworker_backlog_drops") == 7
        assert value(samples, "feedworker_oldest_queued_age_seconds") >= 0.3
        assert value(samples, "feedworker_queue_messages", queue="feedworker") == 3  # 7 drops in batches of 3
        assert value(samples, "feedworker_workers") == 0
        assert value(samples, "feedworker_broker_up") == value(samples, "feedworker_store_up") == 1
        assert value(samples, "feedworker_drops_discovered_total", origin="watch") == 4
        assert get(server.port, "/livez") == (200, json.dumps({"ok": True, "checks": [
            {"name": "broker", "ok": True, "detail": "answers PING"}]}))
        status, body = get(server.port, "/readyz")
        assert status == 200 and json.loads(body)["ok"] is True
    finally:
        server.stop()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # the private directory went with it


def test_readyz_answers_503_on_a_store_without_schema(tmp_path: Path, broker: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.observing.metricserver import serve
    from worker.settings import Settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    (tmp_path / "empty.db").touch()  # a store with no schema
    server = serve(0, "127.0.0.1", Settings(broker_url="redis://127.0.0.1:1/0",
                                            store_url=f"sqlite:///{tmp_path / 'empty.db'}"), alive=lambda: False)
    try:
        status, body = get(server.port, "/readyz")
        assert status == 503
        assert [c["name"] for c in json.loads(body)["checks"] if not c["ok"]] == ["migrations"]
        status, body = get(server.port, "/livez")
        assert status == 503
        assert {c["name"] for c in json.loads(body)["checks"] if not c["ok"]} == {"process", "broker"}
    finally:
        server.stop()


def test_label_values_are_bounded() -> None:
    from worker.observing.metrics import STAGES, bounded

    assert bounded("parse", STAGES) == "parse"
    assert bounded("/drops/000_abc.txt", STAGES) == "other"
    assert bounded(None, STAGES) == "other"


def _with_workers(samples: Samples, count: int) -> Samples | None:
    return samples if value(samples, "feedworker_workers") == count else None


@pytest.mark.slow
def test_feedworker_run_serves_the_whole_picture(tmp_path: Path, httpserver: HTTPServer) -> None:
    """The endpoint of `feedworker run` (metrics_port): the watcher's discoveries, the forked pool's outcomes and
    the ledger gauges, on one port, scraped while the drops flow."""
    from tests.test_run import drop_all, feedworker_run, ledger_states, leftovers, stop, user_env

    corpus = write_drops(tmp_path / "corpus", serve_images(httpserver))
    port = free_port()
    env = user_env(FEEDWORKER_METRICS_PORT=str(port))
    with feedworker_run(tmp_path, env, "-c", "2") as run:
        wait_for(lambda: _answers(port), 30)
        drop_all(tmp_path / "corpus", tmp_path / "drops", spacing=0.01)
        totals: list[float] = []

        def counted() -> float:
            totals.append(sum(v for (n, _), v in scrape(port).items() if n == "feedworker_drops_total"))
            return totals[-1]

        # Done is what the ledger and the folder say (every drop has its outcome, every file is put away), not
        # what the counter says: a counter that is off must fail the assertion below with its value, not turn
        # into a wait that never ends. The counter is written just after its drop's commit, so it gets a moment.
        wait_for(lambda: counted() >= 0 and _all_finished(ledger_states(tmp_path), corpus.total)
                 and not leftovers(tmp_path / "drops"), 60)
        wait_for(lambda: counted() >= corpus.total, 10)
        assert totals[-1] == corpus.total and totals == sorted(totals), totals
        time.sleep(1.1)  # the ledger and broker gauges are cached for a second
        # `run` starts three workers (general, live, verify: worker/running/roles.py); all answer once booted
        after = wait_for(lambda: _with_workers(scrape(port), 3), 30, interval=1.1)
        assert get(port, "/livez")[0] == get(port, "/readyz")[0] == 200
        stop(run, tmp_path)
    assert value(after, "feedworker_drops_discovered_total", origin="watch") == 20
    assert value(after, "feedworker_drops_total", outcome="published", stage="publish") == 17
    assert value(after, "feedworker_drops_total", outcome="failed", stage="parse") == 2
    assert value(after, "feedworker_drops_total", outcome="failed", stage="read") == 1
    assert value(after, "feedworker_image_checks_total", status="ok") == corpus.images["ok"]
    assert value(after, "feedworker_backlog_drops") == value(after, "feedworker_oldest_queued_age_seconds") == 0
    assert value(after, "feedworker_workers") == 3 and value(after, "feedworker_broker_up") == 1
