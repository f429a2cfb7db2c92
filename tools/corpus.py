"""Drop corpora with their answers: what a correct run of feedworker must end with.

Two corpora live here, one place for both:

- :func:`generate` (``python -m tools.corpus write OUT --count N``): a seeded corpus of any size for benchmarks,
  written as ``OUT/NNNNNN_<16 hex>.txt`` with its answers in ``OUT/../<name>.expected.json``;
- :func:`write_corpus`: a dozen hand-made drops for the end-to-end and fault tests (:class:`Answers`).

What :func:`generate` exercises (``mix="default"``): related items citing other files of the corpus in URL
spellings that canonicalize to the same item (``utm_*``/``fbclid`` parameters, a fragment, an upper-case host, an
explicit ``:443``, ``http://``), related items that never arrive (stubs) or arrive later, exact duplicates under
another name and later changed versions of one item (numbered in drop order, mtimes increasing in that order:
the later drop wins), and images of every kind the image host serves (a real size other than the declared one,
404/500/410, an HTML page, HTML labelled ``image/png``, slow answers, redirect chains, URLs shared between items).
``mix="clean"``: every image is fine and fast (throughput runs). The output depends only on the arguments.

The answers are checked against an export by :mod:`tools.checkexport`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.corpusitems import Generator, Item, render

MTIME0 = 1_700_000_000.0  # drop n has mtime MTIME0 + n / 100: drop order = name order = mtime order


def generate(out: Path, count: int, *, seed: int = 7, image_base: str = "http://127.0.0.1:8765",
             mix: str = "default") -> dict[str, Any]:
    """Write ``count`` drops to ``out`` and their answers beside it; return the answers."""
    rng = random.Random(seed)
    gen = Generator(rng, image_base, mix)
    items = [gen.item(i, datetime(2023, 2, 1, tzinfo=UTC)) for i in range(max(1, int(count * 0.94)))]
    stubs, cites = gen.cite(items)
    files, latest = _repeats(rng, items, count)
    out.mkdir(parents=True, exist_ok=True)
    for n, (item_id, text) in enumerate(files):
        path = out / f"{n:06d}_{item_id}.txt"
        path.write_text(text, encoding="utf-8")
        os.utime(path, (MTIME0 + n / 100, MTIME0 + n / 100))
    titles = {url: it.title for url, it in latest.items()}
    answers = {"files": len(files), "items": len(items), "stubs": sorted(stubs), "titles": sorted(titles.values()),
               "links": {titles[src]: [titles[dst] for dst in dsts] for src, dsts in cites.items()},
               "images": gen.images}
    answers_path(out).write_text(json.dumps(answers, indent=1, ensure_ascii=False), encoding="utf-8")
    return answers


def answers_path(out: Path) -> Path:
    return out.parent / f"{out.name}.expected.json"


def _repeats(rng: random.Random, items: list[Item], count: int) -> tuple[list[tuple[str, str]], dict[str, Item]]:
    """Every item once, then exact duplicates and changed versions (alternately) up to ``count`` files."""
    files = [(it.id, render(it)) for it in items]
    latest = {it.web_url: it for it in items}
    for k in range(count - len(files)):
        it = latest[rng.choice(items).web_url]
        if k % 2 == 0:
            files.append((it.id, render(it)))  # the same content under another name
        else:
            changed = it.changed(f"{it.title.split(' (update')[0]} (update {k})")
            files.append((it.id, render(changed)))  # a later, changed version of the same item
            latest[it.web_url] = changed
    return files, latest


# -- the small hand-made corpus of the end-to-end and fault tests ------------------------------------------------


@dataclass
class Answers:
    titles: set[str] = field(default_factory=set)
    stubs: set[str] = field(default_factory=set)  # canonical URLs known only from citations
    links: dict[str, set[str]] = field(default_factory=dict)  # title -> titles of resolved related items
    images: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)  # url -> status, w, h
    refused: dict[str, str] = field(default_factory=dict)  # file name -> a word the failure reason must hold


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # JSON string syntax is a YAML double-quoted scalar


def write_corpus(folder: Path, base: str, count: int = 12) -> Answers:
    """``count`` items (each citing the next, the last citing a stub), one duplicate, one update, two refusals."""
    folder.mkdir(parents=True, exist_ok=True)
    ans = Answers()
    secured = base64.b64encode(b"k" * 48).decode() + ";" + base64.b64encode(b"i" * 16).decode()
    files = [(f"{i:03d}_{i:016x}.txt", _small_item(ans, i, count, base, secured)) for i in range(count)]
    ans.stubs.add(f"https://else.test/{count - 1}")
    files.append((f"{count:03d}_{0:016x}.txt", files[0][1]))  # an exact duplicate under another name
    files.append((f"{count + 1:03d}_{1:016x}.txt", files[1][1].replace("Story 1 café", "Story 1 café (updated)")))
    ans.titles.discard("Story 1 café")
    ans.titles.add("Story 1 café (updated)")
    ans.links["Story 1 café (updated)"] = ans.links.pop("Story 1 café")
    ans.links["Story 0 café"] = {"Story 1 café (updated)"}
    files.append(("bad_title.txt", "---\ntitle: ''\nwebUrl: https://news.test/x\n---\n"))
    ans.refused["bad_title.txt"] = "title"
    files.append(("bad_yaml.txt", "---\ntitle: [unclosed\n---\n"))
    ans.refused["bad_yaml.txt"] = "YAML"
    for n, (name, text) in enumerate(files):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        os.utime(path, ns=(1_700_000_000_000_000_000 + n * 10_000_000,) * 2)  # drop order = mtime order
    return ans


def _small_item(ans: Answers, i: int, count: int, base: str, secured: str) -> str:
    url = f"https://news.test/story-{i}/"
    nxt = f"https://NEWS.test:443/story-{i + 1}/?utm_source=feed" if i < count - 1 else f"https://else.test/{i}"
    img = f"{base}/ok/{40 + i}/{30 + i}/i{i}.png" if i % 4 else f"{base}/status/404/i{i}.png"
    ans.images[img] = ("ok", 40 + i, 30 + i) if i % 4 else ("broken", None, None)
    rel_img = f"{base}/html/r{i}.png"
    ans.images[rel_img] = ("not_image", None, None)
    title = f"Story {i} café"
    ans.titles.add(title)
    ans.links[title] = {f"Story {i + 1} café"} if i < count - 1 else set()
    return "\n".join([
        "---", f"title: {_q(title)}", f"webUrl: {_q(url)}", "quality: 50", "published: true",
        "publishedDateTime: 2023-02-01T10:00:00Z", "provider: {name: Test, domain: news.test}",
        "topics: [AI]", "images:", f"  - {{url: {_q(img)}, width: 10, height: 10, isCached: true}}",
        "related:", f"  - title: Cited {i}", f"    webUrl: {_q(nxt)}", f"    images: [{{url: {_q(rel_img)}}}]",
        f"secured: {_q(secured)}", "---", "body text", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the folder to write the drops to")
    ap.add_argument("--count", type=int, default=1000, help="number of files")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--image-base", default="http://127.0.0.1:8765", help="the image host's base URL")
    ap.add_argument("--mix", choices=["default", "clean"], default="default")
    args = ap.parse_args(argv)
    ans = generate(args.out, args.count, seed=args.seed, image_base=args.image_base, mix=args.mix)
    print(f"wrote {ans['files']} files ({ans['items']} items, {len(ans['stubs'])} stubs, {len(ans['images'])} "
          f"image URLs) to {args.out}; answers in {answers_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
