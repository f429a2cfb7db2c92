"""The store alone, in process: ledger registration and batch publishing, drops/s, on PostgreSQL and SQLite.

    .venv/bin/python bench/store.py [--count 5000] [--batch 100] [--backend postgresql|sqlite|both]

The corpus (``tools.corpus``, clean mix) is parsed and normalized first, outside the clock; image outcomes are
filled as the verify stage fills them. Then, on a fresh database, each batch is registered in the ledger
(``Store.register_drops``) and published (``Store.publish``: lock, merge, write records and outcomes in one
transaction), timed separately. One process, one connection at a time: the per-batch cost of the SQL.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path

from benchlib import fresh_database, machine, make_corpus

from tasks.limits import ParseLimits
from tasks.link.records import Normalized, attach_images, image_urls, normalize
from tasks.parse.parsing import parse_drop
from tasks.shapes import Drop, ImageResult
from tasks.store.ledger import Store
from tasks.store.migrate import upgrade

OK = ImageResult(status="ok", width=640, height=360, http_status=206, content_type="image/png", reason=None)


def normalized(folder: Path) -> list[Normalized]:
    out = []
    limits = ParseLimits()
    for path in sorted(folder.iterdir()):
        st = path.stat()
        key = base64.b16encode(path.name.encode()).decode()[:40]
        drop = Drop(key=key, name=path.name, path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
        n = normalize(parse_drop(path.name, path.read_bytes(), limits), drop)
        attach_images(n, {u: OK for u in image_urls(n)})
        out.append(n)
    return out


def measure(url: str, drops: list[Normalized], batch: int) -> tuple[float, float]:
    store = Store(url)
    upgrade(store)
    register = publish = 0.0
    try:
        for i in range(0, len(drops), batch):
            part = drops[i:i + batch]
            rows = [{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in part]
            t0 = time.perf_counter()
            store.register_drops(rows, "bench", "ingest")
            t1 = time.perf_counter()
            store.publish(part, [])
            t2 = time.perf_counter()
            register, publish = register + t1 - t0, publish + t2 - t1
    finally:
        store.dispose()
    return len(drops) / register, len(drops) / publish


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=3, help="fresh databases per backend; the best round counts")
    args = ap.parse_args()
    folder = Path("/tmp/feedworker-bench") / f"store-{args.count}"
    make_corpus(folder, args.count, mix="clean")
    drops = normalized(folder)
    print(f"machine: {machine()}")
    print(f"store: {len(drops):,} drops in batches of {args.batch}, one process")
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    best: dict[str, tuple[float, float]] = {}
    for backend in backends:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                url = (fresh_database("feedworker_bench_store") if backend == "postgresql"
                       else f"sqlite:///{tmp}/store.db")
                reg, pub = measure(url, drops, args.batch)
            old = best.get(backend, (0.0, 0.0))
            best[backend] = (max(old[0], reg), max(old[1], pub))
        reg, pub = best[backend]
        print(f"  {backend:<11} register {reg:>8,.0f} drops/s   publish {pub:>7,.0f} drops/s  (best of {args.rounds})")
    print("figure: " + ", ".join(f"{b} publish {p:,.0f} drops/s" for b, (_, p) in best.items()))


if __name__ == "__main__":
    main()
