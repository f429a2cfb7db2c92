"""Fault injection for the fault tests: a private Redis to kill, a TCP proxy to cut, process trees to SIGKILL,
a threaded (and optionally slow) image host, and checks of the store after the dust settles.

Nothing here touches the machine's shared Redis or PostgreSQL: an outage is a private ``redis-server`` killed
and restarted on the same port, or a proxy in front of PostgreSQL that stops forwarding.

Over 300 lines: the fault harness the fault tests share (private servers, proxies, process control), one kit.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import KombuError
from sqlalchemy import create_engine, text

from tests.corpus import Answers
from tests.imagehost import png
from tests.processes import BIN, env_for, free_port

CHECKED = {"ok", "broken", "not_image", "unreachable", "blocked"}

# Limits short enough that redelivery and retries happen within a test, and the ledger's own requeue off (600 s)
# so only the mechanism under test can bring lost work back; a test overrides what its fault needs.
FAST = {
    "FEEDWORKER_VISIBILITY_TIMEOUT": "10",
    "FEEDWORKER_TASK_TIME_LIMIT": "8",
    "FEEDWORKER_TASK_SOFT_TIME_LIMIT": "6",
    "FEEDWORKER_WATCH__BATCH_MAX": "1",
    "FEEDWORKER_IMAGES__TIMEOUT_SECONDS": "6",  # above the image host's delay: a slow answer is still an answer
    "FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS": "600",
}


# -- a private Redis ------------------------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of our own on a free loopback port, without persistence: killing it loses every message."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; every queued and unacknowledged message is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except (redis.RedisError, OSError):
            return False

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)


@contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def fault_broker(kind: str, workdir: Path) -> Iterator[str]:
    """A broker of the fault test's own, by ``kind``: a private Redis, or a fresh vhost on the shared RabbitMQ."""
    if kind == "redis":
        with private_redis(workdir) as server:
            yield server.url()
    else:
        from tests.conftest import fresh_vhost

        with fresh_vhost() as url:
            yield url


def held_drops(tasks: list[dict[str, Any]]) -> list[str]:
    """The drop names in the arguments of tasks as `inspect active` shows them (the batch itself, at any stage)."""
    return sorted({name for t in tasks for name in re.findall(r"'name': '([^']+)'", str(t.get("args", "")))})


# -- a TCP proxy that can be cut ------------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``cut()`` closes the listener and every live connection, so
    clients see what they see when a server goes away (reset, then refused); ``restore()`` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self._stop.set()
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            a.close()
            b.close()


