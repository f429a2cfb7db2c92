"""Flower for real: a real worker on a real Redis, drops run through it, Flower's HTTP API and /metrics read back,
and its dashboard loaded in a real headless Chromium.

What must hold: the workers and each stage's tasks are visible with readable arguments (file names), and no
drop's content reaches Flower, the ``secured`` blob least of all. Flower is not open by default: with basic auth
its API refuses a caller without the password.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.processes import BIN, celery_worker, env_for, feedworker, free_port, wait_for, wait_started
from tools.procs import stop_process

pytestmark = pytest.mark.slow
DOCS = Path(__file__).parent.parent / "docs"


@dataclass
class Site:
    url: str
    files: list[str]
    secrets: list[str]
    worker: str


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@contextmanager
def flower(env: dict[str, str], log: Path, *options: str) -> Iterator[str]:
    port = free_port()
    out = open(log, "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(BIN / "celery"), "-A", "worker", "flower", "--address=127.0.0.1",
                             f"--port={port}", *options], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_started(proc, lambda: _up(base), log, tail=2000)
        yield base
    finally:
        stop_process(proc, 10)
        out.close()


def _up(base: str) -> bool:
    try:
        return get(base + "/healthcheck")[0] == 200
    except OSError:
        return False


def write_drops(folder: Path, count: int = 4) -> tuple[list[str], list[str]]:
    folder.mkdir(parents=True)
    names, secrets = [], []
    for i in range(count):
        secured = base64.b64encode(os.urandom(48)).decode() + ";" + base64.b64encode(os.urandom(16)).decode()
        name = f"{i:03d}_{i + 0xabc:016x}.txt"
        (folder / name).write_text(
            f"---\ntitle: Flower item {i}\nwebUrl: https://news.test/flower-{i}\nexcerpt: body text {i}\n"
            f"images:\n  - url: http://127.0.0.1:9/img-{i}.png\nsecured: \"{secured}\"\n---\n")
        names.append(name)
        secrets.append(secured)
    return names, secrets


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("flower")
    redis.Redis.from_url(redis_url).flushdb()
    env = env_for(redis_url, f"sqlite:///{tmp / 'store.db'}")
    names, secrets = write_drops(tmp / "drops")
    with flower({**env, "FLOWER_UNAUTHENTICATED_API": "true"}, tmp / "flower.log") as base, \
            celery_worker(env, tmp, name="flowertest", concurrency=1):
        wait_for(lambda: "flowertest@" in get(base + "/api/workers?refresh=1")[1], 30)
        summary = json.loads(feedworker(env, "ingest", str(tmp / "drops"), "--wait", "--json").stdout)
        assert summary == {"published": 4, "unchanged": 0, "failed": 0}
        wait_for(lambda: get(base + "/api/tasks")[1].count("feedworker.publish") >= 1, 15)
        yield Site(base, names, secrets, "flowertest@" + socket.gethostname())
    redis.Redis.from_url(redis_url).flushdb()


def test_api_shows_workers_and_each_stage_with_file_names_never_contents(site: Site) -> None:
    status, text = get(site.url + "/api/workers?refresh=1")
    assert status == 200
    workers = json.loads(text)
    assert site.worker in workers
    assert workers[site.worker]["stats"]["pool"]["max-concurrency"] == 1

    status, text = get(site.url + "/api/tasks")
    assert status == 200
    tasks: dict[str, Any] = json.loads(text)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for task in tasks.values():
        by_name.setdefault(task["name"], []).append(task)
    assert {"feedworker.parse", "feedworker.verify", "feedworker.publish"} <= set(by_name)
    for task in tasks.values():
        assert task["state"] == "SUCCESS"
        assert task["args"].startswith("<") and "drops:" in task["args"], task["args"]
    shown = " ".join(t["args"] for t in by_name["feedworker.parse"])
    assert any(name in shown for name in site.files)
    publish_results = [t["result"] for t in by_name["feedworker.publish"]]
    assert sum(json.loads(r.replace("'", '"')).get("published", 0) for r in publish_results) == 4

    everything = [text, get(site.url + "/api/workers")[1], get(site.url + "/api/task/types")[1]]
    everything += [get(f"{site.url}/api/task/info/{task_id}")[1] for task_id in tasks]
    everything += [get(f"{site.url}/task/{task_id}")[1] for task_id in tasks]  # the task pages of the UI
    for page in everything:
        for secret in site.secrets:
            assert secret not in page
            assert secret.split(";")[0][:40] not in page
        assert "body text" not in page  # no field of a drop either


def test_metrics(site: Site) -> None:
    status, text = get(site.url + "/metrics")
    assert status == 200
    for stage in ("parse", "verify", "publish"):
        assert f'flower_events_total{{task="feedworker.{stage}",type="task-succeeded"' in text
    assert f'flower_worker_online{{worker="{site.worker}"}} 1.0' in text
    assert "flower_task_runtime_seconds_bucket" in text


def test_basic_auth_closes_the_api(tmp_path: Path, redis_url: str) -> None:
    env = env_for(redis_url, f"sqlite:///{tmp_path / 'store.db'}")
    with flower(env, tmp_path / "flower.log", "--basic_auth=ops:s3cret") as base:
        assert get(base + "/api/workers")[0] == 401
        assert get(base + "/")[0] == 401
        assert get(base + "/api/workers", auth="ops:wrong")[0] == 401
        assert get(base + "/api/workers", auth="ops:s3cret")[0] == 200
    with flower(env, tmp_path / "flower2.log") as base:  # no auth and no opt-in: the API stays shut
        assert get(base + "/api/workers")[0] == 401


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    # Only loopback: a proxy that goes nowhere for anything else, and no background traffic of its own.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1", "--virtual-time-budget=5000"]
    return subprocess.run(["chromium", *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install chromium): the dashboard is not loaded")
def test_dashboard_in_headless_chromium(site: Site, tmp_path: Path) -> None:
    dom = chromium("--dump-dom", site.url + "/").stdout
    assert site.worker in dom and "Online" in dom
    tasks_dom = chromium("--dump-dom", site.url + "/tasks").stdout
    assert "feedworker.parse" in tasks_dom and "feedworker.publish" in tasks_dom
    shots = {}
    for page, name in (("/", "flower.png"), ("/tasks", "flower-tasks.png")):
        shot = tmp_path / name
        chromium(f"--screenshot={shot}", "--window-size=1400,900", site.url + page)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        shots[name] = shot
    if os.environ.get("FEEDWORKER_UPDATE_DOCS"):  # refresh the README's pictures
        DOCS.mkdir(exist_ok=True)
        for name, shot in shots.items():
            shutil.copy(shot, DOCS / name)
