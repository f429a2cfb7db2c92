"""End to end, live: drops at a steady rate into `feedworker run`, drop-to-record latency p50 / p99.

    .venv/bin/python bench/live.py [--rate 50] [--seconds 20] [--images both|cold|warm]

All on 127.0.0.1: the loopback image host, a Redis database number of its own (claimed, flushed), a fresh
PostgreSQL database, and `feedworker run DROP_DIR` as a user starts it (watcher + supervised Celery worker).
Files from ``python -m tools.corpus --mix clean`` go into the watched folder by atomic rename (written as a dot-file,
renamed), one every 1/RATE s on a fixed schedule (no drift), for ``--seconds``.

Latency of a drop = the moment its record was written (the record's ``updated_at`` as that commit set it; the
ledger's ``finished_at`` of the drop, same transaction, same stamp) - the moment of its rename, for every drop
that published its record (a later duplicate that changes nothing has no record write of its own).
- ``cold``: every image URL is new: the record waits for its image checks (HTTP against the image host);
- ``warm``: the same drops' image outcomes are in the image cache already (checked before the run): the
  pipeline's own latency, beyond the image checks';
- the image checks' own latency: the verify stage's duration (``feedworker_stage_duration_seconds``, the tasks'
  own timing) in the cold run, which live is one batch of a drop or two.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    WORK,
    claimed_redis_db,
    conninfo,
    feedworker_run,
    image_host,
    machine,
    make_corpus,
    migrated_env,
    percentile,
    stop_process,
    wait_for_workers,
)


def drop_steadily(files: list[Path], folder: Path, rate: float) -> dict[str, float]:
    """Rename each file into ``folder`` on a fixed schedule; return name -> epoch seconds of its rename."""
    dropped: dict[str, float] = {}
    start = time.monotonic()
    for i, src in enumerate(files):
        due = start + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        tmp = folder / f".{src.name}.part"
        tmp.write_bytes(src.read_bytes())
        os.rename(tmp, folder / src.name)
        dropped[src.name] = time.time()
    return dropped


def record_times(store_url: str) -> dict[str, float]:
    """Drop name -> the moment its record was written (the record's updated_at as that commit set it, which is
    also the drop's finished_at in the ledger: one transaction, one stamp), for the drops that wrote their record
    (published). A later drop may have updated the record since; its own write is what counts here."""
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        rows = conn.execute("SELECT name, finished_at FROM drops WHERE state = 'published'").fetchall()
    return {name: at.astimezone(UTC).timestamp() for name, at in rows}


def outcomes(store_url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(conninfo(store_url)) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM drops GROUP BY state").fetchall())


def verify_times(metrics_dir: Path) -> tuple[float, int, list[tuple[float, float]]]:
    """The verify stage's total seconds, batch count, and cumulative histogram (upper bound, share)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    total, count = 0.0, 0
    buckets: dict[float, float] = {}
    for family in registry.collect():
        if family.name != "feedworker_stage_duration_seconds":
            continue
        for s in family.samples:
            if s.labels.get("stage") != "verify":
                continue
            if s.name.endswith("_sum"):
                total += s.value
            elif s.name.endswith("_count"):
                count += int(s.value)
            elif s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    cumulative = [(le, n / count) for le, n in sorted(buckets.items())] if count else []
    return total, count, cumulative


def bucket_quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """The smallest histogram bound holding a share >= q (an upper bound on that quantile)."""
    return next((le for le, share in cumulative if share >= q), float("inf"))


def warm_cache(files: list[Path], env: dict[str, str]) -> int:
    """Check every image URL of these drops once, through the worker's own checker and cache."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tasks.limits import ParseLimits\n"
        "from tasks.parse.parsing import parse_drop\n"
        "from tasks.link.records import image_urls, normalize\n"
        "from tasks.shapes import Drop\n"
        "from worker.celeryapp.resources import make_checker\n"
        "urls = set()\n"
        "for p in map(Path, sys.argv[1:]):\n"
        "    drop = Drop(key='k', name=p.name, path=str(p), size=1, mtime_ns=1)\n"
        "    n = normalize(parse_drop(p.name, p.read_bytes(), ParseLimits()), drop)\n"
        "    urls.update(image_urls(n))\n"
        "checker = make_checker()\n"
        "checker.check_many(sorted(urls))\n"
        "checker.close()\n"
        "print(len(urls))\n")
    res = subprocess.run([sys.executable, "-c", script, *map(str, files)], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return int(res.stdout.strip().splitlines()[-1])


def live_run(files: list[Path], rate: float, warm: bool, image_port: int, log_dir: Path,
             concurrency: int | None) -> dict[str, Any]:
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=log_dir))
    folder = log_dir / "drops"
    folder.mkdir()
    with claimed_redis_db() as db, image_host(image_port, log_dir / "image-host.log"):
        store_url, env = migrated_env(db, "feedworker_bench_live", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        warmed = warm_cache(files, env) if warm else 0
        run = feedworker_run(env, folder, log_dir, concurrency)
        try:
            wait_for_workers(env, 1, timeout=60)
            time.sleep(1.0)  # the watcher's start scan is done
            dropped = drop_steadily(files, folder, rate)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = outcomes(store_url)
                if sum(done.get(s, 0) for s in ("published", "unchanged", "failed")) >= len(files):
                    break
                time.sleep(0.5)
        finally:
            stop_process(run, timeout=30)
        records = record_times(store_url)
        latencies = [records[name] - at for name, at in dropped.items() if name in records]
        verify = verify_times(metrics_dir)
        return {"dropped": len(dropped), "latencies": latencies, "outcomes": outcomes(store_url),
                "warmed": warmed, "verify": verify}


def report(label: str, result: dict[str, Any]) -> tuple[float, float]:
    lat = result["latencies"]
    p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
    print(f"  {label}: {len(lat)} records from {result['dropped']} drops (outcomes {result['outcomes']}"
          f"{', ' + str(result['warmed']) + ' image URLs checked before' if result['warmed'] else ''}): "
          f"drop-to-record p50 {p50:.0f} ms, p90 {percentile(lat, 0.9) * 1000:.0f} ms, p99 {p99:.0f} ms, "
          f"max {max(lat, default=0) * 1000:.0f} ms")
    total, count, cumulative = result["verify"]
    if count:
        print(f"    image checks (verify stage, {count} batches): mean {1000 * total / count:.0f} ms, "
              f"p50 <= {1000 * bucket_quantile(cumulative, 0.5):.0f} ms, "
              f"p99 <= {1000 * bucket_quantile(cumulative, 0.99):.0f} ms (histogram bounds)")
    return p50, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="drops per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to drop")
    ap.add_argument("--images", choices=["both", "cold", "warm"], default="both")
    ap.add_argument("--concurrency", "-c", type=int, default=None, help="`feedworker run -c` (default: its own)")
    ap.add_argument("--image-port", type=int, default=18791)
    args = ap.parse_args()

    count = int(args.rate * args.seconds)
    corpus = WORK / f"live-{count}-{args.image_port}"
    make_corpus(corpus, count, seed=5, mix="clean", image_base=f"http://127.0.0.1:{args.image_port}")
    files = sorted(corpus.iterdir())
    print(f"machine: {machine()}")
    print(f"live: {count} drops at {args.rate:g}/s into `feedworker run` (Redis + PostgreSQL on loopback)")
    figures = {}
    for mode in (["cold", "warm"] if args.images == "both" else [args.images]):
        log_dir = Path(tempfile.mkdtemp(prefix=f"live-{mode}-", dir=WORK))
        result = live_run(files, args.rate, mode == "warm", args.image_port, log_dir, args.concurrency)
        figures[mode] = report(f"{mode} images (logs in {log_dir})", result)
        shutil.rmtree(log_dir / "drops", ignore_errors=True)
    print("figure: " + "; ".join(f"{mode} images p50 {p50:.0f} ms, p99 {p99:.0f} ms"
                                 for mode, (p50, p99) in figures.items()))


if __name__ == "__main__":
    main()
