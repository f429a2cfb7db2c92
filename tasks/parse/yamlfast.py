"""A fast path for the common front matter: block mappings and lists of one-line values, read in Python.

Example::

    fast_tree('title: "Hi"\\nquality: 37\\ntopics:\\n  - AI\\n')  ->  {"title": "Hi", "quality": 37, "topics": ["AI"]}
    fast_tree("title: |\\n  a block scalar\\n")                   ->  None (not a shape read here)

It reads only a small, exactly understood part of YAML, and answers ``None`` for anything else, so the caller
(``tasks.parse.yamlsafe``) goes the libyaml way. What it accepts, it builds exactly as libyaml + ``FrontMatterLoader``
would (``tests/test_yamlfast.py`` holds the two against each other on corpora, on tricky cases and on thousands of
mutated files). Accepted:

- lines indented with spaces; blank lines and comment lines (``#`` first after the indentation) anywhere;
  LF or CRLF line ends;
- ``key: value`` / ``key:`` entries (keys are plain words: letters, digits, ``_``, ``-``, at most 1,000 chars),
  block lists of ``- value`` / ``- key: value`` / ``-`` items, nested by indentation, a list at its key's
  indentation included (``key:\\n- a``);
- values on one line: a double-quoted string with the escapes ``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX`` (JSON's,
  read the same by YAML; no surrogate, no NUL), a single-quoted string, ``[]``, ``{}``, or a plain scalar that
  starts with a letter, a digit, ``~`` or ``-digit``/``-letter`` and holds no ``: `` and no `` #`` and does not end
  with ``:``; a plain scalar's tag comes from ``FrontMatterLoader.resolve`` and its value from the same
  constructors (``true`` is True, ``37`` is 37, timestamps stay text), so the two paths cannot disagree on it.

Refused (``None``): tabs, any character libyaml's reader refuses or reads as a line break (NEL, LS, PS, BOM),
flow collections other than ``[]``/``{}``, anchors, aliases, tags, block scalars, quoted keys, multi-line
scalars, comments after a value, documents markers and directives, and any indentation that does not line up.
"""

from __future__ import annotations

import json
import re
from typing import Any

from yaml.nodes import ScalarNode

# What libyaml's reader accepts (printable), less the tab, the breaks it knows besides \n (\r is handled first;
# NEL, LS, PS) and the BOM: a text with anything else goes the libyaml way.
_UNREAD = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
# str.isprintable (C, ~2x the regex's speed) refuses a superset of what _UNREAD finds (every control, separator,
# surrogate, format and unassigned character), so a printable text needs no regex; one that is not is asked exactly.
# tests/test_yamlfast.py holds the two against each other over every code point.
_KEY_TEXT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,999}")
_DOUBLE = re.compile(r'"(?:[^"\\]|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*"')
_BAD_UNICODE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")  # surrogates, NUL
_SINGLE = re.compile(r"'(?:[^']|'')*'")
_PLAIN_START = re.compile(r"[A-Za-z0-9~]|-[A-Za-z0-9]")

Line = tuple[int, str]  # (indentation, content without it)


class _NotHere(Exception):
    """Not a shape this module reads."""


def fast_tree(text: str, plain: Any, max_depth: int) -> dict[str, Any] | None:
    """The mapping ``text`` holds, or None when it is not a shape read here or nests deeper than ``max_depth``
    (the item mapping is level 1; ``[]`` and ``{}`` count). ``plain(value)`` gives a plain scalar's value (the
    loader's own resolve + construct) or raises ``NotHere``."""
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            return None
        text = text.replace("\r\n", "\n")
    if not text.replace("\n", " ").isprintable() and _UNREAD.search(text):  # isprintable: see _UNREAD
        return None
    # each line that is neither blank nor a comment: (indentation, content without trailing spaces)
    lines = [(len(raw) - len(content), content.rstrip(" ")) for raw in text.split("\n")
             if (content := raw.lstrip(" ")) and content[0] != "#"]
    if not lines:
        return None
    reader = _Reader(lines, plain, max_depth)
    try:
        tree = reader.block(lines[0][0], 1)
    except _NotHere:
        return None
    if reader.at != len(lines) or not isinstance(tree, dict):
        return None
    return tree


NotHere = _NotHere  # what ``plain`` raises for a value it leaves to libyaml


