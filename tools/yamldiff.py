"""The offline differential check of the YAML fast path (``tasks.parse.yamlfast``) against libyaml.

    python -m tools.yamldiff [--count 100000] [--seed 1] [--max-seconds 600]

The parse stage reads common front matter with a fast path in Python and hands everything else to libyaml
(``tasks.parse.yamlsafe``). The fast path is correct only if, whenever it answers, libyaml + the project's loader
build exactly the same data: the same values, the same types all the way down (``True`` is not ``1``) and the
same key order. This tool generates drops in the producers' shape (the seed drop of ``tests/data/drops`` and
drops like the corpus generator writes), mutates each at random (characters YAML gives meaning to, deletions,
re-indented and repeated lines), runs both paths on every text, and reports each disagreement with the text that
caused it. It prints how many texts the fast path answered (a check that never reaches the fast path proves
nothing) and exits 1 on any disagreement. The tests run the same property on a few thousand texts on every
``make test``; this tool runs it on as many as you like (hundreds of thousands before a change to the fast path).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.limits import ParseLimits
from tasks.parse.frontmatter import split_front_matter
from tasks.parse.yamlbuild import _plain_value
from tasks.parse.yamlfast import fast_tree
from tasks.parse.yamlloader import UnsafeYaml
from tasks.parse.yamlsafe import _load_with_libyaml

SEED_DROP = Path(__file__).resolve().parent.parent / "tests" / "data" / "drops" / "000_fb3687fbf0a8c61d.txt"
LIMITS = ParseLimits()
# Insertions that change what YAML reads: indicators, quotes, escapes, breaks, tags, anchors, odd characters.
MUTATIONS = ["\n", " ", "  ", "- ", ": ", ":", "#", " #", "'", '"', "\\", "\\u0041", "\\ud800", "\\0", "[", "]",
             "{", "}", ",", "&a ", "*a", "!!str ", "!", "|", ">", "\t", "\r", "\r\n", "~", "null", "true", "-1",
             "0x1F", "1:30", "---", "...", "%", "?", "? ", "@", "`", "\u2028", "\x85", "\ufeff", "é", "\x7f",
             "<<: ", "=", ".5", "-", "\n- ", "\n  ", "\n    - a: 1", "x: y", "''", "0o17", "1e3", "2023-02-01",
             "yes", "No", "ON", ".inf", "-.NaN", "0b101", "+12", "1_000", "!!binary ", "!!timestamp "]
FastPath = Callable[[str], dict[str, Any] | None]


def fast(text: str) -> dict[str, Any] | None:
    return fast_tree(text, _plain_value, LIMITS.max_depth)


def libyaml(text: str) -> Any:
    """What the libyaml path gives: the data, or the refusal."""
    aliases = "&" in text and "*" in text
    try:
        return _load_with_libyaml(text, text.encode("utf-8", "surrogatepass"), LIMITS, 1, aliases, True).data
    except (UnsafeYaml, UnicodeError) as exc:
        return exc


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down and the same key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def generated(rng: random.Random) -> str:
    """Front matter in the producers' block style: JSON-quoted strings, plain words, numbers, nested lists."""
    words = ["netflix", "anime", "ai", "émission", "données", "café", "naïve", "東京", '"quoted"', "back\\slash",
             "tab\there", "colon: inside", "#hash"]

    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=rng.random() < 0.2)  # JSON string syntax is a YAML double-quoted scalar

    lines = ["category: news", f"title: {q(' '.join(rng.choices(words, k=6)))}",
             f"publishedDateTime: 2023-02-0{rng.randint(1, 9)}T10:00:00Z", f"quality: {rng.randint(-5, 100)}",
             f"published: {rng.choice(['true', 'false'])}", f"heat: {rng.choice(['-1', '0', '17'])}", "",
             "provider:", "  name: PC Magazine", "  domain: pcmag.com", "", "topics:"]
    lines += [f"  - {t}" for t in rng.sample(["AI", "Chips", "Space", "Cloud"], rng.randint(0, 3))]
    lines += ["", "images: []" if rng.random() < 0.3 else "images:\n  - url: 'http://h/i.png?a=1'\n    width: 10"]
    lines += ["", "related:"]
    for _ in range(rng.randint(0, 3)):
        lines += [f"  - title: {q(rng.choice(words))}", f"    webUrl: {q('https://x.test/' + rng.choice(words))}",
                  "    provider:", "      name: BGR", "    images:", f"      - url: {q('http://h/i.png?a=1')}",
                  f"        width: {rng.randint(1, 2000)}", "        isCached: true"]
    return "\n".join([*lines, "", f"secured: {q('QUJD;REVG')}", ""])


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        kind, at = rng.random(), rng.randint(0, len(text))
        if kind < 0.6:
            text = text[:at] + rng.choice(MUTATIONS) + text[at:]
        elif kind < 0.8:
            text = text[:at] + text[at + rng.randint(1, 5):]
        else:
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines[i] = " " * rng.choice([0, 1, 2, 4]) + lines[i].lstrip(" ")
            if rng.random() < 0.3:
                lines.insert(i, lines[i])
            text = "\n".join(lines)
    return text


@dataclass
class Report:
    checked: int = 0
    answered: int = 0  # texts the fast path read (the others went to libyaml)
    disagreements: list[tuple[str, Any, Any]] = field(default_factory=list)


def run(count: int, seed: int, max_seconds: float = 600.0, fast_path: FastPath = fast) -> Report:
    """Check ``count`` texts (or as many as fit in ``max_seconds``): every 10th unmutated, the rest mutated."""
    rng = random.Random(seed)
    bases = [split_front_matter(SEED_DROP.read_bytes()).text] + [generated(rng) for _ in range(50)]
    report, deadline = Report(), time.monotonic() + max_seconds
    for n in range(count):
        if time.monotonic() > deadline:
            break
        base = bases[n % len(bases)]
        text = base if n % 10 == 0 else mutate(base, rng)
        report.checked += 1
        got = fast_path(text)
        if got is None:
            continue
        report.answered += 1
        want = libyaml(text)
        if not same(got, want):
            report.disagreements.append((text, got, want))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.yamldiff", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000, help="texts to check")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop early after this long")
    args = ap.parse_args(argv)
    report = run(args.count, args.seed, args.max_seconds)
    for text, got, want in report.disagreements[:20]:
        print(f"DISAGREE on {text!r}:\n  fast path: {got!r}\n  libyaml:   {want!r}")
    print(f"{report.checked} texts (seed {args.seed}), {report.answered} read by the fast path, "
          f"{len(report.disagreements)} disagreements")
    return 1 if report.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
