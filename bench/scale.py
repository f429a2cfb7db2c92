"""Scale: a folder of 1,000,000 small files through `feedworker ingest`, and a worker's memory over 100,000 drops.

    .venv/bin/python bench/scale.py [--files 1000000] [--small 10000] [--worker-files 100000] [--keep]

1. Enqueue path. Writes ``--files`` small drops (a title, a webUrl, a few fields; ~150 bytes) into one flat folder
   (several writer processes; free disk and inodes are checked first, and the count scaled down with a note when
   short), and ``--small`` more into another. Each folder goes through `feedworker ingest DIR` (no --wait) against a
   fresh PostgreSQL ledger and a Redis database of its own, with no worker: a drainer empties the queue as fast as
   the ingester fills it (one LLEN + DEL every 5 ms), standing in for infinitely fast workers, so the ingester's own
   back pressure (hold while 200 batches wait) never engages and what is measured is the enqueue path alone:
   walk, lstat, read, ledger insert, message send. Reported: time from the command's start to the first message
   in the queue, enqueue rate, CPU per file, the ingester's peak RSS (VmHWM), and the per-file cost at N over at
   ``--small`` (flat: <= 1.2).
2. Worker memory. ``--worker-files`` generated drops (images on the loopback host) through `feedworker ingest
   --wait` and one `celery -A worker worker -c 2`; the worker's RSS (main process + pool children) is sampled as
   drops finish. Reported: RSS after the first 10% and at the end, and pool restarts (worker_max_memory_per_child
   would hide a leak by restarting a child, so a restart is reported too).

The files are removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import redis
from benchlib import (
    BIN,
    WORK,
    celery_worker,
    claimed_redis_db,
    conninfo,
    image_host,
    machine,
    make_corpus,
    migrated_env,
    stage_seconds,
    stop_process,
    tree_cpu_seconds,
    wait_for_workers,
)

SMALL_DROP = ('---\ntitle: "Item {i}"\nwebUrl: "https://scale.test/{d}/{i}/"\ntype: article\nquality: {q}\n'
              "published: true\ntopics:\n  - Scale\n---\n")
BYTES_PER_FILE = 4096 + 512  # a block and a directory entry, rounded up


def write_range(args: tuple[Path, int, int]) -> None:
    folder, start, stop_at = args
    for i in range(start, stop_at):
        name = f"{i:07d}_{i:016x}.txt"
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, SMALL_DROP.format(i=i, d=i % 997, q=i % 100).encode())
        os.close(fd)


def write_files(folder: Path, count: int) -> float:
    """``count`` small drops in ``folder`` (written by one process per CPU); return the seconds it took."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    step = 10_000
    jobs = [(folder, s, min(s + step, count)) for s in range(0, count, step)]
    with multiprocessing.Pool(os.cpu_count() or 2) as pool:
        pool.map(write_range, jobs)
    os.sync()  # the kernel's write-back of the new files must not run during the measurement
    return time.monotonic() - started


def affordable(count: int, where: Path) -> tuple[int, str]:
    """How many files fit: 80% of the free space and inodes at most."""
    usage = shutil.disk_usage(where)
    stat = os.statvfs(where)
    by_space = int(usage.free * 0.8 // BYTES_PER_FILE)
    by_inodes = int(stat.f_favail * 0.8) if stat.f_files else count
    fits = min(count, by_space, by_inodes)
    note = "" if fits == count else (f"scaled down from {count:,} to {fits:,} files: {usage.free / 2**30:.1f} GiB and "
                                     f"{stat.f_favail:,} inodes free in {where}")
    return fits, note


class Drainer(threading.Thread):
    """Empties the queue as fast as it fills (LLEN + DEL every 5 ms); notes when the first message arrived."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.first: float | None = None
        self.drained = 0
        self.timeline: list[tuple[float, int]] = []  # (epoch seconds, messages drained so far), about every second
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pipe = self.client.pipeline()
            pipe.llen("feedworker")
            pipe.delete("feedworker")
            waiting, _ = pipe.execute()
            if waiting and self.first is None:
                self.first = time.time()
            self.drained += int(waiting)
            if not self.timeline or time.time() - self.timeline[-1][0] >= 1.0:
                self.timeline.append((time.time(), self.drained))
            time.sleep(0.005)

    def rate_between(self, start: float, end: float) -> float:
        """Messages a second between two shares of the run (0.0 .. 1.0) of the timeline."""
        if len(self.timeline) < 3:
            return float("nan")
        last_index = len(self.timeline) - 1
        first, last = self.timeline[int(start * last_index)], self.timeline[int(end * last_index)]
        return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)


def peak_rss(pid: int) -> int:
    """VmHWM (the peak resident set) of a live process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def enqueue_run(folder: Path, files: int, log_dir: Path) -> dict[str, Any]:
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=log_dir))
    with claimed_redis_db() as db:
        _, env = migrated_env(db, "feedworker_bench_scale", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        drainer = Drainer(env["FEEDWORKER_BROKER_URL"])
        drainer.start()
        started = time.time()
        with open(log_dir / f"ingest-{files}.log", "wb") as out:
            proc = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(folder), "--json"], env=env,
                                    stdout=out, stderr=out)
        rss = cpu = 0.0
        while proc.poll() is None:
            rss, cpu = max(rss, peak_rss(proc.pid)), max(cpu, tree_cpu_seconds(proc.pid))
            time.sleep(0.05)
        wall = time.time() - started
        time.sleep(0.05)
        drainer.done.set()
        drainer.join()
        if proc.returncode != 0:
            raise RuntimeError(f"ingest exited {proc.returncode}: see {log_dir}")
        messages = drainer.drained
    first = (drainer.first - started) if drainer.first else float("nan")
    register = stage_seconds(metrics_dir).get("store:register", (0.0, 0))[0]
    early, late = drainer.rate_between(0.05, 0.25), drainer.rate_between(0.75, 0.95)  # nan: a run of < 3 s
    return {"files": files, "wall": wall, "first": first, "rate": files / wall, "cpu": cpu, "rss": rss,
            "messages": messages, "register": register, "early": early, "late": late}


