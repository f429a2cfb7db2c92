"""Parse + validate + normalize, in process, on one core: files/s, beside the naive path a user would write.

    .venv/bin/python bench/parse.py [--count 2000] [--rounds 5] [--mix clean|default] [--max-seconds 120]

Corpus: ``tools.corpus`` files (written once under /tmp/feedworker-bench/), read into memory
first: reading the disk is not parsing. The process is pinned to one CPU. Each path runs ``--rounds`` times,
interleaved, and the best round counts (other processes on the machine only ever slow a round down).

- ours: ``parse_drop`` (fences, bounded safe YAML, pydantic ``Item``) then ``normalize`` (record + stub drafts,
  canonical URLs, sha256): what the parse stage does per drop;
- naive: ``frontmatter.loads`` (python-frontmatter, libyaml's CSafeLoader) then ``Item.model_validate`` of its
  dict: the same model, none of the bounds; and the naive path followed by our ``normalize``, for a like-for-like
  ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import frontmatter
from benchlib import machine, make_corpus

from tasks.limits import ParseLimits
from tasks.link.records import normalize
from tasks.parse.models import Item
from tasks.parse.parsing import parse_drop
from tasks.shapes import Drop

Files = list[tuple[Drop, bytes]]


def load(folder: Path) -> Files:
    files = []
    for path in sorted(folder.iterdir()):
        st = path.stat()
        drop = Drop(key=path.name, name=path.name, path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
        files.append((drop, path.read_bytes()))
    return files


def ours(files: Files, limits: ParseLimits) -> int:
    for drop, data in files:
        normalize(parse_drop(drop["name"], data, limits), drop)
    return len(files)


def ours_no_normalize(files: Files, limits: ParseLimits) -> int:
    for drop, data in files:
        parse_drop(drop["name"], data, limits)
    return len(files)


def naive(files: Files, _: ParseLimits) -> int:
    for _drop, data in files:
        Item.model_validate(frontmatter.loads(data.decode("utf-8")).metadata)
    return len(files)


def naive_normalize(files: Files, _: ParseLimits) -> int:
    for drop, data in files:
        normalize(Item.model_validate(frontmatter.loads(data.decode("utf-8")).metadata), drop)
    return len(files)


PATHS: dict[str, Callable[[Files, ParseLimits], int]] = {
    "ours: parse + validate + normalize": ours,
    "ours: parse + validate": ours_no_normalize,
    "naive: python-frontmatter + pydantic": naive,
    "naive + our normalize": naive_normalize,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mix", choices=["clean", "default"], default="clean")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="stop starting rounds after this long")
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last one)")
    args = ap.parse_args()

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    folder = Path("/tmp/feedworker-bench") / f"parse-{args.mix}-{args.count}-{args.seed}"
    make_corpus(folder, args.count, seed=args.seed, mix=args.mix)
    files, limits = load(folder), ParseLimits()
    for work in PATHS.values():  # warm up: imports, pydantic's first validation, caches a running worker has
        work(files[:50], limits)

    best: dict[str, float] = dict.fromkeys(PATHS, 0.0)
    deadline = time.monotonic() + args.max_seconds
    for _ in range(args.rounds):
        if time.monotonic() > deadline:
            break
        for label, work in PATHS.items():
            start = time.perf_counter()
            n = work(files, limits)
            best[label] = max(best[label], n / (time.perf_counter() - start))

    print(f"machine: {machine()}")
    size = sum(len(d) for _, d in files) / len(files)
    print(f"corpus: {len(files)} files ({args.mix} mix, seed {args.seed}, {size:,.0f} bytes each on average), "
          f"pinned to CPU {cpu}, best of {args.rounds} rounds")
    for label, rate in best.items():
        print(f"  {label:<40} {rate:>8,.0f} files/s")
    full, naive_rate = best["ours: parse + validate + normalize"], best["naive: python-frontmatter + pydantic"]
    like = best["naive + our normalize"]
    print(f"ratio ours (with normalize) / naive (without): {full / naive_rate:.2f}x; "
          f"like for like (both normalize): {full / like:.2f}x")
    print(f"figure: {full:,.0f} files/s parse+validate+normalize on one core, {full / naive_rate:.2f}x the naive path")


if __name__ == "__main__":
    main()