@contextmanager
def tcp_proxy(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy((host, port))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` (``...@host:port/db``) pointed at the proxy instead."""
    return re.sub(r"@[^/@]+/", f"@127.0.0.1:{proxy.port}/", url, count=1)


# -- processes ------------------------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), children first."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(children(int(child)))
    return found


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and its pool at once, as the OOM killer or a pulled plug does: nothing is cleaned up."""
    pids = [proc.pid, *children(proc.pid)]
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def rss_kib(pid: int) -> int:
    """Resident memory of one process, in KiB."""
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(match[1]) if match else 0


def unacked(server: PrivateRedis, db: int = 0) -> int:
    """Messages delivered to some worker and not acknowledged yet (kombu's Redis transport keeps them here)."""
    return int(server.client(db).hlen("unacked"))


# -- an image host --------------------------------------------------------------------------------------------------


@contextmanager
def image_host(delay: float = 0.0) -> Iterator[str]:
    """A threaded image host on loopback: /ok/W/H/x.png (a real PNG), /status/404/x, /html/x, /tarpit/x (never
    answers); every answer after ``delay`` seconds, so a batch is still checking its images when a fault hits."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            ok = re.match(r"/ok/(\d+)/(\d+)/", self.path)
            if ok:
                self._send(200, "image/png", png(int(ok[1]), int(ok[2])))
            elif self.path.startswith("/status/404/"):
                self._send(404, "text/plain", b"gone")
            elif self.path.startswith("/tarpit/"):
                time.sleep(120)
            else:
                self._send(200, "text/html", b"<html>not an image</html>")

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(OSError):
                self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- the store, read directly -----------------------------------------------------------------------------------------


def ledger(store_url: str) -> list[dict[str, Any]]:
    """Every drop in the ledger with its state, stage, reason and the item it wrote."""
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, state, stage, reason, item_url, attempts FROM drops"))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def check_consistent(records: list[dict[str, Any]], drops: list[dict[str, Any]]) -> None:
    """No half-written state: no URL twice, every image checked, every finished drop's item present and full."""
    urls = [r["url"] for r in records]
    assert len(urls) == len(set(urls)), "a record is duplicated"
    for r in records:
        for im in [*r["images"], *(im for rel in r["related"] for im in rel["images"])]:
            assert im["status"] in CHECKED, (r["url"], im)
    full = {r["url"] for r in records if not r["stub"]}
    for d in drops:
        assert d["state"] in ("published", "unchanged", "failed"), d
        if d["state"] != "failed":
            assert d["item_url"] in full, d


def check_answers(records: list[dict[str, Any]], ans: Answers) -> None:
    """The corpus's answers hold: every item, stub, resolved link and image outcome."""
    full = [r for r in records if not r["stub"]]
    assert sorted(r["title"] for r in full) == sorted(ans.titles)
    assert {r["url"] for r in records if r["stub"]} == ans.stubs
    by_url = {r["url"]: r for r in records}
    for r in full:
        resolved = {by_url[rel["url"]]["title"] for rel in r["related"] if rel["resolved"]}
        assert resolved == ans.links[r["title"]], r["title"]
    seen: dict[str, tuple[str, int | None, int | None]] = {}
    for r in records:
        for im in [*r["images"], *(im for rel in r["related"] for im in rel["images"])]:
            seen.setdefault(im["url"], (im["status"], im["width"], im["height"]))
    wrong = {u: (seen.get(u), want) for u, want in ans.images.items() if seen.get(u) != want}
    assert not wrong, wrong


def control_app(broker_url: str) -> Any:
    """A Celery app configured as the workers' (serializers, codecs), to talk to them over ``broker_url``."""
    import tasks.stages  # noqa: F401 (registers the batch type that active tasks carry as arguments)
    from worker.celeryapp.celery_app import make_app
    from worker.settings import Settings

    return make_app(Settings(broker_url=broker_url))


def active_tasks(broker_url: str, node: str) -> list[dict[str, Any]]:
    """The tasks worker ``node`` (``name@host``) is running right now, as `celery inspect active` reports them."""
    app = control_app(broker_url)
    try:
        replies = app.control.inspect(destination=[node], limit=1, timeout=1.0).active() or {}
    finally:
        app.close()
    return list(replies.get(node, []))


def node_name(name: str) -> str:
    """The node name `celery worker -n NAME@%h` takes on this machine."""
    return f"{name}@{socket.gethostname()}"


def fault_env(broker_url: str, store_url: str, settings: dict[str, str]) -> dict[str, str]:
    """The environment of the commands under test (tests.processes.env_for), with ``settings`` winning."""
    return {**env_for(broker_url, store_url), **settings}


def pong(broker_url: str, node: str) -> bool:
    """Whether worker ``node`` answers a ping (it is connected and consuming)."""
    app = control_app(broker_url)
    try:
        return bool(app.control.ping(destination=[node], timeout=1.0))
    except (OSError, redis.RedisError, KombuError):  # a pooled connection from before a restart: ask again
        return False
    finally:
        app.close()


@contextmanager
def ingest_waiting(env: dict[str, str], folder: Path) -> Iterator[subprocess.Popen[str]]:
    """`feedworker ingest FOLDER --wait --json` in the background; killed if still running when the block ends
    (a failed test must not leave it waiting for a store or broker that is gone)."""
    proc = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(folder), "--wait", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def ingest_summary(ingest: subprocess.Popen[str], timeout: int, after: str) -> tuple[dict[str, int], str]:
    """`ingest --wait`'s summary and stderr once it exits 0; still waiting, a test failure that shows its stderr."""
    try:
        out, err = ingest.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        ingest.kill()
        pytest.fail(f"drops still queued {timeout} s after {after} ({ingest.communicate()[1][-500:]})")
    assert ingest.returncode == 0, err[-2000:]
    summary: dict[str, int] = json.loads(out)
    return summary, err


def check_landed(summary: dict[str, int], records: list[dict[str, Any]], drops: list[dict[str, Any]],
                 ans: Answers, total: int) -> None:
    """What every fault must leave: each of the ``total`` drops counted once, the answers held, nothing half-done."""
    assert len(drops) == total and sum(summary.values()) == total
    assert summary["failed"] == len(ans.refused)
    assert summary["published"] >= len(ans.titles)  # a drop delivered twice still counts as published once
    check_answers(records, ans)
    check_consistent(records, drops)


def redis_pg_images(stack: ExitStack, workdir: Path, delay: float = 0.0) -> tuple[PrivateRedis, str, str]:
    """A private Redis, a fresh PostgreSQL database and an image host, closed with ``stack``: a fault test's start."""
    from tests.conftest import fresh_pg_database

    return (stack.enter_context(private_redis(workdir / "redis")), stack.enter_context(fresh_pg_database()),
            stack.enter_context(image_host(delay)))
