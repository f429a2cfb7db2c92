"""Split a drop's bytes into its YAML front matter, as the common front-matter readers do.

Example::

    split_front_matter(b"---\\ntitle: Hi\\n---\\nbody\\n").text  ->  "title: Hi\\n"

The rules (docs/format.md, as Jekyll, Hugo and python-frontmatter read it):

- the first line is ``---``; the next line that is ``---`` closes the front matter, even when a body with more
  ``---`` lines follows; a fence line may carry trailing spaces or tabs; the closing fence may be the last line
  of the file with no newline;
- LF or CRLF line endings; one leading UTF-8 byte order mark is skipped;
- the front matter must be UTF-8 (a refusal says at which byte). The body is not read: nothing is kept of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_OPENING = re.compile(rb"---[ \t]*\r?\n")
_FENCE_TAIL = re.compile(rb"[ \t]*\r?")  # what may follow "---" on a fence line


class FrontMatterError(ValueError):
    """The bytes hold no readable front matter. ``reason`` is the sentence a person acts on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FrontMatter:
    """The YAML between the fences: its bytes, its text, and where it sits in the file (for messages)."""

    raw: bytes
    text: str
    start: int  # byte offset of the YAML in the file
    first_line: int  # 1-based line number of the YAML's first line in the file


def split_front_matter(data: bytes) -> FrontMatter:
    """The front matter of a drop file, or ``FrontMatterError`` saying why there is none."""
    if not data:
        raise FrontMatterError("the file is empty")
    start = len(_BOM) if data.startswith(_BOM) else 0
    opening = _OPENING.match(data, start)
    if opening is None:
        raise FrontMatterError(_why_no_opening(data, start))
    begin = opening.end()
    end = _closing_fence(data, begin)
    raw = data[begin:end]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = begin + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise FrontMatterError(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {offset} (line {line})"
        ) from None
    return FrontMatter(raw=raw, text=text, start=begin, first_line=2)


def _closing_fence(data: bytes, begin: int) -> int:
    """Where the closing fence line starts (the YAML ends there); the first ``---`` line after ``begin``."""
    search_from = begin - 1  # the newline that ends the opening fence: a closing fence may follow at once
    while True:
        newline = data.find(b"\n---", search_from)
        if newline < 0:
            raise FrontMatterError("the front matter is not closed: no '---' line after the opening '---'")
        tail_start = newline + 4
        tail_end = data.find(b"\n", tail_start)
        if tail_end < 0:
            tail_end = len(data)
        if _FENCE_TAIL.fullmatch(data, tail_start, tail_end):
            return newline + 1
        search_from = tail_start


def _why_no_opening(data: bytes, start: int) -> str:
    if data.startswith(_UTF16_BOMS):
        return "the file is UTF-16; drops must be UTF-8 text starting with a '---' line"
    if not data[start:].strip():
        return "the file holds only blank space: no front matter"
    if data.startswith(b"---", start) and _FENCE_TAIL.fullmatch(data, start + 3):
        return "the front matter is not closed: no '---' line after the opening '---'"
    return "no front matter: the first line must be '---'"
