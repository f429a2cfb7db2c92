"""What the benchmarks share: the machine's description, corpora, the loopback image host, fresh stores, workers.

Everything here talks to 127.0.0.1 only: Redis at 6379 and PostgreSQL at 5432 (user postgres, trust auth), as the
tests use them, and the repository's image host (``python -m tools.imagehost``) on a free loopback port.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a bench runs as `python bench/x.py`: the repository's tools/ must import
    sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WORK = Path("/tmp/feedworker-bench")  # corpora (written once, reused) and each run's logs

from tools.procs import stop_process as stop_process  # noqa: E402 (tools/ imports from here on; for the scripts too)


def machine() -> str:
    """One line: CPU model, cores, memory, Python, and the load average (the figures are only as quiet as it)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        mem = "? RAM"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, {mem}, Python {platform.python_version()}, "
            f"load average {load}")


def make_corpus(out: Path, count: int, *, seed: int = 7, mix: str = "clean",
                image_base: str = "http://127.0.0.1:8765") -> dict[str, Any]:
    """Write ``count`` drops with :func:`tools.corpus.generate` (unless ``out`` already holds them); return its
    answers."""
    from tools.corpus import answers_path, generate

    answers = answers_path(out)
    if not (answers.is_file() and out.is_dir() and sum(1 for _ in os.scandir(out)) == count):
        return generate(out, count, seed=seed, image_base=image_base, mix=mix)
    result: dict[str, Any] = json.loads(answers.read_text(encoding="utf-8"))
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def image_host(port: int, log: Path | None = None, *more: str) -> Iterator[str]:
    """The loopback image host (``python -m tools.imagehost``) on ``port``, with ``more`` of its options (e.g.
    ``--latency-ms``); yields its base URL."""
    out: IO[bytes] | int = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(image_host_argv(port, *more), cwd=ROOT, stdout=out, stderr=out)
    hosts = more[more.index("--host") + 1].split(",") if "--host" in more else ["127.0.0.1"]
    base = f"http://{hosts[0]}:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{base}/__stats", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the image host did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        stop_process(proc)
        if not isinstance(out, int):
            out.close()


def image_host_argv(port: int, *more: str) -> list[str]:
    return [sys.executable, "-m", "tools.imagehost", "--port", str(port), *more]


def fresh_database(name: str) -> str:
    """Drop and create a PostgreSQL database; return its SQLAlchemy URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    """Drop a PostgreSQL database a benchmark made for itself."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def conninfo(store_url: str) -> str:
    """psycopg's form of a SQLAlchemy ``postgresql+psycopg://`` URL: a benchmark reads the store without SQLAlchemy."""
    return store_url.replace("postgresql+psycopg://", "postgresql://", 1)


def migrated_env(db: int, database: str, code: Path | None = None, **more: str) -> tuple[str, dict[str, str]]:
    """A fresh, migrated PostgreSQL ``database`` and the environment on it and Redis ``db`` (:func:`bench_env`)."""
    store_url = fresh_database(database)
    env = bench_env(f"redis://127.0.0.1:6379/{db}", store_url, code, **more)
    subprocess.run([str(BIN / "feedworker"), "migrate"], env=env, check=True, capture_output=True)
    return store_url, env


def fresh_redis(db: int) -> str:
    """Flush one Redis database number; return its URL."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:6379/{db}"


def code_tree(rev: str) -> Path:
    """The ``tasks`` and ``worker`` packages as of git revision ``rev``, in a folder of their own: run the same
    benchmark on older code (an A/B on one machine, minutes apart) with ``bench_env(code=...)``."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    out = WORK / f"code-{commit}"
    if not (out / "worker").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "tasks", "worker"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def bench_env(broker_url: str, store_url: str, code: Path | None = None, **more: str) -> dict[str, str]:
    """The environment of the commands a benchmark starts: no stray FEEDWORKER_* from the caller; ``code``: a
    folder whose ``tasks`` and ``worker`` packages replace the working tree's (see :func:`code_tree`).

    Bytecode is cached (no ``PYTHONDONTWRITEBYTECODE``), as in any installed copy (pip and the Dockerfile compile
    it): otherwise every command would compile feedworker's modules again as it starts, ~0.5 s of the ingester's
    CPU in a 3,000-file run, a cost no deployment pays."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FEEDWORKER_", "PROMETHEUS_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"FEEDWORKER_BROKER_URL": broker_url, "FEEDWORKER_STORE_URL": store_url,
                "FEEDWORKER_IMAGES__ALLOW_NETWORKS": '["127.0.0.1/32"]',
                "FEEDWORKER_IMAGES__ALLOW_PORTS": '["1-65535"]',
                "FEEDWORKER_LOG_LEVEL": "WARNING", "PATH": f"{BIN}:{env.get('PATH', '')}", **more})
    if code is not None:
        env["PYTHONPATH"] = str(code)
        env["FEEDWORKER_BENCH_CODE"] = str(code)  # read back by celery_worker: the worker's folder
    return env


def celery_worker(env: dict[str, str], name: str, concurrency: int, log: Path,
                  extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`celery -A worker worker`, as a Celery user starts one (stop it with :func:`stop`). It runs in the code's
    folder: Celery puts its working folder first on the import path."""
    out = open(log, "ab")  # noqa: SIM115 (the child holds it; closed when this process exits)
    cwd = Path(env.get("FEEDWORKER_BENCH_CODE", ROOT))
    return subprocess.Popen([str(BIN / "celery"), "-A", "worker", "worker", "-c", str(concurrency),
                             "-n", f"{name}@%h", "--loglevel=WARNING", *extra],
                            env=env, cwd=cwd, stdout=out, stderr=out)


