"""Front-matter splitting (tasks.parse.frontmatter): the fence rules of docs/format.md, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.parse.frontmatter import FrontMatterError, split_front_matter

SEED = Path(__file__).parent / "data" / "drops" / "000_fb3687fbf0a8c61d.txt"

# (case, file bytes, the YAML text expected between the fences)
ACCEPTED = [
    ("plain", b"---\ntitle: a\n---\n", "title: a\n"),
    ("no body, closing fence at EOF without newline", b"---\ntitle: a\n---", "title: a\n"),
    ("body after the closing fence", b"---\ntitle: a\n---\nsome body\n", "title: a\n"),
    ("body with more fences: the first one closes", b"---\ntitle: a\n---\nbody\n---\nmore: x\n---\n", "title: a\n"),
    ("trailing spaces and tabs on both fences", b"--- \t\ntitle: a\n---  \n", "title: a\n"),
    ("trailing spaces on a closing fence at EOF", b"---\ntitle: a\n---   ", "title: a\n"),
    ("CRLF line endings", b"---\r\ntitle: a\r\nq: 1\r\n---\r\nbody\r\n", "title: a\r\nq: 1\r\n"),
    ("CRLF, closing fence at EOF", b"---\r\ntitle: a\r\n---", "title: a\r\n"),
    ("CRLF with trailing spaces", b"--- \r\ntitle: a\r\n--- \r\n", "title: a\r\n"),
    ("UTF-8 byte order mark", b"\xef\xbb\xbf---\ntitle: a\n---\n", "title: a\n"),
    ("BOM and CRLF", b"\xef\xbb\xbf---\r\ntitle: a\r\n---\r\n", "title: a\r\n"),
    ("empty front matter", b"---\n---\n", ""),
    ("empty front matter at EOF", b"---\n---", ""),
    ("lines that only look like fences stay YAML", b"---\na: |\n  ----\n  --- x\n  x---\n---\n",
     "a: |\n  ----\n  --- x\n  x---\n"),
    ("an indented fence is YAML, not a fence", b"---\na: |\n   ---\n---\n", "a: |\n   ---\n"),
    ("unicode text", "---\ntitle: café 東京\n---\n".encode(), "title: café 東京\n"),
]


@pytest.mark.parametrize(("case", "data", "text"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(case: str, data: bytes, text: str) -> None:
    front = split_front_matter(data)
    assert front.text == text
    assert front.raw == text.encode()
    assert front.first_line == 2
    assert data[front.start : front.start + len(front.raw)] == front.raw


def test_seed() -> None:
    front = split_front_matter(SEED.read_bytes())
    assert front.text.startswith("category: news\n")
    assert front.text.endswith('JtQtSI/GKvSP0uK3eEHwlA=="\n')
    assert front.start == 4


def test_offset_counts_the_bom() -> None:
    assert split_front_matter(b"\xef\xbb\xbf---\ntitle: a\n---\n").start == 7


# (case, file bytes, words the reason must hold)
REFUSED = [
    ("empty file", b"", ["empty"]),
    ("blank file", b"  \n\n", ["blank", "no front matter"]),
    ("no opening fence", b"title: a\n---\n", ["first line must be '---'"]),
    ("text before the opening fence", b"\n---\ntitle: a\n---\n", ["first line must be '---'"]),
    ("content on the opening fence line", b"--- title: a\n---\n", ["first line must be '---'"]),
    ("four dashes are no fence", b"----\ntitle: a\n----\n", ["first line must be '---'"]),
    ("unclosed", b"---\ntitle: a\n", ["not closed"]),
    ("unclosed: only look-alike fences", b"---\ntitle: a\n----\n--- x\n", ["not closed"]),
    ("a lone opening fence", b"---", ["not closed"]),
    ("a lone opening fence and newline", b"---\n", ["not closed"]),
    ("UTF-16", "---\ntitle: a\n---\n".encode("utf-16"), ["UTF-16"]),
    ("invalid UTF-8", b"---\ntitle: caf\xe9\n---\n", ["UTF-8", "0xe9", "byte offset 14", "line 2"]),
    ("invalid UTF-8 further down", b"---\ntitle: a\nexcerpt: \xff\xfe\n---\n",
     ["UTF-8", "0xff", "byte offset 22", "line 3"]),
    ("invalid UTF-8 after a BOM", b"\xef\xbb\xbf---\ntitle: \xc3\n---\n", ["byte offset 14", "line 2"]),
    ("truncated UTF-8 sequence", b"---\ntitle: \xe6\x9d\n---\n", ["UTF-8", "byte offset 11"]),
    ("UTF-8 encoded surrogate", b"---\ntitle: \xed\xa0\x80\n---\n", ["UTF-8", "byte offset 11"]),
]


@pytest.mark.parametrize(("case", "data", "words"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(case: str, data: bytes, words: list[str]) -> None:
    with pytest.raises(FrontMatterError) as caught:
        split_front_matter(data)
    for word in words:
        assert word in caught.value.reason


def test_body_is_not_read() -> None:
    """Only the front matter must be UTF-8: the body is not kept, so it is not judged."""
    assert split_front_matter(b"---\ntitle: a\n---\n\xff\xfe binary body\x00").text == "title: a\n"
