"""Starting the real commands (celery workers, feedworker subcommands) as a user would, for end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tools.procs import stop_process

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback port nobody listens on now: for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(broker_url: str, store_url: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")}
    env.update(FEEDWORKER_BROKER_URL=broker_url, FEEDWORKER_STORE_URL=store_url,
               FEEDWORKER_IMAGES__ALLOW_NETWORKS='["127.0.0.1/32"]', FEEDWORKER_IMAGES__ALLOW_PORTS='["1-65535"]',
               FEEDWORKER_LOG_LEVEL="WARNING",
               FEEDWORKER_IMAGES__TIMEOUT_SECONDS="3", PATH=f"{BIN}:{env.get('PATH', '')}", **more)
    return env


@contextmanager
def celery_worker(env: dict[str, str], cwd: Path, name: str = "w1", concurrency: int = 2,
                  log: Path | None = None, app: str = "worker",
                  args: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A worker worker`, as Celery users start one (``app``: another module, e.g. a test's app with a
    fault hook; ``args``: more options, e.g. a pool and queues); stopped with a warm shutdown."""
    out = open(log or cwd / f"{name}.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(BIN / "celery"), "-A", app, "worker", "-c", str(concurrency), "-n", f"{name}@%h",
         "--loglevel=WARNING", *args], env=env, cwd=Path(__file__).parent.parent, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        stop_process(proc, 20)
        out.close()


def wait_started(proc: subprocess.Popen[Any], up: Callable[[], bool], log: Path, tail: int = 3000) -> None:
    """Until ``up()`` holds, for 30 s; a process that exited first fails the test with the end of its ``log``."""
    wait_for(lambda: proc.poll() is not None or up(), 30)
    assert proc.poll() is None, log.read_text()[-tail:]


def watch_process(env: dict[str, str], folder: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`feedworker watch FOLDER` started as a user would, its output appended to ``log`` (None: discarded).
    The caller stops it (SIGTERM, or a kill when the test is about that)."""
    if log is None:
        return subprocess.Popen([str(BIN / "feedworker"), "watch", str(folder)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([str(BIN / "feedworker"), "watch", str(folder)], env=env, stdout=out, stderr=out)


def feedworker(env: dict[str, str], *args: str, timeout: float = 120, check: bool = True,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(BIN / "feedworker"), *args], env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=cwd)
    if check and res.returncode != 0:
        raise AssertionError(f"feedworker {' '.join(args)} exited {res.returncode}: {res.stderr[-2000:]}")
    return res


def export(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in feedworker(env, "export").stdout.splitlines() if line.strip()]


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")


def autogroups_on() -> bool:
    """Does this kernel share the CPU between sessions first (autogroups, worker/running/children.py)?"""
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return Path("/proc/self/autogroup").exists() and enabled.exists() and enabled.read_text().strip() == "1"


def group_nice(text: str) -> int:
    """The niceness in a /proc/PID/autogroup line ("/autogroup-85 nice 0")."""
    return int(text.split()[-1])
