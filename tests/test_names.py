"""Hostile file names as text: one reversible escaped form in the ledger, logs, `status`, `failures` and reports,
and no control character ever reaching a log line or a terminal unescaped."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from tasks.names import display, escape, escaped_path, os_path, unescape
from tasks.shapes import Drop, Failure
from tasks.store.ledger import Store
from worker.cli import main
from worker.observing import status as status_mod
from worker.observing.logs import JsonFormatter, TextFormatter

HOSTILE = [
    os.fsdecode(b"caf\xe9.txt"),  # Latin-1, not UTF-8
    os.fsdecode(b"\xff\xfe\x80.txt"),
    "two\nlines.txt",
    "fake\n2026-01-01T00:00:00.000+00:00 ERROR forged line.txt",
    "\x1b[31mred\x1b[0m\x1b]0;title\x07.txt",  # ANSI colour and a window-title escape
    "csi\x9b2J.txt",  # C1 control: CSI on some terminals
    "rtl\u202etxt.exe",  # right-to-left override
    "zero\u200bwidth\ufeff.txt",
    "para\u2029sep\u2028.txt",
    "tab\there\r.txt",
    "back\\slash\\x41.txt",  # looks like an escape: must stay reversible
    "-rf --help.txt",
    "[blink]markup[reverse] [link=http:x]y.txt",
    "NFC caf\u00e9.txt",
    "NFD cafe\u0301.txt",
    "emoji 🚀 👩\u200d💻 漢字 é.txt",
    "a" * 251 + ".txt",
    "\U000e0041 tag char.txt",
]
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff\udc80-\udcff]")


@pytest.mark.parametrize("name", HOSTILE)
def test_escape_is_reversible_valid_text_and_printable(name: str) -> None:
    shown = escape(name)
    assert unescape(shown) == name
    shown.encode("utf-8")  # strict: no lone surrogate left
    assert not _UNSAFE.search(shown), shown
    assert display(shown) == shown  # already safe: shown the same way everywhere
    assert display(name) == shown or "\\" in name  # raw text shows the same, bar a literal backslash


def test_examples_of_the_escaped_form() -> None:
    assert escape(os.fsdecode(b"caf\xe9.txt")) == "caf\\xe9.txt"
    assert escape("a\nb") == "a\\u000ab"
    assert escape("rtl\u202e") == "rtl\\u202e"
    assert escape("a\\b") == "a\\\\b"
    assert escape("plain name é 漢字.txt") == "plain name é 漢字.txt"  # nearly every name is its own form
    assert escape("caf\u00e9") != escape("cafe\u0301")  # NFC/NFD twins stay two names
    assert unicodedata.normalize("NFC", unescape(escape("cafe\u0301"))) == "caf\u00e9"
    assert display("reason: a\\b\x1b[2J") == "reason: a\\b\\u001b[2J"  # backslashes untouched, ESC escaped


def test_paths_round_trip_through_the_escaped_form(tmp_path: Path) -> None:
    for name in HOSTILE:
        path = tmp_path / name
        path.write_bytes(b"x")
        assert os_path(escaped_path(path)) == path
        assert os_path(escaped_path(path)).read_bytes() == b"x"


def _record(msg: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("feedworker.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    if exc:
        try:
            raise ValueError("cannot read /drops/a\nFORGED line")
        except ValueError:
            import sys

            record.exc_info = sys.exc_info()
    return record


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_cannot_forge_a_text_log_line(name: str) -> None:
    line = TextFormatter().format(_record("cannot put away %s yet", name, file=name, reason="x\x1b[2J"))
    assert "\n" not in line and not _UNSAFE.search(line), line
    assert escape(name).replace("\\\\", "\\") in line or escape(name) in line
    out = json.loads(JsonFormatter().format(_record("cannot put away %s yet", name, file=name)))
    assert not _UNSAFE.search(out["msg"] + out["file"])
    assert out["file"] == display(name)


def test_a_traceback_keeps_its_lines_but_not_the_names_breaks() -> None:
    text = TextFormatter().format(_record("failed", exc=True))
    assert text.count("\n") >= 3  # the traceback is still readable
    assert "a\\u000aFORGED" in text and "\nFORGED" not in text


def _render(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True, color_system="standard")
    console.print(status_mod._failures_table(data["recent_failures"]))
    console.print(status_mod._summary_table(data, 600))
    return buf.getvalue()


def test_status_tables_escape_names_and_never_read_them_as_markup() -> None:
    reason = "bad\x1b]0;owned\x07 reason"
    fails: list[dict[str, Any]] = [{"file": escape(n), "stage": "parse", "reason": reason, "at": None}
                                   for n in HOSTILE[:13]]
    data = {"broker_reachable": False, "store_reachable": False, "store_error": "x", "recent_failures": fails,
            "tampered_folders": [{"root": "/d", "folder": "/d/failed\x1b[2J", "why": "is a symbolic link"}]}
    out = _render(data)
    for seq in re.findall(r"\x1b[^m]*m", out):  # rich's own colours are the only escape sequences
        assert re.fullmatch(r"\x1b\[[0-9;]*m", seq), repr(seq)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert not _UNSAFE.search(plain.replace("\n", "")), repr(plain)
    for f in fails:  # each on one line of its own: nothing broke a row
        assert sum(f["file"] in line for line in plain.splitlines()) == 1, f["file"]
    assert "[blink]markup[reverse]" in plain  # shown as written, not taken as markup
    assert "caf\\xe9.txt" in plain and "\\u001b]0;owned\\u0007" in plain
    assert "TAMPERED: /d/failed\\u001b[2J is a symbolic link" in plain


def test_failures_lists_escaped_names_on_a_terminal_and_in_json(store: Store, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    rows = [Drop(key=f"k{i}", name=escape(n), path=escaped_path(Path("/drops") / n), size=1, mtime_ns=i)
            for i, n in enumerate(HOSTILE)]
    store.register_drops(rows, "run", "watch")
    store.publish([], [Failure(**r, stage="read", reason="refused\x1b[2J\u202e") for r in rows])
    monkeypatch.setenv("FEEDWORKER_STORE_URL", store.url)
    from worker.settings import get_settings

    get_settings.cache_clear()
    try:
        text = CliRunner().invoke(main, ["failures"], catch_exceptions=False).output
        lines = CliRunner().invoke(main, ["failures", "--json"], catch_exceptions=False).output.splitlines()
    finally:
        get_settings.cache_clear()
    assert len(text.splitlines()) == len(HOSTILE) and not _UNSAFE.search(text.replace("\n", "").replace("\t", ""))
    listed = [json.loads(line) for line in lines]
    assert sorted(f["file"] for f in listed) == sorted(escape(n) for n in HOSTILE)
    assert {os_path(f["path"]).name for f in listed} == set(HOSTILE)  # the path leads back to the real file
    assert all(f["reason"] == "refused\\u001b[2J\\u202e" for f in listed)
