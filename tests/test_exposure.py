"""What `feedworker run` exposes, checked on a real run: its state and store private to its user, the broker's
password never in argv, metrics and health on loopback only, Flower read-only.

Drops keep their own mode when they are put away: the service never widens or narrows a producer's file.
"""

from __future__ import annotations

import base64
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.processes import free_port, wait_for
from tests.test_run import feedworker_run, leftovers, stop, user_env
from worker.observing.metricserver import serve
from worker.settings import Settings

pytestmark = pytest.mark.slow

DROP = "---\ntitle: Private\nwebUrl: https://news.test/{n}\n---\n"


def modes(root: Path) -> dict[str, int]:
    """Each entry under ``root`` (``root`` too) -> its permission bits."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* spell them) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def post(url: str, auth: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b'{"args": ["x"]}', method="POST",
                                     headers={"Content-Type": "application/json"})
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError:  # not listening yet
        return 0, ""


def test_a_run_keeps_its_state_private_and_exposes_nothing_beyond_loopback(tmp_path: Path) -> None:
    state, drops = tmp_path / ".feedworker", tmp_path / "drops"
    state.mkdir(mode=0o755)  # what an older version left behind: tightened at start
    (state / "old.log").write_text("from before\n")
    os.chmod(state / "old.log", 0o644)
    drops.mkdir()
    metrics_port, flower_port = free_port(), free_port()
    env = user_env(FEEDWORKER_METRICS_PORT=str(metrics_port), FLOWER_PORT=str(flower_port))
    with feedworker_run(tmp_path, env, "-c", "1", "--flower") as run:
        for n, mode in enumerate((0o644, 0o640, 0o604)):
            part = drops / f".{n}.part"
            part.write_text(DROP.format(n=n))
            os.chmod(part, mode)
            os.rename(part, drops / f"{n}.txt")
        wait_for(lambda: not leftovers(drops), 30)

        url = (state / "broker.url").read_text().strip()
        password = redis.Redis.from_url(url).connection_pool.connection_kwargs["password"]
        broker_pid = redis.Redis.from_url(url).info("server")["process_id"]
        assert password.encode() not in Path(f"/proc/{broker_pid}/cmdline").read_bytes()
        assert b"valkey-server" in Path(f"/proc/{broker_pid}/cmdline").read_bytes()

        wait_for(lambda: listening_addresses(metrics_port), 30)
        assert listening_addresses(metrics_port) == {"0100007F"}  # 127.0.0.1, and nothing else

        auth = (state / "flower.auth").read_text().strip()
        base = f"http://127.0.0.1:{flower_port}"
        wait_for(lambda: post(f"{base}/api/task/async-apply/feedworker.publish", auth)[0] != 0, 30)
        code, body = post(f"{base}/api/task/async-apply/feedworker.publish", auth)
        assert code == 403 and "Read only" in body
        assert post(f"{base}/api/worker/shutdown/feedworker", auth)[0] == 403
        stop(run, tmp_path)

    found = modes(state)
    assert {"valkey.log", "flower.auth", "run.lock", "old.log"} <= set(found)
    assert any(name.startswith("appendonlydir/") for name in found), found  # the broker's append-only file
    assert {name: mode for name, mode in found.items() if mode & 0o077} == {}, found
    for name in ("feedworker.db", "feedworker.db-wal", "feedworker.db-shm"):
        path = tmp_path / name
        if path.exists() or name == "feedworker.db":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    kept = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (drops / "processed").glob("*/*")}
    assert kept == {"0.txt": 0o644, "1.txt": 0o640, "2.txt": 0o604}


def test_metrics_listen_on_loopback_unless_configured(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(broker_url=redis_url, store_url=f"sqlite:///{tmp_path / 's.db'}")
    server = serve(0, settings=settings)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert listening_addresses(server.port) == {"0100007F"}
    finally:
        server.stop()
    server = serve(0, settings=settings.model_copy(update={"metrics_host": "0.0.0.0"}))
    try:
        assert listening_addresses(server.port) == {"00000000"}
    finally:
        server.stop()
