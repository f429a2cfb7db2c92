"""End to end, backlog: a corpus through `feedworker ingest --wait` and real Celery workers on Redis and PostgreSQL.

    .venv/bin/python bench/e2e.py [--count 10000] [--workers 1] [--concurrency 2] [--max-seconds 600]

What it does, all on 127.0.0.1:
1. writes ``--count`` drops with ``python -m tools.corpus --mix clean`` (images on the loopback image host; kept under
   /tmp/feedworker-bench/ for the next run), starts the image host on ``--image-port``;
2. a fresh PostgreSQL database (``feedworker_bench_e2e``) and a Redis database number of its own (claimed as the
   tests claim theirs, flushed before and after);
3. ``--workers`` x `celery -A worker worker -c CONCURRENCY`, waits until they answer a ping;
4. times `feedworker ingest DIR --wait --json` from its start to the last ledger commit (``max(finished_at)``);
5. checks every answer of the corpus (``python -m tools.checkexport``): a fast wrong run is no figure.

Prints files/s, the share of time per stage from the tasks' own timing (the ``feedworker_stage_duration_seconds``
and ``feedworker_store_write_seconds`` histograms, read from prometheus-client's multiprocess files of every
worker and of the ingester), and the CPU seconds each process spent (psutil), which is where the 2 cores went.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from benchlib import (
    BIN,
    ROOT,
    WORK,
    celery_worker,
    claimed_redis_db,
    code_tree,
    conninfo,
    image_host,
    machine,
    make_corpus,
    migrated_env,
    spy,
    stage_seconds,
    stop_process,
    summarize_stacks,
    tree_cpu_seconds,
    wait_for_workers,
)
from hooksink import sinks

MARKS = ("parse_batch", "verify_batch", "publish_batch", "_publish", "submit", "register_drops", "_send",
         "_wait_for_room", "_wait", "normalize", "parse_drop", "load_front_matter", "model_validate", "check_many",
         "_write_items", "_finish_drop", "_lock_items", "apply_drafts", "dumps", "loads")


@dataclass
class Run:
    """One backlog run's figures."""

    files: int
    seconds: float  # ingest start to the last commit
    wall: float  # the ingest command, start to exit
    summary: dict[str, int]
    stages: dict[str, tuple[float, int]]
    cpu: dict[str, float] = field(default_factory=dict)
    answers: str = ""
    correct: bool = False

    @property
    def rate(self) -> float:
        return self.files / self.seconds


def service_cpu(image_port: int) -> dict[tuple[str, int], float]:
    """CPU seconds so far of the shared servers' processes: Redis, PostgreSQL (every backend: other sessions on
    the machine count too), the image host. Keyed by (role, pid): backends come and go."""
    found: dict[tuple[str, int], float] = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        name, cmd = p.info["name"] or "", " ".join(p.info["cmdline"] or [])
        role = ("redis" if name.startswith("redis-server") and ":6379" in cmd
                else "postgres" if name in ("postgres", "postmaster")
                else "image host" if "tools.imagehost" in cmd and f"--port {image_port}" in cmd else None)
        if role and p.info["cpu_times"] is not None:
            found[(role, p.pid)] = p.info["cpu_times"].user + p.info["cpu_times"].system
    return found


