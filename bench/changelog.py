"""The change log's cost to publish: the same batches into two fresh stores, one of them with the log switched off
(``tasks.store.ledger.log_changes`` replaced by a no-op in this process only), batch by batch in turn, so both see the
same machine load (this 2-core machine is shared: sequential runs drift more than the effect).

    .venv/bin/python bench/changelog.py [--count 5000] [--batch 100] [--backend postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import fresh_database, machine, make_corpus
from store import normalized

import tasks.store.ledger
from tasks.store.ledger import Store
from tasks.store.migrate import upgrade


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    args = ap.parse_args()
    folder = Path("/tmp/feedworker-bench") / f"store-{args.count}"
    make_corpus(folder, args.count, mix="clean")
    drops = normalized(folder)
    real: Any = getattr(tasks.store.ledger, "log_changes")  # noqa: B009 (the name tasks.store.ledger uses, patched below)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for label in ("log on", "log off"):
            url = (fresh_database(f"feedworker_bench_cl_{label[-2:].strip()}") if args.backend == "postgresql"
                   else f"sqlite:///{tmp}/{label[-3:]}.db")
            stores[label] = Store(url)
            upgrade(stores[label])
        spent = {label: 0.0 for label in stores}
        for i in range(0, len(drops), args.batch):
            part = drops[i:i + args.batch]
            rows = [{k: n["drop"][k] for k in ("key", "name", "path", "size", "mtime_ns")} for n in part]
            for label, store in stores.items():
                store.register_drops(rows, "bench", "ingest")
                setattr(tasks.store.ledger, "log_changes", real if label == "log on" else _off)  # noqa: B010
                t0 = time.perf_counter()
                store.publish(part, [])
                spent[label] += time.perf_counter() - t0
        logged = sum(1 for _ in stores["log on"].engine.connect().exec_driver_sql("SELECT seq FROM changes"))
        for store in stores.values():
            store.dispose()
    on, off = (len(drops) / spent[label] for label in ("log on", "log off"))
    print(f"machine: {machine()}")
    print(f"{args.backend}: {len(drops):,} drops in batches of {args.batch}, {logged:,} changes logged")
    print(f"figure: publish {off:,.0f} drops/s without the change log, {on:,.0f} with it "
          f"({100 * (on / off - 1):+.1f}%)")


def _off(*_: Any) -> None:
    pass


if __name__ == "__main__":
    main()
