"""Hold an export (``feedworker export``, JSON lines) against a generated corpus's answers (:mod:`tools.corpus`).

    python -m tools.checkexport ANSWERS.expected.json EXPORT.jsonl

Prints what misses and one score line; exits 0 only when every check holds: the full records' titles, the
number of stubs, every item's resolved links, and every image URL's status (and real size when ``ok``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Record = dict[str, Any]


@dataclass
class Score:
    items: bool = False
    stubs: bool = False
    links: tuple[int, int] = (0, 0)  # right, all
    images: tuple[int, int] = (0, 0)
    misses: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return self.items + self.stubs + self.links[0] + self.images[0]

    @property
    def total(self) -> int:
        return 2 + self.links[1] + self.images[1]

    def line(self) -> str:
        return (f"{self.passed}/{self.total} checks hold (items {'ok' if self.items else 'off'}, stubs "
                f"{'ok' if self.stubs else 'off'}, links {self.links[0]}/{self.links[1]}, images "
                f"{self.images[0]}/{self.images[1]})")


def check(answers: dict[str, Any], records: list[Record]) -> Score:
    full = [r for r in records if not r.get("stub")]
    score = Score()
    titles = sorted(r["title"] for r in full)
    score.items = titles == sorted(answers["titles"])
    if not score.items:
        score.misses.append(f"items: {len(full)} full records, want {len(answers['titles'])}; "
                            f"{len(set(answers['titles']) - set(titles))} titles missing")
    stubs = sum(1 for r in records if r.get("stub"))
    score.stubs = stubs == len(answers["stubs"])
    if not score.stubs:
        score.misses.append(f"stubs: {stubs}, want {len(answers['stubs'])}")
    score.links = _links(answers["links"], full, {r["url"]: r for r in records}, score.misses)
    score.images = _images(answers["images"], records, score.misses)
    return score


def _links(want_links: dict[str, list[str]], full: list[Record], by_url: dict[str, Record],
           misses: list[str]) -> tuple[int, int]:
    by_title = {r["title"]: r for r in full}
    right = 0
    for title, want in want_links.items():
        got = {by_url[rel["url"]]["title"] for rel in by_title.get(title, {}).get("related", [])
               if rel.get("resolved") and rel.get("url") in by_url and not by_url[rel["url"]].get("stub")}
        if got == set(want):
            right += 1
        elif len(misses) < 12:
            misses.append(f"links of {title[:40]!r}: got {len(got)}, want {len(set(want))}")
    return right, len(want_links)


def _seen_images(records: Iterable[Record]) -> dict[str, Record]:
    seen: dict[str, Record] = {}
    for r in records:
        for im in r.get("images", []):
            seen[im["url"]] = im
        for rel in r.get("related", []):
            for im in rel.get("images") or []:
                seen.setdefault(im["url"], im)
    return seen


def _images(want_images: dict[str, Record], records: list[Record], misses: list[str]) -> tuple[int, int]:
    seen = _seen_images(records)
    right = 0
    for url, want in want_images.items():
        got = seen.get(url)
        good = got is not None and got.get("status") == want["status"] and (
            want["status"] != "ok" or (got.get("width"), got.get("height")) == (want["width"], want["height"]))
        right += good
        if not good and len(misses) < 20:
            shown = got and {k: got.get(k) for k in ("status", "width", "height")}
            misses.append(f"image {url.rsplit('/', 3)[-3:]}: got {shown}, want {want['status']}")
    return right, len(want_images)


def read_export(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    score = check(json.loads(Path(argv[0]).read_text(encoding="utf-8")), read_export(Path(argv[1])))
    for miss in score.misses:
        print("  miss:", miss)
    print(score.line())
    return 0 if score.passed == score.total else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