class _Reader:
    __slots__ = ("at", "lines", "max_depth", "plain")

    def __init__(self, lines: list[Line], plain: Any, max_depth: int) -> None:
        self.lines, self.plain, self.max_depth, self.at = lines, plain, max_depth, 0

    def block(self, indent: int, depth: int) -> Any:
        """The mapping or list that starts at the current line, ``depth`` levels down."""
        if depth > self.max_depth:
            raise _NotHere  # libyaml's path measures it and words the refusal
        content = self.lines[self.at][1]
        if content == "-" or content.startswith("- "):
            return self.sequence(indent, depth)
        return self.mapping(indent, depth)

    def mapping(self, indent: int, depth: int) -> dict[str, Any]:
        # The hot loop of the module: entries with a plain or escape-free double-quoted value are read inline.
        out: dict[str, Any] = {}
        lines, count, at = self.lines, len(self.lines), self.at
        while at < count:
            at_indent, content = lines[at]
            if at_indent != indent:
                if at_indent < indent:
                    break
                raise _NotHere
            key, sep, rest = content.partition(": ")
            if not sep:
                if content[-1] != ":":
                    raise _NotHere
                key = content[:-1]
            if key not in _KEYS:
                _check_key(key)
            at += 1
            if not rest:
                self.at = at
                out[key] = self.after_empty(indent, depth, same_indent_list=True)
                at = self.at
                continue
            if rest[0] == " ":
                rest = rest.lstrip(" ")
            value: Any = _MISS
            if at >= count or lines[at][0] <= indent:  # not continued on the next line
                if rest[0] == '"':
                    inner = rest[1:-1]
                    if rest[-1] == '"' and len(rest) > 1 and '"' not in inner and "\\" not in inner:
                        value = inner  # no escapes: the text between the quotes is the value
                else:
                    value = _PLAIN.get(rest, _MISS)
            if value is _MISS:
                self.at = at
                value = self.scalar(rest, indent, depth)
            out[key] = value
        self.at = at
        return out

    def sequence(self, indent: int, depth: int) -> list[Any]:
        out: list[Any] = []
        lines, count = self.lines, len(self.lines)
        while self.at < count:
            at_indent, content = lines[self.at]
            if at_indent != indent or not (content == "-" or content.startswith("- ")):
                break
            if content == "-":
                self.at += 1
                out.append(self.after_empty(indent, depth, same_indent_list=False))
                continue
            rest = content[2:].lstrip(" ")
            if rest == "-" or rest.startswith("- "):
                raise _NotHere  # a list right in a list item
            if _is_entry(rest):
                column = indent + len(content) - len(rest)
                if depth >= self.max_depth:
                    raise _NotHere
                lines[self.at] = (column, rest)  # the item is a mapping whose keys line up at this column
                out.append(self.mapping(column, depth + 1))
            else:
                self.at += 1
                out.append(self.scalar(rest, indent, depth))
        if self.at < count and lines[self.at][0] > indent:
            raise _NotHere
        return out

    def after_empty(self, indent: int, depth: int, same_indent_list: bool) -> Any:
        """The value after ``key:`` or ``-`` with nothing else on the line (in a collection ``depth`` levels
        down): a nested block, or null."""
        if self.at < len(self.lines):
            at_indent, content = self.lines[self.at]
            if at_indent > indent:
                return self.block(at_indent, depth + 1)
            if at_indent == indent and same_indent_list and (content == "-" or content.startswith("- ")):
                return self.block(indent, depth + 1)
        return self.plain("")

    def scalar(self, text: str, indent: int, depth: int) -> Any:
        """A one-line value; the next line must not continue it (deeper indentation)."""
        if self.at < len(self.lines) and self.lines[self.at][0] > indent:
            raise _NotHere  # a multi-line scalar, or a nested block after a value: libyaml decides
        first = text[0]
        if first == '"':
            inner = text[1:-1]
            if text[-1] == '"' and len(text) > 1 and '"' not in inner and "\\" not in inner:
                return inner  # no escapes: the text between the quotes is the value
            if not _DOUBLE.fullmatch(text) or ("\\u" in text and _BAD_UNICODE_ESCAPE.search(text)):
                raise _NotHere
            return json.loads(text)
        if first == "'":
            if not _SINGLE.fullmatch(text):
                raise _NotHere
            return text[1:-1].replace("''", "'")
        if text == "[]" or text == "{}":
            if depth >= self.max_depth:
                raise _NotHere
            return [] if text == "[]" else {}
        if not _PLAIN_START.match(text) or ": " in text or " #" in text or text[-1] == ":":
            raise _NotHere
        value = self.plain(text)
        if len(text) <= 40:  # a plain scalar's value depends on its text alone, and is immutable
            if len(_PLAIN) >= 8192:
                _PLAIN.clear()
            _PLAIN[text] = value
        return value


_MISS = object()
_KEYS: set[str] = set()  # keys already found well formed (bounded: cleared when full)
_PLAIN: dict[str, Any] = {}  # well-formed plain scalars already read -> their values (bounded: cleared when full)


def _check_key(key: str) -> None:
    if not _KEY_TEXT.fullmatch(key):
        raise _NotHere
    if len(_KEYS) >= 4096:
        _KEYS.clear()
    _KEYS.add(key)


def _is_entry(content: str) -> bool:
    """Is this line a ``key: value`` or ``key:`` entry?"""
    key, sep, _ = content.partition(": ")
    if not sep:
        if content[-1] != ":":
            return False
        key = content[:-1]
    return key in _KEYS or _KEY_TEXT.fullmatch(key) is not None


def plain_node(tag: str, value: str) -> ScalarNode:
    """A scalar node for the loader's constructors (they read only ``tag`` and ``value``)."""
    return ScalarNode(tag, value)