def cpu_spent(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
    spent: dict[str, float] = {}
    for (role, pid), seconds in after.items():
        spent[role] = spent.get(role, 0.0) + seconds - before.get((role, pid), 0.0)
    return spent


def last_commit(store_url: str) -> float:
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        row = conn.execute("SELECT max(finished_at) FROM drops").fetchone()
    value: datetime | None = row[0] if row else None
    return value.astimezone(UTC).timestamp() if value else float("nan")


def run_backlog(drops: Path, answers: Path, count: int, workers: int, concurrency: int, image_port: int,
                max_seconds: float, log_dir: Path, check: bool = True, pool: str | None = None,
                profile: bool = False, code: Path | None = None, settings: dict[str, str] | None = None) -> Run:
    """One measured run on a fresh store and broker: the unit that bench/scaleout.py repeats."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=log_dir))
    with claimed_redis_db() as db, image_host(image_port, log_dir / "image-host.log") as _:
        store_url, env = migrated_env(db, "feedworker_bench_e2e", code, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                                      **(settings or {}))
        extra = ["-P", pool] if pool else []
        procs = [celery_worker(env, f"bench{i}-{os.getpid()}", concurrency, log_dir / f"worker{i}.log", extra)
                 for i in range(workers)]
        spies: list[subprocess.Popen[bytes]] = []
        try:
            wait_for_workers(env, workers)
            before = service_cpu(image_port)
            before_workers = sum(tree_cpu_seconds(p.pid) for p in procs)
            started = time.time()
            with open(log_dir / "ingest.err", "wb") as err:
                ingest = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(drops), "--wait", "--json"],
                                          env=env, cwd=log_dir, stdout=subprocess.PIPE, stderr=err)
            spies = ([spy(p.pid, log_dir / f"worker{i}.stacks") for i, p in enumerate(procs)]
                     + [spy(ingest.pid, log_dir / "ingester.stacks")]) if profile else []
            ingest_cpu = 0.0
            deadline = time.monotonic() + max_seconds
            while ingest.poll() is None:
                ingest_cpu = max(ingest_cpu, tree_cpu_seconds(ingest.pid))
                if time.monotonic() > deadline:
                    ingest.kill()
                    raise RuntimeError(f"ingest did not finish in {max_seconds:.0f} s")
                time.sleep(0.1)
            wall = time.time() - started
            out = ingest.stdout.read().decode() if ingest.stdout else ""
            if ingest.returncode != 0:
                raise RuntimeError(f"ingest exited {ingest.returncode}: {(log_dir / 'ingest.err').read_text()[-500:]}")
            summary = json.loads(out.strip().splitlines()[-1])
            cpu = {"workers": sum(tree_cpu_seconds(p.pid) for p in procs) - before_workers,
                   "ingester": ingest_cpu}
            cpu.update(cpu_spent(before, service_cpu(image_port)))
            seconds = last_commit(store_url) - started
        finally:
            for p in procs:
                stop_process(p)
            for s in spies:
                s.wait(30)
        run = Run(count, seconds, wall, summary, stage_seconds(metrics_dir), cpu)
        if check:
            export = log_dir / "records.jsonl"
            subprocess.run([str(BIN / "feedworker"), "export", "--out", str(export)], env=env, check=True,
                           capture_output=True)
            res = subprocess.run([sys.executable, "-m", "tools.checkexport", str(answers), str(export)],
                                 cwd=ROOT, capture_output=True, text=True)
            run.answers, run.correct = res.stdout.strip().splitlines()[-1], res.returncode == 0
        return run


def report(run: Run) -> None:
    print(f"  {run.files:,} files in {run.seconds:.1f} s (start to last commit; the command took {run.wall:.1f} s): "
          f"{run.rate:,.0f} files/s; outcomes {run.summary}")
    busy = sum(s for label, (s, _) in run.stages.items() if not label.startswith("store:"))
    if busy:
        print("  time per stage (the tasks' own timing, summed over worker processes):")
        for label, (seconds, batches) in sorted(run.stages.items()):
            share = f"{100 * seconds / busy:5.1f}%" if not label.startswith("store:") else "      "
            per_file = 1e6 * seconds / run.files
            print(f"    {label:<16} {share} {seconds:7.2f} s in {batches:5d} batches  {per_file:7.0f} us/file")
    else:
        print("  (no stage timings: the workers wrote no feedworker_stage_duration_seconds)")
    total = sum(run.cpu.values())
    print(f"  CPU seconds by process ({total:.1f} s over {run.seconds:.1f} s on {os.cpu_count()} cores):")
    for name, seconds in sorted(run.cpu.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<16} {seconds:7.2f} s  {100 * seconds / total:5.1f}%  "
              f"{1e6 * seconds / run.files:7.0f} us/file")
    if run.answers:
        print(f"  answers: {run.answers}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (`celery worker` commands)")
    ap.add_argument("--concurrency", type=int, default=2, help="-c of each worker")
    ap.add_argument("--pool", default=None, help="-P of each worker (default: Celery's prefork)")
    ap.add_argument("--image-port", type=int, default=18790)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--code", metavar="REV", help="run the tasks and worker packages of this git revision "
                    "(an A/B against older code; the benchmark itself stays this one)")
    ap.add_argument("--repeat", type=int, default=1, help="runs (each on a fresh store); the median counts")
    ap.add_argument("--set", action="append", default=[], metavar="FEEDWORKER_X=V",
                    help="a setting for the ingester and the workers (repeatable)")
    ap.add_argument("--webhooks", type=int, default=0, metavar="N",
                    help="N loopback webhook receivers (bench/hooksink.py): ingestion with webhooks on vs off")
    ap.add_argument("--profile", action="store_true", help="py-spy the workers and the ingester (collapsed stacks "
                    "in the run's log folder) and print the hottest functions")
    ap.add_argument("--naive", type=int, default=0, metavar="N", help="also run the one-process pipeline "
                    "(bench/naive.py) on the first N files, against the same image host, after each run: the ratio")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    drops = WORK / f"e2e-{args.count}-{args.seed}-{args.image_port}"
    make_corpus(drops, args.count, seed=args.seed, mix="clean", image_base=f"http://127.0.0.1:{args.image_port}")
    print(f"machine: {machine()}")
    print(f"code: {args.code or 'the working tree'}; settings: {' '.join(args.set) or 'defaults'}")
    print(f"e2e backlog: {args.count:,} files (--mix clean), {args.workers} worker(s) x -c {args.concurrency}"
          f"{' -P ' + args.pool if args.pool else ''}, Redis + PostgreSQL on loopback")
    runs: list[Run] = []
    naives: list[float] = []
    for n in range(args.repeat):
        log_dir = Path(tempfile.mkdtemp(prefix="e2e-run-", dir=WORK))
        with sinks(args.webhooks) as (endpoints, received):
            settings = dict(kv.split("=", 1) for kv in args.set)
            if args.webhooks:
                settings["FEEDWORKER_WEBHOOKS__ENDPOINTS"] = endpoints
            run = run_backlog(drops, drops.parent / f"{drops.name}.expected.json", args.count, args.workers,
                              args.concurrency, args.image_port, args.max_seconds, log_dir, pool=args.pool,
                              profile=args.profile, code=code_tree(args.code) if args.code else None,
                              settings=settings)
        print(f"run {n + 1}/{args.repeat} (logs in {log_dir}), load average {os.getloadavg()[0]:.2f}:")
        report(run)
        if args.webhooks:
            print(f"  webhooks: {args.webhooks} endpoint(s) had taken {[s.changes for s in received]} changes "
                  "by the end of the run (export and answer check included)")
        if args.profile:
            for stacks in sorted(log_dir.glob("*.stacks")):
                print(f"  profile {stacks.name}:")
                for line in summarize_stacks(stacks, marks=MARKS):
                    print(f"    {line}")
        runs.append(run)
        if args.naive:
            with image_host(args.image_port, log_dir / "image-host-naive.log"):
                res = subprocess.run([sys.executable, str(ROOT / "bench" / "naive.py"), str(drops), "--limit",
                                      str(args.naive)], capture_output=True, text=True, check=True)
            naive = float(res.stdout.split("figure: naive ")[1].split()[0].replace(",", ""))
            naives.append(naive)
            print(f"  {res.stdout.splitlines()[0]}; feedworker / naive: {run.rate / naive:.2f}x")
    correct = all(r.correct for r in runs)
    rates = sorted(r.rate for r in runs)
    cpu = sorted(sum(r.cpu.values()) / r.files * 1e6 for r in runs)
    spread = f" (runs: {', '.join(f'{r:,.0f}' for r in rates)})" if len(runs) > 1 else ""
    verdict = "all answers hold" if correct else "ANSWERS OFF"
    print(f"figure: {statistics.median(rates):,.0f} files/s end to end{spread}, "
          f"{statistics.median(cpu):,.0f} us CPU a file ({args.count:,} files, {verdict})"
          + (f"; naive {statistics.median(naives):,.0f} files/s, ratio "
             f"{statistics.median(r.rate / n for r, n in zip(runs, naives, strict=True)):.2f}x" if naives else ""))
    sys.exit(0 if correct else 1)


if __name__ == "__main__":
    main()
