"""The items of a generated corpus (:mod:`tools.corpus`): their fields, their images, their citations, their text.

Every random choice is drawn from one ``random.Random`` in a fixed order, so a seed gives the same corpus on
every machine (and figures measured on it can be compared).
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

PROVIDERS = [
    ("BGR", "bgr.com"), ("PC Magazine", "pcmag.com"), ("SiliconANGLE", "siliconangle.com"),
    ("The Verge", "theverge.com"), ("Ars Technica", "arstechnica.com"), ("Reuters", "reuters.com"),
    ("TechCrunch", "techcrunch.com"), ("Wired", "wired.com"), ("Engadget", "engadget.com"),
    ("ZDNET", "zdnet.com"), ("Le Monde", "lemonde.fr"), ("Heise", "heise.de"),
]
TOPICS = ["AI", "Streaming", "Security", "Cloud", "Chips", "Gaming", "Policy", "Science", "Mobile", "Space"]
SECTIONS = ["news", "entertainment", "tech", "business", "science", "2023/02/01"]
WORDS = ["netflix", "anime", "ai", "art", "backgrounds", "labor", "shortage", "oracle", "cloud", "chip", "export",
         "model", "open", "source", "privacy", "regulators", "startup", "funding", "quantum", "battery", "satellite",
         "launch", "émission", "données", "café", "naïve", "résumé", "東京", "news", "review", "leak", "update",
         "patch", "benchmark"]
SIZES = [(1920, 1080), (1200, 630), (1120, 630), (800, 600), (640, 360), (300, 300)]
# image kinds of the default mix and their weights (per cent)
KINDS = ["ok", "shared", "mismatch", "404", "500", "410", "html", "liar", "slow", "redirect"]
WEIGHTS = [70, 8, 5, 3, 1, 1, 2, 1, 4, 5]
Provider = tuple[str, str]
Image = dict[str, Any]  # the drop's image entry: url, width, height, isCached


@dataclass(frozen=True)
class Cited:
    """A related entry: another item of the corpus (in another spelling) or one that never arrives (a stub)."""

    title: str
    excerpt: str
    published_at: str
    web_url: str
    provider: Provider
    quality: int
    images: list[Image]


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    excerpt: str
    published_at: str
    web_url: str
    original_url: str
    quality: int
    heat: int
    published: bool
    provider: Provider
    topics: list[str]
    images: list[Image]
    secured: str
    related: list[Cited] = field(default_factory=list)

    def changed(self, title: str) -> Item:
        """A later version: a new title, and published."""
        return replace(self, title=title, published=True)


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def url_variant(rng: random.Random, url: str) -> str:
    """Another spelling of the same item's URL, which canonicalization must undo."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    spellings = {
        "utm": lambda: f"{url}?utm_source=feed&utm_medium=rss&utm_campaign=c{rng.randint(1, 99)}",
        "fragment": lambda: f"{url}#comments",
        "case": lambda: f"{scheme}://{host.upper()}/{path}",
        "port": lambda: f"{scheme}://{host}:443/{path}",
        "http": lambda: f"http://{rest}",
        "fbclid": lambda: f"{url}?fbclid=IwAR{rng.getrandbits(40):010x}",
        "same": lambda: url,
    }
    return spellings[rng.choice(list(spellings))]()


