"""Image hosts far away: a backlog through `feedworker run` (as shipped) and `feedworker ingest --wait`, with every
image URL on one of ``--hosts`` loopback hosts that answer like far ones.

    .venv/bin/python bench/remote.py [--count 3000] [--hosts 16] [--latency-ms 40] [--naive 100] [--repeat 3]

All on 127.0.0.x (loopback):
1. a clean corpus (``tools.corpus --mix clean``), its image URLs spread over 127.0.0.2, 127.0.0.3, ... (a URL is
   always on the same host: chosen by a hash of its path), kept under /tmp/feedworker-bench/;
2. ``python -m tools.imagehost --host 127.0.0.2,... --latency-ms L``: each answer ``L`` ms after the request, and
   ``L`` ms more on a new connection (the handshake);
3. a fresh PostgreSQL database and a Redis database number of its own; `feedworker run` on an empty drop folder
   serves the workers (its three roles: worker/running/roles.py) and `feedworker ingest DIR --wait --json` sends
   the backlog; timed from the ingest's start to the last ledger commit; every answer checked
   (``tools.checkexport``);
4. the one-process pipeline (bench/naive.py: PyYAML, pydantic, an httpx GET per image, an upsert per item) on the
   first ``--naive`` files of the same corpus, against the same hosts: the ratio.

Prints files/s, the CPU seconds of every process (`run`'s tree, the ingester, Redis, PostgreSQL, the image host)
and CPU per file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from benchlib import (
    BIN,
    ROOT,
    WORK,
    claimed_redis_db,
    feedworker_run,
    image_host,
    machine,
    make_corpus,
    migrated_env,
    run_roles,
    stop_process,
    tree_cpu_seconds,
    wait_for_workers,
)
from e2e import cpu_spent, last_commit, service_cpu

URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[^\s'\"\\]*)")


def spread(src: Path, out: Path, hosts: list[str]) -> Path:
    """A copy of corpus ``src`` (and its answers) whose image URLs are spread over ``hosts``, mtimes kept."""
    from tools.corpus import answers_path

    def move(m: re.Match[str]) -> str:
        return f"http://{hosts[zlib.crc32(m.group(2).encode()) % len(hosts)]}:{m.group(1)}{m.group(2)}"

    if answers_path(out).is_file() and out.is_dir():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        (out / path.name).write_text(URL.sub(move, path.read_text(encoding="utf-8")), encoding="utf-8")
        st = path.stat()
        os.utime(out / path.name, ns=(st.st_atime_ns, st.st_mtime_ns))
    answers_path(out).write_text(URL.sub(move, answers_path(src).read_text(encoding="utf-8")), encoding="utf-8")
    return out


def remote_run(drops: Path, count: int, hosts: list[str], port: int, log_dir: Path,
               concurrency: int | None, settings: dict[str, str]) -> dict[str, Any]:
    from tools.corpus import answers_path

    with claimed_redis_db() as db:
        store_url, env = migrated_env(db, "feedworker_bench_remote", None, **{
            "FEEDWORKER_IMAGES__ALLOW_NETWORKS": '["127.0.0.0/8"]', "FEEDWORKER_STATE_DIR": str(log_dir / "state"),
            **settings})
        folder = log_dir / "watched"
        folder.mkdir(exist_ok=True)
        run = feedworker_run(env, folder, log_dir, concurrency)
        try:
            wait_for_workers(env, run_roles(env), timeout=60)
            before, run_before = service_cpu(port), tree_cpu_seconds(run.pid)
            started = time.time()
            ingest = subprocess.Popen([str(BIN / "feedworker"), "ingest", str(drops), "--wait", "--json"],
                                      env=env, cwd=log_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ingest_cpu = 0.0
            while ingest.poll() is None:
                ingest_cpu = max(ingest_cpu, tree_cpu_seconds(ingest.pid))
                time.sleep(0.1)
            out_text, err = ingest.communicate()
            if ingest.returncode != 0:
                raise RuntimeError(f"ingest exited {ingest.returncode}: {err.decode()[-500:]}")
            cpu = {"feedworker run": tree_cpu_seconds(run.pid) - run_before, "ingester": ingest_cpu,
                   **cpu_spent(before, service_cpu(port))}
            seconds = last_commit(store_url) - started
        finally:
            stop_process(run, timeout=60)
        export = log_dir / "records.jsonl"
        subprocess.run([str(BIN / "feedworker"), "export", "--out", str(export)], env=env, check=True,
                       capture_output=True)
        check = subprocess.run([sys.executable, "-m", "tools.checkexport", str(answers_path(drops)), str(export)],
                               cwd=ROOT, capture_output=True, text=True)
    return {"files": count, "seconds": seconds, "summary": json.loads(out_text.decode().strip().splitlines()[-1]),
            "cpu": cpu, "answers": check.stdout.strip().splitlines()[-1] if check.stdout.strip() else check.stderr,
            "correct": check.returncode == 0}


def naive_rate(drops: Path, limit: int) -> tuple[float, str]:
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "naive.py"), str(drops), "--limit", str(limit)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(x for x in res.stdout.splitlines() if x.startswith("figure: naive"))
    return float(line.split()[2].replace(",", "")), res.stdout.splitlines()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--hosts", type=int, default=16, help="image hosts: 127.0.0.2 and up")
    ap.add_argument("--latency-ms", type=int, default=40)
    ap.add_argument("--naive", type=int, default=100, help="files the one-process pipeline runs (0: skip it)")
    ap.add_argument("--concurrency", "-c", type=int, default=None, help="`feedworker run -c` (default: its own)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--image-port", type=int, default=18792)
    ap.add_argument("--set", action="append", default=[], metavar="FEEDWORKER_X=V", help="a setting for `run`")
    args = ap.parse_args()
    hosts = [f"127.0.0.{2 + i}" for i in range(args.hosts)]
    base = WORK / f"clean-{args.count}-p{args.image_port}"
    make_corpus(base, args.count, image_base=f"http://127.0.0.1:{args.image_port}")
    drops = spread(base, WORK / f"remote-{args.count}-h{args.hosts}-p{args.image_port}", hosts)
    print(f"machine: {machine()}")
    print(f"{args.count:,} clean drops, image URLs over {args.hosts} hosts answering after {args.latency_ms} ms "
          f"(+{args.latency_ms} ms on a new connection)")
    settings = dict(s.split("=", 1) for s in args.set)
    rates, cpus = [], []
    with image_host(args.image_port, WORK / "remote-image-host.log", "--host", ",".join(hosts),
                    "--latency-ms", str(args.latency_ms)):
        for i in range(args.repeat):
            log_dir = WORK / f"remote-run-{os.getpid()}-{i}"
            shutil.rmtree(log_dir, ignore_errors=True)
            log_dir.mkdir(parents=True)
            r = remote_run(drops, args.count, hosts, args.image_port, log_dir, args.concurrency, settings)
            rate, total = r["files"] / r["seconds"], sum(r["cpu"].values())
            rates.append(rate)
            cpus.append(1e6 * total / r["files"])
            print(f"run {i + 1}: {rate:,.0f} files/s ({r['seconds']:.1f} s); outcomes {r['summary']}; "
                  f"answers: {r['answers']}")
            print(f"  CPU {total:.1f} s, {1e6 * total / r['files']:,.0f} us/file: " + ", ".join(
                f"{k} {1e6 * v / r['files']:,.0f}" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1])))
            if not r["correct"]:
                raise SystemExit("wrong answers: no figure")
        naive = naive_rate(drops, args.naive) if args.naive else None
    median = statistics.median(rates)
    print(f"figure: feedworker {median:,.0f} files/s (median of {len(rates)}: "
          f"{', '.join(f'{x:,.0f}' for x in rates)}), {statistics.median(cpus):,.0f} us CPU/file")
    if naive:
        print(f"figure: naive {naive[0]:,.1f} files/s ({naive[1]}); ratio {median / naive[0]:,.1f}x")


if __name__ == "__main__":
    main()
