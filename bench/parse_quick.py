"""Quick parse+validate throughput on one core: the seed drop parsed N times (default 2,000).

    .venv/bin/python bench/parse_quick.py [N]

Prints files/s for ``parse_drop`` (split + bounded safe YAML + pydantic validation) and, for scale, for a bare
``yaml.load(..., Loader=yaml.CSafeLoader)`` of the same front matter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tasks.limits import ParseLimits
from tasks.parse.frontmatter import split_front_matter
from tasks.parse.parsing import parse_drop

SEED = Path(__file__).resolve().parent.parent / "tests" / "data" / "drops" / "000_fb3687fbf0a8c61d.txt"


def rate(work: Callable[[], object], count: int) -> float:
    work()  # warm the caches (canonical URLs, resolved plain scalars) as a running worker has them
    start = time.perf_counter()
    for _ in range(count):
        work()
    return count / (time.perf_counter() - start)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    data, limits = SEED.read_bytes(), ParseLimits()
    raw = split_front_matter(data).raw
    print(f"parse_drop (parse + validate): {rate(lambda: parse_drop(SEED.name, data, limits), count):,.0f} files/s")
    print(f"yaml.load CSafeLoader alone:   {rate(lambda: yaml.load(raw, Loader=yaml.CSafeLoader), count):,.0f} files/s")


if __name__ == "__main__":
    main()