class Generator:
    """Items, their images and citations; ``images`` collects each image URL's answer."""

    def __init__(self, rng: random.Random, base: str, mix: str) -> None:
        self.rng, self.base, self.mix = rng, base.rstrip("/"), mix
        self.images: dict[str, dict[str, Any]] = {}
        self.shared: list[tuple[str, int, int]] = []

    def item(self, i: int, t0: datetime) -> Item:
        rng = self.rng
        prov = rng.choice(PROVIDERS)
        slug = "-".join(rng.choice(WORDS).encode("ascii", "ignore").decode() or "x" for _ in range(5)) + f"-{i}"
        url = f"https://{prov[1]}/{rng.choice(SECTIONS)}/{slug}/"
        return Item(
            id=f"{rng.getrandbits(64):016x}", title=f"{sentence(rng, rng.randint(5, 12))} #{i}",
            excerpt=sentence(rng, rng.randint(15, 60)) + ".",
            published_at=(t0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"), web_url=url,
            original_url=url if rng.random() < 0.8 else url_variant(rng, url), quality=rng.randint(0, 100),
            heat=rng.choice([-1, 0, 3, 17, 250]), published=rng.random() < 0.5, provider=prov,
            topics=rng.sample(TOPICS, rng.randint(1, 3)),
            images=[self.image() for _ in range(rng.choice([0, 1, 1, 1, 2]))],
            secured=base64.b64encode(rng.randbytes(16 * rng.randint(4, 30))).decode() + ";"
            + base64.b64encode(rng.randbytes(16)).decode())

    def image(self) -> Image:
        rng = self.rng
        w, h = rng.choice(SIZES)
        name = f"{rng.getrandbits(48):012x}.png"
        kind = "ok" if self.mix == "clean" else rng.choices(KINDS, WEIGHTS)[0]
        if kind == "shared" and self.shared:
            url, w, h = rng.choice(self.shared)
            return {"url": url, "width": w, "height": h, "isCached": True}
        url, real, status = self._served(kind, w, h, name)
        if kind in ("ok", "shared"):
            self.shared.append((url, w, h))
        self.images[url] = {"status": status, "width": real[0] if real else None,
                            "height": real[1] if real else None, "declared": [w, h]}
        return {"url": url, "width": w, "height": h, "isCached": rng.random() < 0.5}

    def _served(self, kind: str, w: int, h: int, name: str) -> tuple[str, tuple[int, int] | None, str]:
        """The image host's URL for ``kind``, the real size it serves and the status a checker must find."""
        b = self.base
        if kind in ("ok", "shared"):
            return f"{b}/ok/{w}/{h}/{name}", (w, h), "ok"
        if kind == "mismatch":
            return f"{b}/ok/{w // 2}/{h // 2}/{name}", (w // 2, h // 2), "ok"
        if kind in ("404", "500", "410"):
            return f"{b}/status/{kind}/{name}", None, "broken"
        if kind in ("html", "liar"):
            path = "html" if kind == "html" else f"liar/{w}/{h}"
            return f"{b}/{path}/{name}", None, "not_image"
        path = f"slow/200/{w}/{h}" if kind == "slow" else f"redirect/2/{w}/{h}"
        return f"{b}/{path}/{name}", (w, h), "ok"

    def cite(self, items: list[Item]) -> tuple[set[str], dict[str, list[str]]]:
        """Give each item 0-4 related entries; return the stub URLs and, per item, the items it cites."""
        rng = self.rng
        stubs: set[str] = set()
        cites: dict[str, list[str]] = {}
        for it in items:
            cites[it.web_url] = []
            for _ in range(rng.choice([0, 1, 2, 2, 3, 4])):
                if rng.random() < 0.7 and len(items) > 1:
                    other = rng.choice(items)
                    if other is it:
                        continue
                    ref, title, prov, pub = url_variant(rng, other.web_url), other.title, other.provider, \
                        other.published_at
                    cites[it.web_url].append(other.web_url)
                else:
                    prov = rng.choice(PROVIDERS)
                    ref = f"https://{prov[1]}/elsewhere/{rng.getrandbits(40):010x}/"
                    title, pub = sentence(rng, 7), "2023-02-01T00:00:00Z"
                    stubs.add(ref)
                it.related.append(Cited(title, sentence(rng, 20), pub, ref, prov, rng.randint(0, 100),
                                        [self.image() for _ in range(rng.choice([0, 1]))]))
        return stubs, cites


def q(s: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(s, ensure_ascii=False)


def _images(images: list[Image], pad: str) -> list[str]:
    out: list[str] = []
    for im in images:
        out += [f"{pad}- url: {q(im['url'])}", f"{pad}  width: {im['width']}", f"{pad}  height: {im['height']}",
                f"{pad}  isCached: {str(im['isCached']).lower()}"]
    return out


def render(it: Item) -> str:
    """The drop file of an item, in the producers' block style."""
    out = ["---", "category: news", f"title: {q(it.title)}", f"excerpt: {q(it.excerpt)}",
           f"publishedDateTime: {it.published_at}", f"originalUrl: {q(it.original_url)}",
           f"webUrl: {q(it.web_url)}", "type: article", f"quality: {it.quality}", f"heat: {it.heat}",
           f"published: {str(it.published).lower()}", "", "provider:", f"  name: {it.provider[0]}",
           f"  domain: {it.provider[1]}", "", "topics:", *(f"  - {t}" for t in it.topics)]
    out += ["", "images:", *_images(it.images, "  ")] if it.images else ["", "images: []"]
    out += ["", "related:"] if it.related else ["", "related: []"]
    for r in it.related:
        out += [f"  - title: {q(r.title)}", f"    excerpt: {q(r.excerpt)}", f"    publishedDateTime: {r.published_at}",
                f"    webUrl: {q(r.web_url)}", "    type: article", "    provider:", f"      name: {r.provider[0]}",
                f"      domain: {r.provider[1]}", f"    quality: {r.quality}"]
        if r.images:
            out += ["    images:", *_images(r.images, "      ")]
    return "\n".join([*out, "", f"secured: {q(it.secured)}", "---", ""])
