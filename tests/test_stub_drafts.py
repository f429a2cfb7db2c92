"""Stubs travel as (url, hash) and are built from their related entries where they are written."""

from __future__ import annotations

import hashlib
import json

from tasks.link.records import attach_images, normalize, stub_drafts
from tasks.parse.models import Item
from tasks.shapes import Drop, ImageResult

IMAGE_OK = ImageResult(status="ok", width=10, height=20, http_status=206, content_type="image/png", reason=None)


def test_a_stub_is_its_citation_as_a_record() -> None:
    it = Item.model_validate({
        "title": "Citer", "webUrl": "https://x.test/a",
        "related": [{"title": "Cited", "excerpt": "E", "publishedDateTime": "2023-02-01T21:44:00Z",
                     "webUrl": "https://Y.test/b?utm_source=feed", "type": "article", "quality": 67,
                     "provider": {"name": "PC Magazine", "domain": "pcmag.com", "tier": 1},
                     "images": [{"url": "http://i.test/1.png", "width": 1120, "height": 630, "isCached": True}],
                     "lang": "en"}]})
    n = normalize(it, Drop(key="k", name="007_aa.txt", path="/d/7", size=1, mtime_ns=42))
    assert n["stubs"] == [{"url": "https://y.test/b", "sha256": n["stubs"][0]["sha256"]}]
    attach_images(n, {"http://i.test/1.png": IMAGE_OK})
    (stub,) = stub_drafts(n)
    image = {"url": "http://i.test/1.png", "declared_width": 1120, "declared_height": 630, "is_cached": True,
             **IMAGE_OK}
    assert stub == {
        "url": "https://y.test/b", "stub": True, "sha256": n["stubs"][0]["sha256"], "order_mtime_ns": 42,
        "order_name": "007_aa.txt", "secured": None,
        "body": {"title": "Cited", "excerpt": "E", "category": None, "type": "article", "quality": 67, "heat": None,
                 "published": None, "published_at": "2023-02-01T21:44:00Z",
                 "web_url": "https://Y.test/b?utm_source=feed", "original_url": None, "source_id": None,
                 "provider": {"name": "PC Magazine", "domain": "pcmag.com", "extra": {"tier": 1}}, "topics": [],
                 "extra": {"lang": "en"}, "images": [image], "related": []}}
    # the hash is of the body before the image checks, as the record's
    unchecked = {k: v for k, v in image.items() if k != "reason"} | dict.fromkeys(("status", "width", "height",
                                                                                "http_status", "content_type"))
    before = {**stub["body"], "images": [unchecked]}
    text = json.dumps({"body": before}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert stub["sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_no_related_items_no_stubs() -> None:
    n = normalize(Item.model_validate({"title": "T", "webUrl": "https://x.test/"}),
                  Drop(key="k", name="a.txt", path="/a", size=1, mtime_ns=1))
    assert n["stubs"] == [] and stub_drafts(n) == []
