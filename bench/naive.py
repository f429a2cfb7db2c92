"""The one-process pipeline a user would write first: the peer the end-to-end benchmarks are measured against.

    .venv/bin/python bench/naive.py FOLDER [--limit 100] [--store URL]

For each file, in one process, one after the other: read it, split off the front matter and load it with PyYAML
(libyaml's ``CSafeLoader``), validate it with the same pydantic ``Item`` model, GET each image URL with one
``httpx.Client`` (connections kept alive, redirects followed, 10 s timeout) and call it ok on a 2xx answer, then
upsert the item as one JSON row keyed by its web URL (``INSERT ... ON CONFLICT DO UPDATE``, one commit per item).
No bounds, no SSRF guard, no size sniffing, no linking, no ledger: less work than feedworker does, so a ratio
against it understates feedworker's gain. ``run`` is what the other benchmarks call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import yaml
from benchlib import conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.parse.models import Item

TABLE = "naive_items"


@dataclass
class NaiveResult:
    files: int
    images: int
    ok_images: int
    seconds: float
    cpu_seconds: float  # this process only: the naive pipeline is all in it (plus PostgreSQL's share, not counted)

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"naive one-process pipeline: {self.files} files in {self.seconds:.2f} s = "
                f"{self.files_per_second:,.1f} files/s ({self.images} image GETs, {self.ok_images} ok; "
                f"{self.cpu_seconds / max(self.files, 1) * 1e6:,.0f} us CPU a file in its process)")


def front_matter(text: str) -> dict[str, object]:
    """What python-frontmatter does: the YAML between the first two ``---`` lines."""
    _, head, _ = text.split("---\n", 2)
    loaded = yaml.load(head, Loader=yaml.CSafeLoader)
    return loaded if isinstance(loaded, dict) else {}


def run(files: Sequence[Path], store_url: str) -> NaiveResult:
    """The naive pipeline over ``files`` into ``store_url`` (PostgreSQL; its table is made here)."""
    images = ok_images = 0
    with psycopg.connect(conninfo(store_url)) as db, httpx.Client(follow_redirects=True, timeout=10) as client:
        db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (url text PRIMARY KEY, body jsonb NOT NULL)")
        db.commit()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for path in files:
            item = Item.model_validate(front_matter(path.read_text(encoding="utf-8")))
            checked = []
            for image in item.images:
                if not image.url:
                    continue
                images += 1
                try:
                    ok = client.get(image.url).is_success
                except httpx.HTTPError:
                    ok = False
                ok_images += ok
                checked.append({"url": image.url, "ok": ok})
            body = {**item.model_dump(mode="json", exclude={"secured"}), "images": checked}
            db.execute(f"INSERT INTO {TABLE} (url, body) VALUES (%s, %s) "
                       "ON CONFLICT (url) DO UPDATE SET body = EXCLUDED.body", (item.web_url, json.dumps(body)))
            db.commit()
        seconds, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return NaiveResult(len(files), images, ok_images, seconds, cpu)


def main() -> None:
    from benchlib import drop_database, fresh_database

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="drop files (e.g. a tools.corpus folder)")
    ap.add_argument("--limit", type=int, default=100, help="files to run (the first, by name)")
    ap.add_argument("--store", default=None, help="PostgreSQL URL (default: a fresh feedworker_bench_naive)")
    args = ap.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.is_file())[: args.limit]
    own = f"feedworker_bench_naive_{os.getpid()}"
    store = args.store or fresh_database(own)
    try:
        result = run(files, store)
    finally:
        if not args.store:
            drop_database(own)
    print(result.line())
    print(f"figure: naive {result.files_per_second:,.1f} files/s")


if __name__ == "__main__":
    main()
