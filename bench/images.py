"""URL checks per second of the image checker on loopback, cold and cached, beside linkchecker on the same URLs.

    .venv/bin/python bench/images.py [--count 3000] [--batch 300] [--cache redis|memory] [--max-seconds 180]

Starts the repository's image host (``python -m tools.imagehost``) on 127.0.0.1, checks N distinct
``/ok/W/H/`` URLs in batches as the pipeline does (``check_many``: Redis MGET, fetch, pipeline SET), then the same
URLs again (all from the cache), then serves one HTML page holding the same ``<img>`` tags on 127.0.0.1 and runs
linkchecker on it. Everything talks to 127.0.0.1 only; every phase is bounded in count and in time.

The peer, once (kept out of our venv): ``python3 -m venv /tmp/feedworker-linkchecker &&
/tmp/feedworker-linkchecker/bin/pip install linkchecker``. linkchecker waits 0.1-0.6 s between two requests to one
host unless the server sends a ``LinkChecker`` header; the image host doesn't, so that politeness pause is turned
off here (as that header would) and the peer runs at its best. Its start-up time (an empty page) is subtracted.
"""

from __future__ import annotations

import argparse
import http.server
import json
import resource
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import image_host_argv  # noqa: E402

from tasks.images.cache import MemoryOutcomeCache, OutcomeCache  # noqa: E402
from tasks.images.checker import ImageChecker  # noqa: E402
from tasks.limits import ImageLimits  # noqa: E402

SIZES = [(1920, 1080), (1200, 630), (1120, 630), (800, 600), (640, 360), (300, 300)]
PEER_PYTHON = Path("/tmp/feedworker-linkchecker/bin/python")
UNTHROTTLED_LINKCHECKER = """
import sys
from linkcheck.director import aggregator
aggregator.Aggregate.wait_for_host = lambda self, host: None  # what a "LinkChecker" response header does
from linkcheck.command.linkchecker import linkchecker
sys.argv[0] = "linkchecker"
sys.exit(linkchecker())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/__stats", timeout=5) as answer:
        result: dict[str, Any] = json.load(answer)
        return result


def ok_requests(base: str) -> int:
    return int(stats(base)["by_kind"].get("ok", 0))


def start_image_host(port: int, *more: str) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(image_host_argv(port, *more), cwd=ROOT, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            stats(f"http://127.0.0.1:{port}")
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("the image host did not start")


def run_checker(urls: list[str], batch: int, redis_url: str, base: str, deadline: float, memory: bool = False
                ) -> tuple[list[Run], str]:
    """The cold pass and the cached pass, and the limits used; ``memory``: the in-process cache, not Redis."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"feedworker-bench:{secrets.token_hex(4)}:"
    limits = ImageLimits(allow_networks=["127.0.0.1/32"], allow_ports=["1-65535"])
    cache = MemoryOutcomeCache(max(len(urls), 10_000)) if memory else OutcomeCache(client, prefix=prefix)
    try:
        with ImageChecker(limits, cache) as checker:
            passes = []
            for _ in ("cold", "cached"):
                before, started, cpu = ok_requests(base), time.perf_counter(), time.process_time()
                for i in range(0, len(urls), batch):
                    results = checker.check_many(urls[i : i + batch])
                    bad = [u for u, r in results.items() if f"/ok/{r['width']}/{r['height']}/" not in u]
                    if bad:
                        raise SystemExit(f"wrong answer for {bad[0]}: {results[bad[0]]}")
                    if time.monotonic() > deadline:
                        raise SystemExit("out of time (--max-seconds)")
                passes.append(Run(time.perf_counter() - started, time.process_time() - cpu, ok_requests(base) - before))
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
    return passes, f"concurrency {limits.concurrency}, per host {limits.per_host}"


def serve_page(urls: list[str]) -> tuple[http.server.ThreadingHTTPServer, str, str]:
    """One page with every <img>, one empty page; served on 127.0.0.1."""
    pages = {"/all.html": "".join(f'<img src="{u}">\n' for u in urls), "/empty.html": ""}

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"<!doctype html><html><body>{pages.get(self.path, '')}</body></html>".encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    return server, f"{base}/all.html", f"{base}/empty.html"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_linkchecker(python: Path, page: str, threads: int, timeout: float) -> tuple[float, float]:
    """Wall and CPU seconds of one linkchecker run."""
    args = [str(python), "-c", UNTHROTTLED_LINKCHECKER, "--no-robots", "--check-extern", "--recursion-level", "1",
            "--threads", str(threads), "--no-status", "--output", "none", "--timeout", "10", page]
    started, cpu = time.perf_counter(), children_cpu()
    subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    return time.perf_counter() - started, children_cpu() - cpu


