"""Scale out: the e2e backlog with 1, 2 and 4 worker processes, each a `celery -A worker worker -c 1` of its own.

    .venv/bin/python bench/scaleout.py [--count 10000] [--workers 1,2,4] [--repeat 1]

Every run is bench/e2e.py's: a fresh PostgreSQL database, a Redis database of its own, the loopback image host,
`feedworker ingest --wait`, all answers checked. Separate worker commands share only Redis, PostgreSQL and (for
the drops' bytes) nothing at all: the bytes travel in the messages. So does a worker on another machine; this
machine has 2 cores, so past 2 processes the figures show contention, not the scaling across machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import WORK, machine, make_corpus
from e2e import run_backlog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--workers", default="1,2,4", help="worker commands per run, comma separated")
    ap.add_argument("--concurrency", type=int, default=1, help="-c of each worker command")
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting; the median counts")
    ap.add_argument("--image-port", type=int, default=18790)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    args = ap.parse_args()

    drops = WORK / f"e2e-{args.count}-7-{args.image_port}"
    make_corpus(drops, args.count, seed=7, mix="clean", image_base=f"http://127.0.0.1:{args.image_port}")
    answers = drops.parent / f"{drops.name}.expected.json"
    print(f"machine: {machine()}")
    print(f"scale out: {args.count:,} files (--mix clean) through N x `celery -A worker worker -c {args.concurrency}`")
    figures: list[str] = []
    correct = True
    base = None
    for n in (int(x) for x in args.workers.split(",")):
        rates, cpus = [], []
        for _ in range(args.repeat):
            log_dir = Path(tempfile.mkdtemp(prefix=f"scaleout-{n}-", dir=WORK))
            run = run_backlog(drops, answers, args.count, n, args.concurrency, args.image_port, args.max_seconds,
                              log_dir)
            correct &= run.correct
            rates.append(run.rate)
            cpus.append(1e6 * sum(run.cpu.values()) / run.files)
        rate = statistics.median(rates)
        base = base or rate
        print(f"  {n} worker process(es): {rate:,.0f} files/s ({rate / base:.2f}x one), "
              f"{statistics.median(cpus):,.0f} us CPU a file, answers {'hold' if run.correct else 'OFF'}")
        figures.append(f"{n}: {rate:,.0f}")
    print(f"figure: files/s by worker processes {', '.join(figures)}{'' if correct else ' (ANSWERS OFF)'}")
    sys.exit(0 if correct else 1)


if __name__ == "__main__":
    main()
