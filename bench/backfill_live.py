"""Live drops beside a backfill: `feedworker run` busy with a large backlog sent by `feedworker ingest`, while
drops arrive in the watched folder at a steady rate. Live drop-to-record latency p50 / p99, and how far the
backfill got meanwhile.

    .venv/bin/python bench/backfill_live.py [--backfill 20000] [--rate 50] [--seconds 10] [--set FEEDWORKER_X=V]

All on 127.0.0.1: the loopback image host, a Redis database number of its own, a fresh PostgreSQL database.
1. `feedworker run DROP_DIR` as shipped (its three worker roles: worker/running/roles.py);
2. `feedworker ingest BACKFILL` (plain, no ``--wait``): ``--backfill`` clean drops queued at once;
3. once the workers are busy with it, ``--rate`` drops a second for ``--seconds`` renamed into the watched folder
   (bench/live.py's schedule: no drift);
4. latency of a live drop = its record's commit - its rename (bench/live.py ``record_times``); the backfill's
   progress = its drops finished between the first live drop and the last live record.

``--set FEEDWORKER_LIVE_CONCURRENCY=0`` shows the same run without a live lane's worker (the general worker then
serves the live queue beside the backfill's).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import time

from benchlib import (
    BIN,
    WORK,
    claimed_redis_db,
    conninfo,
    feedworker_run,
    image_host,
    machine,
    make_corpus,
    migrated_env,
    percentile,
    run_roles,
    stop_process,
    wait_for_workers,
)
from live import drop_steadily, record_times


def finished_between(store_url: str, names: set[str], start: float, end: float) -> int:
    """Drops of ``names`` whose outcome committed between ``start`` and ``end`` (epoch seconds)."""
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        rows = conn.execute("SELECT name, finished_at FROM drops WHERE finished_at IS NOT NULL").fetchall()
    return sum(1 for name, at in rows if name in names and start <= at.timestamp() <= end)


def finished_names(store_url: str) -> set[str]:
    """Drops with an outcome (published, unchanged or failed)."""
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM drops WHERE finished_at IS NOT NULL")}


def queued_times(store_url: str) -> dict[str, float]:
    """Drop name -> when the watcher registered it as queued (its message is sent right after)."""
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        rows = conn.execute("SELECT name, queued_at FROM drops WHERE queued_at IS NOT NULL").fetchall()
    return {name: at.timestamp() for name, at in rows}


HOPS = ("queued", "parse", "verify", "publish", "record")


def hop_times(store_url: str, names: set[str], queued: dict[str, float],
              records: dict[str, float]) -> dict[str, list[float]]:
    """For the drops of ``names`` that wrote a record: seconds between the moments their batch reached each stage
    (the delivery count's first stamp, tasks/store/deliveries.py), from ``queued`` to the record's commit
    (``records``), by hop."""
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        drops = {key: (queued[name], records[name]) for key, name in conn.execute("SELECT key, name FROM drops")
                 if name in names and name in queued and name in records}
        stages: dict[str, dict[str, float]] = {}
        batch_of: dict[str, str] = {}
        for batch, stage, first, keys in conn.execute(
                "SELECT batch_id, stage, first_at, drop_keys FROM deliveries"):
            stages.setdefault(batch, {})[stage] = first.timestamp()
            for key in (keys or "").split() if stage == "parse" else ():
                batch_of[key] = batch
    out: dict[str, list[float]] = {f"{a} -> {b}": [] for a, b in itertools.pairwise(HOPS)}
    for key, (queued_at, recorded_at) in drops.items():
        at = stages.get(batch_of.get(key, ""), {})
        times = [queued_at, at.get("parse"), at.get("verify"), at.get("publish"), recorded_at]
        for (a, b), (t0, t1) in zip(itertools.pairwise(HOPS), itertools.pairwise(times), strict=True):
            if t0 is not None and t1 is not None:
                out[f"{a} -> {b}"].append(t1 - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backfill", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=50.0, help="live drops per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to drop")
    ap.add_argument("--image-port", type=int, default=18793)
    ap.add_argument("--set", action="append", default=[], metavar="FEEDWORKER_X=V", help="a setting for `run`")
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.image_port}"
    backfill = WORK / f"clean-{args.backfill}-p{args.image_port}"
    make_corpus(backfill, args.backfill, image_base=base)
    count = int(args.rate * args.seconds)
    live_corpus = WORK / f"live-{count}-s11-p{args.image_port}"
    make_corpus(live_corpus, count, seed=11, image_base=base)
    files = sorted(live_corpus.iterdir())
    log_dir = WORK / f"backfill-live-{os.getpid()}"
    shutil.rmtree(log_dir, ignore_errors=True)
    (log_dir / "drops").mkdir(parents=True)
    print(f"machine: {machine()}")
    print(f"{count} live drops at {args.rate:g}/s into `feedworker run` while it works through a "
          f"{args.backfill:,}-file backfill sent by `feedworker ingest` (Redis + PostgreSQL on loopback)")
    with claimed_redis_db() as db, image_host(args.image_port, log_dir / "image-host.log"):
        store_url, env = migrated_env(db, "feedworker_bench_backfill_live", None, **{
            "FEEDWORKER_STATE_DIR": str(log_dir / "state"), **dict(s.split("=", 1) for s in args.set)})
        run = feedworker_run(env, log_dir / "drops", log_dir)
        try:
            wait_for_workers(env, run_roles(env), timeout=60)
            time.sleep(1.0)  # the watcher's first scan (of an empty folder) is done: what comes now is live
            sent = time.monotonic()
            subprocess.run([str(BIN / "feedworker"), "ingest", str(backfill)], env=env, check=True,
                           capture_output=True)
            print(f"backfill queued in {time.monotonic() - sent:.1f} s")
            time.sleep(2.0)  # the workers are into it
            first = time.time()
            dropped = drop_steadily(files, log_dir / "drops", args.rate)
            deadline = time.monotonic() + 120
            # every live drop has an outcome (a refused or duplicate drop writes no record of its own)
            while time.monotonic() < deadline and len(finished_names(store_url) & set(dropped)) < len(dropped):
                time.sleep(0.5)
        finally:
            stop_process(run, timeout=90)
        records, queued = record_times(store_url), queued_times(store_url)
        latencies = [records[name] - at for name, at in dropped.items() if name in records]
        watcher = [queued[name] - at for name, at in dropped.items() if name in records and name in queued]
        workers = [records[name] - queued[name] for name in dropped if name in records and name in queued]
        last = max((records[n] for n in dropped if n in records), default=time.time())
        progress = finished_between(store_url, {p.name for p in backfill.iterdir()}, first, last)
        hops = hop_times(store_url, set(dropped), queued, records)
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(f"live: {len(latencies)} of {len(dropped)} drops wrote a record (the rest: duplicates, refusals): "
          f"drop-to-record p50 {p50:.0f} ms, "
          f"p90 {percentile(latencies, 0.9) * 1000:.0f} ms, p99 {p99:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print("  of which: watcher (rename to queued) p50 {:.0f} ms, p99 {:.0f} ms; workers (queued to record) "
          "p50 {:.0f} ms, p99 {:.0f} ms".format(*(1000 * percentile(x, q) for x in (watcher, workers)
                                                  for q in (0.5, 0.99))))
    print("  by hop (a stage's start is its delivery count's stamp): " + "; ".join(
        f"{hop} p50 {1000 * percentile(x, 0.5):.0f} ms, p99 {1000 * percentile(x, 0.99):.0f} ms"
        for hop, x in hops.items()))
    print(f"backfill meanwhile: {progress:,} drops finished in {last - first:.1f} s "
          f"({progress / max(last - first, 1e-9):,.0f} files/s)")
    print(f"figure: live beside a {args.backfill:,}-file backfill: p50 {p50:.0f} ms, p99 {p99:.0f} ms; "
          f"backfill {progress / max(last - first, 1e-9):,.0f} files/s meanwhile")


if __name__ == "__main__":
    main()