class Peer:
    """linkchecker in its own venv, timed on a page of <img> tags net of its start-up (an empty page)."""

    def __init__(self, python: Path, threads: int) -> None:
        self.python, self.threads = python, threads
        self.version = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('linkchecker'))"],
            capture_output=True, text=True, timeout=30).stdout.strip()
        server, _, empty = serve_page([])
        try:
            self.startup = min(run_linkchecker(python, empty, threads, 60) for _ in range(2))  # (wall, cpu)
        finally:
            server.shutdown()

    def check(self, urls: list[str], base: str, deadline: float) -> Run:
        server, page, _ = serve_page(urls)
        try:
            before = ok_requests(base)
            wall, cpu = run_linkchecker(self.python, page, self.threads, max(5.0, deadline - time.monotonic()))
            return Run(wall - self.startup[0], cpu - self.startup[1], ok_requests(base) - before)
        finally:
            server.shutdown()


class Run(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # CPU seconds of the checking process (linkchecker: its own process)
    requests: int  # what the image host saw


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000, help="distinct URLs per round (at most 20000)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (at most 10)")
    ap.add_argument("--batch", type=int, default=300, help="URLs per check_many call, as a pipeline batch")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="the image host answers like a far host")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="a loopback Redis (keys cleaned up)")
    ap.add_argument("--cache", choices=("redis", "memory"), default="redis",
                    help="the outcome cache: Redis, or the in-process one used when there is no Redis")
    ap.add_argument("--peer-python", type=Path, default=PEER_PYTHON, help="python of a venv with linkchecker")
    ap.add_argument("--peer-threads", type=int, default=10, help="linkchecker --threads (its default: 10)")
    ap.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()
    count, rounds = max(1, min(args.count, 20_000)), max(1, min(args.rounds, 10))
    if not args.redis.startswith(("redis://127.0.0.1", "redis://localhost")):
        raise SystemExit("--redis must be on loopback")
    deadline = time.monotonic() + args.max_seconds
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_image_host(port, "--latency-ms", str(args.latency_ms))
    peer = Peer(args.peer_python, args.peer_threads) if args.peer_python.exists() else None
    if peer is None:
        print(f"peer: no linkchecker at {args.peer_python} (see this file's docstring to install it)")
    rows: dict[str, list[Run]] = {"cold": [], "cached": [], "peer": []}
    try:
        for _ in range(rounds):  # interleaved, so that both sides see the same machine
            run = secrets.token_hex(3)
            urls = [f"{base}/ok/{w}/{h}/{run}-{i}.png" for i, (w, h) in ((i, SIZES[i % 6]) for i in range(count))]
            (cold, cached), shape = run_checker(urls, args.batch, args.redis, base, deadline,
                                              memory=args.cache == "memory")
            rows["cold"].append(cold)
            rows["cached"].append(cached)
            if peer is not None:
                rows["peer"].append(peer.check(urls, base, deadline))
    finally:
        server.terminate()
        server.wait(10)
    report(rows, count, rounds, base, args, shape, peer)


def report(rows: dict[str, list[Run]], count: int, rounds: int, base: str, args: argparse.Namespace,
           shape: str, peer: Peer | None) -> None:
    def line(name: str, key: str, note: str) -> tuple[float, float]:
        seconds, cpu = median([r.seconds for r in rows[key]]), median([r.cpu for r in rows[key]])
        each = " ".join(f"{count / r.seconds:.0f}" for r in rows[key])
        requests = sorted({r.requests for r in rows[key]})
        print(f"  {name:<20}{count / seconds:9.0f} checks/s {cpu / count * 1e6:7.0f} us CPU/check  "
              f"(rounds: {each}; {note}; requests/round: {requests})")
        return count / seconds, cpu / count

    print(f"\nimage checks: {count} distinct /ok/ URLs per round on {base} (tools.imagehost), {rounds} rounds, "
          f"medians; batches of {args.batch}")
    cold = line("feedworker cold", "cold", shape)
    line("feedworker cached", "cached",
         "one Redis MGET per batch" if args.cache == "redis" else "in-process cache, no I/O")
    if peer is not None:
        theirs = line(f"linkchecker {peer.version}", "peer",
                      f"{args.peer_threads} threads, politeness pause off, {peer.startup[0]:.2f} s start-up excluded")
        print(f"  ratio cold / linkchecker: {cold[0] / theirs[0]:.1f}x checks/s, {theirs[1] / cold[1]:.1f}x less CPU")


if __name__ == "__main__":
    main()