def worker_memory(count: int, image_port: int, log_dir: Path) -> dict[str, Any]:
    """RSS of one worker (main + pool) as ``count`` drops go through it."""
    corpus = WORK / f"scale-worker-{count}-{image_port}"
    make_corpus(corpus, count, seed=9, mix="clean", image_base=f"http://127.0.0.1:{image_port}")
    samples: list[tuple[int, float, int]] = []  # (finished drops, RSS MiB, pool pids seen)
    with claimed_redis_db() as db, image_host(image_port, log_dir / "image-host.log"):
        store_url, env = migrated_env(db, "feedworker_bench_scale_worker")
        worker = celery_worker(env, f"scale-{os.getpid()}", 2, log_dir / "worker.log")
        children: set[int] = set()
        try:
            wait_for_workers(env, 1)
            with open(log_dir / "ingest-worker.log", "wb") as out:
                ingest = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(corpus), "--wait", "--json"],
                                          env=env, stdout=out, stderr=out)
            import psycopg

            with psycopg.connect(conninfo(store_url), autocommit=True) as conn:
                while ingest.poll() is None:
                    row = conn.execute("SELECT count(*) FROM drops WHERE finished_at IS NOT NULL").fetchone()
                    done = int(row[0]) if row else 0
                    proc = psutil.Process(worker.pid)
                    kids = proc.children()
                    children.update(k.pid for k in kids)
                    rss = sum(p.memory_info().rss for p in [proc, *kids]) / 2**20
                    samples.append((done, rss, len(children)))
                    time.sleep(1.0)
        finally:
            stop_process(worker)
    return {"samples": samples, "pool_processes": len(children)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--worker-files", type=int, default=100_000, help="0: skip the worker memory run")
    ap.add_argument("--image-port", type=int, default=18792)
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--skip-enqueue", action="store_true", help="only the worker memory run")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="scale-", dir=WORK))
    print(f"machine: {machine()}")
    if args.skip_enqueue:
        w = worker_memory(args.worker_files, args.image_port, log_dir)
        print(worker_line(w, args.worker_files))
        return
    count, note = affordable(args.files + args.small, WORK)
    big = max(count - args.small, args.small)
    if note:
        print(f"note: {note}")
    results = []
    try:
        for n in (args.small, big):
            folder = WORK / f"scale-files-{n}"
            if not (folder.is_dir() and sum(1 for _ in os.scandir(folder)) == n):
                shutil.rmtree(folder, ignore_errors=True)
                print(f"writing {n:,} small files into {folder}: {write_files(folder, n):.1f} s")
            r = enqueue_run(folder, n, log_dir)
            results.append(r)
            print(f"  {n:>9,} files: first enqueue {r['first']:.2f} s after start, {r['rate']:,.0f} files/s "
                  f"({r['wall']:.1f} s), {1e6 * r['cpu'] / n:.0f} us CPU a file, ingester peak RSS "
                  f"{r['rss'] / 2**20:.0f} MiB, {r['messages']:,} messages, "
                  f"ledger inserts {1e6 * r['register'] / n:.0f} us a file; batches/s early {r['early']:.0f}, "
                  f"late {r['late']:.0f}")
    finally:
        if not args.keep:
            for n in (args.small, big):
                shutil.rmtree(WORK / f"scale-files-{n}", ignore_errors=True)
    small, large = results
    # per-file cost after the first enqueue (the command's start-up, ~0.6 s of imports, is paid once)
    ratio = ((large["wall"] - large["first"]) / large["files"]) / ((small["wall"] - small["first"]) / small["files"])
    print(f"  per-file time after the first enqueue, at {large['files']:,} / at {small['files']:,}: {ratio:.2f}")
    line = (f"figure: first enqueue {large['first']:.2f} s, {large['rate']:,.0f} files/s enqueued, ingester peak RSS "
            f"{large['rss'] / 2**20:.0f} MiB at {large['files']:,} files, per-file cost ratio {ratio:.2f}")
    if args.worker_files:
        line += "; " + worker_line(worker_memory(args.worker_files, args.image_port, log_dir), args.worker_files)
    print(line)


def worker_line(w: dict[str, Any], count: int) -> str:
    samples = w["samples"]
    early = next((s for s in samples if s[0] >= count // 10), samples[0])
    last = samples[-1]
    peak = max(s[1] for s in samples)
    print(f"  worker (main + pool) RSS: {early[1]:.0f} MiB after {early[0]:,} drops, {last[1]:.0f} MiB after "
          f"{last[0]:,}, peak {peak:.0f} MiB; pool processes seen: {w['pool_processes']} (2 = no restart)")
    return f"worker RSS {early[1]:.0f} -> {last[1]:.0f} MiB from {early[0]:,} to {last[0]:,} drops"


if __name__ == "__main__":
    main()
