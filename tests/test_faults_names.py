"""The drop folder belongs to strangers: hostile file names and a tampered folder, through `feedworker run`.

- Valid items under names that are not UTF-8, hold newlines and escape sequences, start with dashes, reach
  NAME_MAX, differ only by Unicode normalization...: every one ends as a record or a listed failure within
  seconds, the good drops around them land, nothing is retried in a loop, no log line is forged.
- ``failed/``, ``processed/`` and a dated subfolder swapped for symbolic links out of the folder, and links planted
  at the report's and likely temporary names: nothing is written outside the folder, no planted target changes,
  the refusals are still listed, and the operator is told (log, `feedworker status`, metric).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.names import escape
from tests.conftest import fresh_pg_database
from tests.faults import ledger
from tests.processes import feedworker, free_port, wait_for
from tests.test_run import feedworker_run, stop, user_env
from worker.watching.finalize import report_name

pytestmark = pytest.mark.slow

GOOD = "---\ntitle: {t}\nwebUrl: https://names.test/{u}\n---\nbody\n"
BAD = "---\ntitle: ''\nwebUrl: https://names.test/bad\n---\n"  # refused: title must not be empty
MAX = 255
HOSTILE = [os.fsdecode(n) for n in (
    b"caf\xe9.txt",  # Latin-1, not UTF-8
    b"\xff\xfe\x80\x81.txt",
    b"\x80" * 100 + b".txt",
    b"two\nlines.txt",
    b"fake\n2026-01-01T00:00:00.000+00:00 ERROR feedworker forged line.txt",
    b"\x1b[31mred\x1b[0m.txt",
    b"\x1b]0;window title\x07.txt",
    b"csi \xc2\x9b2J.txt",  # U+009B, the C1 CSI
    "rtl \u202etxt.exe".encode(),
    "zero\u200bwidth\ufeff.txt".encode(),
    "line\u2028separator.txt".encode(),
    b"-rf.txt",
    b"--help.txt",
    b"- dash and space.txt",
    "NFC caf\u00e9.txt".encode(),
    "NFD cafe\u0301.txt".encode(),
    b" leading and trailing spaces .txt ",
    b"back\\slash\\x41.txt",
    b"tab\there cr\rthere.txt",
    b"bell\x07 del\x7f.txt",
    b"quote' \"$(touch PWNED)\" `id` ; %s %n {0}.txt",
    b"[blink]markup[reverse].txt",
    b"n" * (MAX - 4) + b".txt",  # NAME_MAX exactly
    "\u00e9".encode() * 125 + b".txt",  # 254 bytes, two a character
)]
REFUSED = [os.fsdecode(n) for n in (b"bad caf\xe9.txt", b"bad\nnewline\x1b[2J.txt", b"b" * (MAX - 4) + b".txt",
                                    "bad \u202eRTL.txt".encode())]
TOTAL = 20 + len(HOSTILE) + len(REFUSED)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2028\u2029\udc80-\udcff]")


def put(drops: Path, name: str, text: str) -> None:
    """In by rename, as producers do (complete at once)."""
    tmp = drops / f".incoming-{os.getpid()}.part"
    tmp.write_text(text, encoding="utf-8")
    os.rename(tmp, drops / name)


@pytest.fixture
def pg_env() -> Iterator[dict[str, str]]:
    with fresh_pg_database() as url:
        env = user_env(FEEDWORKER_STORE_URL=url, FEEDWORKER_WATCH__REQUEUE_AFTER_SECONDS="120")
        feedworker(env, "migrate")
        yield env


def _put_away(drops: Path) -> bool:
    return not [n for n in os.listdir(drops) if n not in ("processed", "failed") and not (drops / n).is_symlink()]


def test_hostile_names_end_as_records_or_listed_failures_within_seconds(tmp_path: Path,
                                                                         pg_env: dict[str, str]) -> None:
    drops = tmp_path / "drops"
    drops.mkdir()
    (drops / "link\nFORGED \x1b[2J.txt").symlink_to(tmp_path / "nowhere")  # logged, escaped, never followed
    with feedworker_run(tmp_path, pg_env, "-c", "2") as run:
        for i in range(10):
            put(drops, f"good_{i:02d}.txt", GOOD.format(t=f"Good {i}", u=f"good-{i}"))
        for i, name in enumerate(HOSTILE):
            put(drops, name, GOOD.format(t=f"Odd {i}", u=f"odd-{i}"))
        for name in REFUSED:
            put(drops, name, BAD)
        for i in range(10, 20):
            put(drops, f"good_{i:02d}.txt", GOOD.format(t=f"Good {i}", u=f"good-{i}"))
        rows = wait_for(lambda: (r := ledger(pg_env["FEEDWORKER_STORE_URL"])) and len(r) == TOTAL
                        and all(x["state"] != "queued" for x in r) and r, 40)  # far below the requeue's 120 s
        wait_for(lambda: _put_away(drops), 20)
        fails = [json.loads(line) for line in feedworker(pg_env, "failures", "--json").stdout.splitlines()]
        table = feedworker(pg_env, "failures").stdout
        records = json.loads("[" + ",".join(feedworker(pg_env, "export").stdout.splitlines()) + "]")
        stop(run, tmp_path)
    log = (tmp_path / "run.log").read_text(encoding="utf-8", errors="strict")
    assert sorted(r["title"] for r in records) == sorted([f"Good {i}" for i in range(20)]
                                                         + [f"Odd {i}" for i in range(len(HOSTILE))])
    assert sorted(r["name"] for r in rows) == sorted([f"good_{i:02d}.txt" for i in range(20)]
                                                     + [escape(n) for n in HOSTILE + REFUSED])
    assert {f["file"] for f in fails} == {escape(n) for n in REFUSED}
    assert all(f["stage"] == "parse" and "title" in f["reason"] for f in fails)
    assert not _CONTROL.search(table.replace("\n", "").replace("\t", "")), table
    processed = {n for day in (drops / "processed").iterdir() for n in os.listdir(day)}
    assert processed == {f"good_{i:02d}.txt" for i in range(20)} | set(HOSTILE)  # their own names, byte for byte
    failed = set(os.listdir(drops / "failed"))
    assert failed == set(REFUSED) | {report_name(n) for n in REFUSED}  # the long name's report is shortened
    for name in REFUSED:
        report = json.loads((drops / "failed" / report_name(name)).read_text(encoding="utf-8"))
        assert report["file"] == escape(name) and report["stage"] == "parse"
    assert "still failing" not in log and "re-enqueueing" not in log  # no retry loop
    assert "\nFORGED" not in log and "\x1b" not in log and not _CONTROL.search(log.replace("\n", ""))
    assert "link\\u000aFORGED \\u001b[2J.txt" in log  # the symlink was said, escaped
    assert not (tmp_path / "PWNED").exists()


def _snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes() if p.is_file() else b"", p.lstat().st_mtime_ns)
            for f in folders for p in sorted(f.rglob("*"))}


def _days() -> list[str]:
    today = datetime.now(UTC)
    return [(today + timedelta(days=d)).strftime("%Y-%m-%d") for d in (0, 1)]  # the day may turn meanwhile


def _status(env: dict[str, str], cwd: Path) -> tuple[dict[str, object], str]:
    data = json.loads(feedworker(env, "status", "--json", check=False, cwd=cwd).stdout)
    return data, feedworker(env, "status", check=False, cwd=cwd).stdout


def _gauge(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return float(re.search(r"^feedworker_reserved_folders_tampered (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_reserved_folders_swapped_for_links_are_never_followed(tmp_path: Path) -> None:
    drops, out = tmp_path / "drops", tmp_path / "outside"
    out_failed, out_day, out_processed = out / "failed", out / "day", out / "processed"
    for folder in (out_failed, out_day, out_processed):
        folder.mkdir(parents=True)
        (folder / "precious.txt").write_bytes(b"never touch me")
    (drops / "processed").mkdir(parents=True)
    (drops / "failed").symlink_to(out_failed)
    for day in _days():
        (drops / "processed" / day).symlink_to(out_day)
    before = _snapshot(out)
    port = free_port()
    env = user_env(FEEDWORKER_METRICS_PORT=str(port))
    with feedworker_run(tmp_path, env, "-c", "1") as run:
        for i in range(3):
            put(drops, f"bad_{i}.txt", BAD)
            put(drops, f"good_{i}.txt", GOOD.format(t=f"Good {i}", u=f"good-{i}"))
        wait_for(lambda: len(_failures(env, tmp_path)) == 3 and _gauge(port) == 2, 30)
        data, text = _status(env, tmp_path)
        tampered = {t["folder"]: t["why"] for t in data["tampered_folders"]}  # type: ignore[attr-defined]
        assert str(drops / "failed") in tampered and "symbolic link" in tampered[str(drops / "failed")]
        assert "TAMPERED" in text
        assert _snapshot(out) == before  # phase 1: nothing written through failed/ or the dated link

        # processed/ itself swapped for a link; more drops, refused and good
        (drops / "processed").rename(tmp_path / "old-processed")
        (drops / "processed").symlink_to(out_processed)
        put(drops, "bad_3.txt", BAD)
        put(drops, "good_3.txt", GOOD.format(t="Good 3", u="good-3"))
        wait_for(lambda: len(_failures(env, tmp_path)) == 4, 30)
        assert _snapshot(out) == before

        # failed/ a real folder again, with links planted at the report's and likely temporary names
        (drops / "failed").unlink()
        (drops / "failed").mkdir()
        for i in range(4):
            for planted in (f"bad_{i}.txt.error.json", f".bad_{i}.txt.error.json.{run.pid}.tmp",
                            f".bad_{i}.txt.error.json.1.tmp"):
                (drops / "failed" / planted).symlink_to(out_failed / "precious.txt")
        wait_for(lambda: all((drops / "failed" / f"bad_{i}.txt").exists() for i in range(4)), 20)
        wait_for(lambda: _gauge(port) == 1, 10)  # processed/ is still a link
        assert _snapshot(out) == before
        stop(run, tmp_path)
    for i in range(4):  # the planted links were replaced by real reports, their target untouched
        report = drops / "failed" / f"bad_{i}.txt.error.json"
        assert not report.is_symlink() and json.loads(report.read_text())["file"] == f"bad_{i}.txt"
    assert {f"good_{i}.txt" for i in range(4)} <= set(os.listdir(drops))  # left in place, outcomes in the store
    assert _snapshot(out) == before
    log = (tmp_path / "run.log").read_text()
    assert log.count(f"reserved folder {drops / 'failed'} is a symbolic link") == 1  # said once, not each poll
    assert f"reserved folder {drops / 'failed'} is fine again" in log


def _failures(env: dict[str, str], cwd: Path) -> list[dict[str, str]]:
    out = feedworker(env, "failures", "--json", cwd=cwd).stdout
    return [json.loads(line) for line in out.splitlines()]

