"""A small drop corpus for end-to-end tests, with its answers: items, stubs, links and image outcomes."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Answers:
    titles: set[str] = field(default_factory=set)
    stubs: set[str] = field(default_factory=set)  # canonical URLs known only from citations
    links: dict[str, set[str]] = field(default_factory=dict)  # title -> titles of resolved related items
    images: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)  # url -> status, w, h
    refused: dict[str, str] = field(default_factory=dict)  # file name -> a word the failure reason must hold


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def write_corpus(folder: Path, base: str, count: int = 12) -> Answers:
    """``count`` items (each citing the next, the last citing a stub), one duplicate, one update, two refusals."""
    folder.mkdir(parents=True, exist_ok=True)
    ans = Answers()
    secured = base64.b64encode(b"k" * 48).decode() + ";" + base64.b64encode(b"i" * 16).decode()
    files: list[tuple[str, str]] = []
    for i in range(count):
        url = f"https://news.test/story-{i}/"
        nxt = f"https://NEWS.test:443/story-{i + 1}/?utm_source=feed" if i < count - 1 else f"https://else.test/{i}"
        img = f"{base}/ok/{40 + i}/{30 + i}/i{i}.png" if i % 4 else f"{base}/status/404/i{i}.png"
        ans.images[img] = ("ok", 40 + i, 30 + i) if i % 4 else ("broken", None, None)
        rel_img = f"{base}/html/r{i}.png"
        ans.images[rel_img] = ("not_image", None, None)
        title = f"Story {i} café"
        text = "\n".join([
            "---", f"title: {_q(title)}", f"webUrl: {_q(url)}", "quality: 50", "published: true",
            "publishedDateTime: 2023-02-01T10:00:00Z", "provider: {name: Test, domain: news.test}",
            "topics: [AI]", "images:", f"  - {{url: {_q(img)}, width: 10, height: 10, isCached: true}}",
            "related:", f"  - title: Cited {i}", f"    webUrl: {_q(nxt)}", f"    images: [{{url: {_q(rel_img)}}}]",
            f"secured: {_q(secured)}", "---", "body text", ""])
        files.append((f"{i:03d}_{i:016x}.txt", text))
        ans.titles.add(title)
        ans.links[title] = {f"Story {i + 1} café"} if i < count - 1 else set()
    ans.stubs.add(f"https://else.test/{count - 1}")
    files.append((f"{count:03d}_{0:016x}.txt", files[0][1]))  # an exact duplicate under another name
    updated = files[1][1].replace("Story 1 café", "Story 1 café (updated)")
    files.append((f"{count + 1:03d}_{1:016x}.txt", updated))  # a later, changed version
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
