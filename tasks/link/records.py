"""From a validated Item to the records it writes: its own full record and a stub for each related item.

Records are plain JSON-ready dicts (they travel between pipeline stages as task arguments). Identity is the
canonical webUrl; order ("the later drop wins") is the drop's (file mtime, file name).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict

import orjson

from tasks.canonical import canonical_url
from tasks.parse.models import ImageRef, Item, Provider, RelatedItem
from tasks.parse.parsing import jsonable, source_id
from tasks.shapes import Drop, ImageResult


class Draft(TypedDict):
    """What the store writes for one identity: ``body`` is the exported record less the store's own fields."""

    url: str
    stub: bool
    sha256: str
    order_mtime_ns: int
    order_name: str
    secured: str | None
    body: dict[str, Any]


class StubRef(TypedDict):
    """A related item's stub, as it travels: its identity and content hash. The body is its related entry's
    (``stub_drafts`` builds it where it is written): the batch carries each citation once, not twice."""

    url: str
    sha256: str


class Normalized(TypedDict):
    """A parsed drop, ready for image checks and the store. ``stubs[i]`` is ``record.body.related[i]``'s."""

    drop: Drop
    record: Draft
    stubs: list[StubRef]


def normalize(item: Item, drop: Drop) -> Normalized:
    """The drop's own record and one stub draft per related item (the store decides which stubs it writes)."""
    secured = item.secured.get_secret_value() if item.secured is not None else None
    body: dict[str, Any] = {
        "title": item.title,
        "excerpt": item.excerpt,
        "category": item.category,
        "type": item.type,
        "quality": item.quality,
        "heat": item.heat,
        "published": item.published,
        "published_at": _iso(item.published_at),
        "web_url": item.web_url,
        "original_url": item.original_url,
        "source_id": source_id(drop["name"]),
        "provider": _provider(item.provider),
        "topics": list(item.topics),
        "extra": jsonable(item.model_extra or {}),
        "images": [_image(im) for im in item.images],
        "related": [_related(rel) for rel in item.related],
    }
    plain = not _has_extras(item)
    sha = _sha256({"body": body, "secured": secured}, plain)
    record = Draft(url=canonical_url(item.web_url), stub=False, sha256=sha, order_mtime_ns=drop["mtime_ns"],
                   order_name=drop["name"], secured=secured, body=body)
    # a stub's hash is of its body before the image checks, as the record's is
    stubs = [StubRef(url=rel["url"], sha256=_sha256({"body": _stub_body(rel)}, plain)) for rel in body["related"]]
    return Normalized(drop=drop, record=record, stubs=stubs)


def stub_drafts(n: Normalized) -> list[Draft]:
    """The stub draft of each related item: its related entry as a record of its own (with whatever the image
    checks attached to the entry's images)."""
    drop = n["drop"]
    return [Draft(url=ref["url"], stub=True, sha256=ref["sha256"], order_mtime_ns=drop["mtime_ns"],
                  order_name=drop["name"], secured=None, body=_stub_body(rel))
            for ref, rel in zip(n["stubs"], n["record"]["body"]["related"], strict=True)]


def image_urls(n: Normalized) -> Iterator[str]:
    """Every image URL a normalized drop carries (its own, its related items': its stubs' are those)."""
    for im in _images_of(n["record"]["body"]):
        if im["url"] is not None:
            yield im["url"]


def attach_images(n: Normalized, results: Mapping[str, ImageResult]) -> None:
    """Fill each image's check outcome in place (the stubs' images are their related entries')."""
    for im in _images_of(n["record"]["body"]):
        im.update(results.get(im["url"]) or _NO_URL)


_NO_URL = ImageResult(status="blocked", width=None, height=None, http_status=None, content_type=None,
                      reason="no image URL")


def _images_of(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from body.get("images") or []
    for rel in body.get("related") or []:
        yield from rel.get("images") or []


def _stub_body(rel: dict[str, Any]) -> dict[str, Any]:
    """A related entry (``_related``) as a stub record's body: what the citation says, nothing of the citer."""
    return {
        "title": rel["title"],
        "excerpt": rel["excerpt"],
        "category": None,
        "type": rel["type"],
        "quality": rel["quality"],
        "heat": None,
        "published": None,
        "published_at": rel["published_at"],
        "web_url": rel["web_url"],
        "original_url": None,
        "source_id": None,
        "provider": rel["provider"],
        "topics": [],
        "extra": rel.get("extra", {}),
        "images": rel["images"],
        "related": [],
    }


def _related(rel: RelatedItem) -> dict[str, Any]:
    """A related entry as cited, plus its canonical URL (``resolved`` is decided when exported)."""
    out: dict[str, Any] = {
        "url": canonical_url(rel.web_url),
        "title": rel.title,
        "excerpt": rel.excerpt,
        "published_at": _iso(rel.published_at),
        "web_url": rel.web_url,
        "type": rel.type,
        "provider": _provider(rel.provider),
        "quality": rel.quality,
        "images": [_image(im) for im in rel.images],
    }
    if rel.model_extra:
        out["extra"] = jsonable(rel.model_extra)
    return out


def _image(im: ImageRef) -> dict[str, Any]:
    out: dict[str, Any] = {"url": im.url, "declared_width": im.width, "declared_height": im.height,
                           "is_cached": im.is_cached, "status": None, "width": None, "height": None,
                           "http_status": None, "content_type": None}
    if im.model_extra:
        out["extra"] = jsonable(im.model_extra)
    return out


def _provider(p: Provider | None) -> dict[str, Any] | None:
    if p is None:
        return None
    out: dict[str, Any] = {"name": p.name, "domain": p.domain}
    if p.model_extra:
        out["extra"] = jsonable(p.model_extra)
    return out


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _sha256(value: Any, plain: bool) -> str:
    # Hash of the data, not its spelling: the same item written in flow style or block style hashes the same.
    # orjson's sorted output is byte for byte the stdlib's below for text, integers, booleans, null, lists and
    # mappings with text keys (tests/test_records_hash.py), ~5x faster; it spells floats differently (1e-07 /
    # 1e-7), and only unknown fields can hold floats, so a drop with any (``plain`` False) takes the stdlib.
    if plain:
        try:
            return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
        except TypeError:  # integers past 64 bits, nesting past orjson's depth
            pass
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _has_extras(item: Item) -> bool:
    """Does the item, or anything in it, carry unknown fields (the only place a float can come from)?"""
    models: list[Any] = [item, item.provider, *item.images]
    for rel in item.related:
        models += [rel, rel.provider, *rel.images]
    return any(m is not None and m.model_extra for m in models)
