"""content_sha256 is the stdlib JSON's hash, whichever encoder computes it (orjson when no float can be in it)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from tasks.limits import ParseLimits
from tasks.link.records import normalize, stub_drafts
from tasks.parse.models import Item
from tasks.parse.parsing import parse_drop
from tasks.shapes import Drop

DROPS = Path(__file__).parent / "data" / "drops"


def stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def sorted_orjson(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def reference_hashes(it: Item, drop: Drop) -> list[str]:
    """The hashes as the stdlib computes them, for the record and each stub (the drafts' bodies as normalized)."""
    n = normalize(it, drop)
    record = {"body": n["record"]["body"], "secured": n["record"]["secured"]}
    stubs = [{"body": s["body"]} for s in stub_drafts(n)]
    return [hashlib.sha256(stdlib(v)).hexdigest() for v in [record, *stubs]]


def hashes(it: Item, drop: Drop) -> list[str]:
    n = normalize(it, drop)
    return [n["record"]["sha256"]] + [s["sha256"] for s in n["stubs"]]


def test_orjson_spells_every_character_as_the_stdlib_does() -> None:
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(points), 8192):
        text = "".join(map(chr, points[i:i + 8192]))
        assert sorted_orjson([text]) == stdlib([text])


def test_orjson_sorts_and_spells_mappings_as_the_stdlib_does() -> None:
    rng = random.Random(3)
    scalars: list[Any] = [0, 1, -5, 2**63 - 1, -(2**63), 2**64 - 1, True, False, None, "", "x", "é\n\"\\"]

    def key() -> str:
        ranges = [(0, 0x7F), (0x80, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
        return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 4)))

    def value(depth: int) -> Any:
        if depth > 3 or rng.random() < 0.5:
            return rng.choice(scalars)
        if rng.random() < 0.5:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {key(): value(depth + 1) for _ in range(rng.randint(0, 5))}

    for _ in range(5000):
        v = value(0)
        assert sorted_orjson(v) == stdlib(v)


@pytest.mark.parametrize("path", sorted(p for p in DROPS.iterdir() if not p.name.startswith("hostile")),
                         ids=lambda p: p.name)
def test_sample_drops_hash_as_the_stdlib_hashes(path: Path) -> None:
    it = parse_drop(path.name, path.read_bytes(), ParseLimits())
    drop = Drop(key="k", name=path.name, path=str(path), size=1, mtime_ns=1)
    assert hashes(it, drop) == reference_hashes(it, drop)


def test_unknown_fields_with_floats_hash_as_the_stdlib_hashes() -> None:
    extra = {"ratio": 1e16, "small": 1.5e-7, "tiny": 1e-7, "nested": [{"x": 0.1}],
             "big": 123456789012345678901234567890}
    it = Item.model_validate({"title": "T", "webUrl": "https://x.test/", **extra,
                              "related": [{"webUrl": "https://y.test/", "score": 2.5e20}]})
    drop = Drop(key="k", name="001_aa.txt", path="/d", size=1, mtime_ns=1)
    assert hashes(it, drop) == reference_hashes(it, drop)
    assert sorted_orjson({"f": 1e-7}) != stdlib({"f": 1e-7})  # 1e-7 / 1e-07: why floats take the stdlib
