"""Checks of the change log against the export, shared by the change feed's end-to-end and fault tests."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from tests.processes import feedworker


def read_changes(env: dict[str, str], since: str | None = None) -> list[dict[str, Any]]:
    args = ["changes", *(["--since", since] if since else [])]
    return [json.loads(line) for line in feedworker(env, *args).stdout.splitlines()]


def check_changes(changes: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """Every published version exactly once, in version order per URL, and the latest of each is the export."""
    cursors = [int(c["cursor"]) for c in changes]
    assert cursors == sorted(set(cursors)), "cursors repeat or go back"
    versions: dict[str, list[int]] = {}
    for c in changes:
        assert c["version"] == c["record"]["version"] and c["url"] == c["record"]["url"], c["cursor"]
        versions.setdefault(c["url"], []).append(c["version"])
    by_url = {r["url"]: r for r in records}
    assert set(versions) == set(by_url)
    for url, seen in versions.items():
        assert seen == list(range(1, by_url[url]["version"] + 1)), (url, seen)  # none twice, none lost
    assert consumer_state(changes) == by_url


def consumer_state(changes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a consumer keeps: each URL's latest record, with ``resolved`` recomputed from that state (a related
    item that became a full record later does not change the citing record's version, so a flag read earlier
    can be stale; export derives it the same way)."""
    latest = {c["url"]: c["record"] for c in changes}
    full = {url for url, r in latest.items() if not r["stub"]}
    return {url: {**r, "related": [{**rel, "resolved": rel["url"] in full} for rel in r["related"]]}
            for url, r in latest.items()}


def write_drops(folder: Path, first: int, count: int, seed: int, known: list[str]) -> list[str]:
    """``count`` drops numbered from ``first``: new items citing others (stubs among them), exact duplicates
    and updates of ``known`` items' files (a later mtime); returns the webUrls of the new items."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    new: list[str] = []
    for n in range(first, first + count):
        roll = rng.random()
        if known and roll < 0.15:  # an exact duplicate of an earlier drop
            text = (folder / rng.choice(known)).read_text(encoding="utf-8")
        elif known and roll < 0.35:  # an update: the same item, another title
            text = (folder / rng.choice(known)).read_text(encoding="utf-8").replace("title: ", f"title: v{n} ", 1)
        else:
            url = f"https://news.test/s{n}"
            cited = [f"https://news.test/s{rng.randrange(first + count + 50)}" for _ in range(rng.randrange(3))]
            related = "".join(f"\n  - {{title: 'Cited {n} {i}', webUrl: '{u}'}}" for i, u in enumerate(cited))
            text = f"---\ntitle: 'Story {n}'\nwebUrl: '{url}'\nquality: {n % 100}\nrelated:{related or ' []'}\n---\n"
            new.append(url)
        name = f"{n:04d}_{n:016x}.txt"
        (folder / name).write_text(text, encoding="utf-8")
        os.utime(folder / name, ns=(1_700_000_000_000_000_000 + n * 10_000_000,) * 2)
        known.append(name)
    return new