def feedworker_run(env: dict[str, str], folder: Path, log_dir: Path,
                   concurrency: int | None = None) -> subprocess.Popen[bytes]:
    """`feedworker run FOLDER` as a user starts it, in ``log_dir`` (output: run.log); stop it with :func:`stop`."""
    argv = [str(BIN / "feedworker"), "run", str(folder)] + (["-c", str(concurrency)] if concurrency else [])
    with open(log_dir / "run.log", "ab") as out:
        return subprocess.Popen(argv, env=env, cwd=log_dir, stdout=out, stderr=out)


def run_roles(env: dict[str, str]) -> int:
    """How many worker commands `feedworker run` starts with ``env``: the general one, and live and verify unless 0."""
    return 1 + (env.get("FEEDWORKER_LIVE_CONCURRENCY") != "0") + (env.get("FEEDWORKER_VERIFY_CONCURRENCY") != "0")


def wait_for_workers(env: dict[str, str], count: int, timeout: float = 30.0) -> None:
    """Until ``count`` workers answer a ping through the broker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run([str(BIN / "celery"), "-A", "worker", "inspect", "ping", "--json", "-t", "1"],
                             env=env, cwd=env.get("FEEDWORKER_BENCH_CODE", ROOT), capture_output=True, text=True)
        try:
            if len(json.loads(res.stdout.strip().splitlines()[-1])) >= count:
                return
        except (ValueError, IndexError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{count} worker(s) did not answer in {timeout:.0f} s")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (psutil)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


ACCEPT_DBS = (9, 10, 13)  # flushed without a claim by the acceptance checks run on this machine: never ours


@contextmanager
def claimed_redis_db() -> Iterator[int]:
    """A Redis database number no concurrent test run or benchmark holds (the tests' SET NX claim on db 0),
    flushed before and after."""
    import secrets

    import redis

    admin = redis.Redis(host="127.0.0.1", port=6379, db=0)
    token = secrets.token_hex(8)
    for db in range(15, 1, -1):  # from the top: the tests claim from 2 upwards
        if db not in ACCEPT_DBS and admin.set(f"feedworker-test-claim:{db}", token, nx=True, ex=7200):
            break
    else:
        raise RuntimeError("no free Redis database (all of 2..15 claimed)")
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    try:
        yield db
    finally:
        client.flushdb()
        client.close()
        if admin.get(f"feedworker-test-claim:{db}") == token.encode():
            admin.delete(f"feedworker-test-claim:{db}")
        admin.close()


def stage_seconds(metrics_dir: Path) -> dict[str, tuple[float, int]]:
    """Seconds and batches per stage (``feedworker_stage_duration_seconds``) and per store write
    (``feedworker_store_write_seconds``, as ``store:<operation>``), summed over every process that wrote to
    ``metrics_dir`` (prometheus-client's multiprocess files): the tasks' own timing."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for family in registry.collect():
        prefix = {"feedworker_stage_duration_seconds": "", "feedworker_store_write_seconds": "store:"}.get(family.name)
        if prefix is None:
            continue
        for sample in family.samples:
            label = prefix + (sample.labels.get("stage") or sample.labels.get("operation") or "?")
            if sample.name.endswith("_sum"):
                sums[label] = sums.get(label, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[label] = counts.get(label, 0) + int(sample.value)
    return {label: (sums[label], counts.get(label, 0)) for label in sums}


def spy(pid: int, out: Path, idle: bool = False) -> subprocess.Popen[bytes]:
    """py-spy sampling a process and its children into collapsed stacks (``--format raw``) until it exits."""
    args = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--nolineno",
            "--nonblocking", "--rate", "200", "-o", str(out), *(["--idle"] if idle else [])]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_stacks(path: Path, top: int = 25, marks: Sequence[str] = ()) -> list[str]:
    """The functions with the most samples in a collapsed-stack file: self time, and inclusive time of ``marks``
    (function names, e.g. ``parse_batch``) so a stage's share can be read off."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = dict.fromkeys(marks, 0)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        self_time[leaf] = self_time.get(leaf, 0) + count
        names = {f.split(" (")[0] for f in frames}
        names |= {name.rpartition(".")[2] for name in names}  # "Store._publish" answers to "_publish" too
        for mark in marks:
            if mark in names:
                inclusive[mark] += count
    lines = [f"{total} samples"]
    for mark, n in inclusive.items():
        lines.append(f"  incl {100 * n / max(total, 1):5.1f}%  {mark}")
    for leaf, n in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  self {100 * n / max(total, 1):5.1f}%  {leaf}")
    return lines
