"""File names as text: one reversible escaped form for the ledger, logs, terminals and reports.

A file name on Linux is any bytes but ``/`` and NUL. Python hands undecodable bytes over as lone surrogates
(``os.fsdecode``'s ``surrogateescape``), which no database text column, JSON encoder or terminal takes; and a
valid name may hold newlines, escape sequences or bidi overrides that forge log lines and terminal output. So a
name is stored and shown in one escaped form, made by :func:`escape` and undone by :func:`unescape`:

- a byte that is not UTF-8 -> ``\\xHH`` (``caf\\xe9.txt`` for Latin-1 ``café.txt``);
- a control or invisible formatting character (C0, DEL, C1, bidi overrides, zero-width, line and paragraph
  separators) -> ``\\uHHHH`` (``\\U00HHHHHH`` above the BMP): ``a\\u000ab.txt`` for a name with a newline;
- a backslash -> ``\\\\``, so that the form is reversible;
- everything else (letters of every script, spaces, emoji, their joiners) as it is.

Names without backslashes or such characters (nearly all) are their own escaped form. :func:`display` makes any
other untrusted text (a reason, an exception message) safe for one log line or a terminal cell in the same way,
without touching backslashes: ``display(escape(name)) == escape(name)``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")  # zero-width (non-)joiners: part of emoji and scripts, they forge nothing
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _unsafe(char: str) -> bool:
    if char.isprintable() or char in _JOINERS:  # fast path: printable covers letters, spaces, emoji
        return False
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _code(char: str) -> str:
    point = ord(char)
    if 0xDC80 <= point <= 0xDCFF:  # surrogateescape: an undecodable byte of the name
        return f"\\x{point - 0xDC00:02x}"
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def escape(name: str) -> str:
    """The escaped form of a name (or path) as Python got it from the OS: valid UTF-8, printable, reversible."""
    if name.isprintable() and "\\" not in name:
        return name
    return "".join("\\\\" if c == "\\" else _code(c) if _unsafe(c) else c for c in name)


def unescape(text: str) -> str:
    """The OS name (with surrogateescape) an escaped form stands for: ``unescape(escape(n)) == n``."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_unescape_one, text)


def _unescape_one(match: re.Match[str]) -> str:
    code = match.group(1)
    if code == "\\":
        return "\\"
    if code[0] == "x":
        return chr(0xDC00 + int(code[1:], 16))
    return chr(int(code[1:], 16))


def display(text: str) -> str:
    """Any untrusted text, safe for a log line or a terminal: the same escapes, backslashes left alone."""
    if text.isprintable():
        return text
    return "".join(_code(c) if _unsafe(c) else c for c in text)


def escaped_path(path: Path | str) -> str:
    """A file system path in its escaped form, for the ledger's ``path`` and ``final_path``."""
    return escape(os.fspath(path))


def os_path(text: str) -> Path:
    """The file system path an escaped ``path`` of the ledger stands for."""
    return Path(unescape(text))
