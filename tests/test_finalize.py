"""Putting finished drops away: processed/ by date, failed/ with its error report, keep, delete, no overwrites."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from worker.watching.finalize import finalize, find_moved, move_no_clobber

FINISHED = datetime(2024, 3, 9, 23, 59, tzinfo=UTC)


def drop(root: Path, rel: str, text: str = "---\ntitle: x\n---\n", **row: Any) -> dict[str, Any]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    st = path.stat()
    return {"key": rel, "name": path.name, "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "state": "published", "stage": None, "reason": None, "finished_at": FINISHED, "attempts": 1, **row}


def test_published_moves_to_processed_by_finish_date(tmp_path: Path) -> None:
    row = drop(tmp_path, "a.txt")
    out = finalize(tmp_path, row, "move")
    assert out.action == "moved"
    assert out.final_path == tmp_path / "processed" / "2024-03-09" / "a.txt"
    assert out.final_path.read_text() == "---\ntitle: x\n---\n"
    assert not (tmp_path / "a.txt").exists()


def test_nested_drop_keeps_its_subfolder(tmp_path: Path) -> None:
    row = drop(tmp_path, "feeds/bgr/a.txt", state="unchanged")
    out = finalize(tmp_path, row, "move")
    assert out.final_path == tmp_path / "processed" / "2024-03-09" / "feeds" / "bgr" / "a.txt"


def test_failed_moves_to_failed_with_error_report(tmp_path: Path) -> None:
    row = drop(tmp_path, "bad.txt", state="failed", stage="parse", reason="title: must not be empty")
    out = finalize(tmp_path, row, "move")
    assert out.final_path == tmp_path / "failed" / "bad.txt"
    report = json.loads((tmp_path / "failed" / "bad.txt.error.json").read_text())
    assert report["stage"] == "parse"
    assert report["reason"] == "title: must not be empty"
    assert report["file"] == "bad.txt"
    assert report["failed_at"] == "2024-03-09T23:59:00.000Z"


def test_name_clash_never_overwrites(tmp_path: Path) -> None:
    first = finalize(tmp_path, drop(tmp_path, "a.txt", "one"), "move").final_path
    second = finalize(tmp_path, drop(tmp_path, "a.txt", "two!"), "move").final_path
    third = finalize(tmp_path, drop(tmp_path, "a.txt", "three"), "move").final_path
    day = tmp_path / "processed" / "2024-03-09"
    assert (first, second, third) == (day / "a.txt", day / "a-1.txt", day / "a-2.txt")
    assert [(day / n).read_text() for n in ("a.txt", "a-1.txt", "a-2.txt")] == ["one", "two!", "three"]
    bad1 = finalize(tmp_path, drop(tmp_path, "b", "x", state="failed", stage="read"), "move").final_path
    bad2 = finalize(tmp_path, drop(tmp_path, "b", "y", state="failed", stage="read"), "move").final_path
    assert (bad1, bad2) == (tmp_path / "failed" / "b", tmp_path / "failed" / "b-1")
    assert (tmp_path / "failed" / "b.error.json").is_file() and (tmp_path / "failed" / "b-1.error.json").is_file()


def test_move_finishes_an_interrupted_move_without_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    (tmp_path / "out").mkdir()
    os.link(src, tmp_path / "out" / "a.txt")  # a crash after linking, before unlinking the source
    assert move_no_clobber(src, tmp_path / "out") == tmp_path / "out" / "a.txt"
    assert not src.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]


def test_keep_and_delete(tmp_path: Path) -> None:
    kept = drop(tmp_path, "k.txt")
    assert finalize(tmp_path, kept, "keep").final_path == tmp_path / "k.txt"
    assert (tmp_path / "k.txt").exists()
    gone = drop(tmp_path, "d.txt")
    out = finalize(tmp_path, gone, "delete")
    assert (out.action, out.final_path) == ("deleted", None)
    assert not (tmp_path / "d.txt").exists()
    # A failed drop is not deleted: it goes to failed/, where `feedworker replay` finds it.
    bad = drop(tmp_path, "f.txt", state="failed", stage="parse", reason="YAML")
    assert finalize(tmp_path, bad, "delete").final_path == tmp_path / "failed" / "f.txt"


def test_a_rewritten_file_is_left_for_its_new_drop(tmp_path: Path) -> None:
    row = drop(tmp_path, "a.txt", "old")
    (tmp_path / "a.txt").write_text("new and longer")
    out = finalize(tmp_path, row, "move")
    assert (out.action, out.final_path) == ("superseded", None)
    assert (tmp_path / "a.txt").read_text() == "new and longer"


def test_missing_file_and_finding_an_earlier_move(tmp_path: Path) -> None:
    row = drop(tmp_path, "a.txt")
    moved = finalize(tmp_path, row, "move").final_path
    again = finalize(tmp_path, row, "move")  # a second watcher, or a rerun after a crash before the ledger update
    assert (again.action, again.final_path) == ("missing", None)
    assert find_moved(tmp_path, row) == moved
    assert find_moved(tmp_path, {**row, "size": row["size"] + 1}) is None


@pytest.mark.parametrize("name", ["noext", ".hidden", "a.tar.gz"])
def test_suffixes_for_odd_names(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    for text in ("1", "2"):
        (tmp_path / name).write_text(text)
        move_no_clobber(tmp_path / name, out)
    assert sorted(p.read_text() for p in out.iterdir()) == ["1", "2"]
    assert (out / name).read_text() == "1"


def test_a_replayed_failure_that_succeeds_leaves_failed_for_processed(tmp_path: Path) -> None:
    row = drop(tmp_path, "r.txt", state="failed", stage="verify", reason="store down")
    first = finalize(tmp_path, row, "move").final_path
    assert first == tmp_path / "failed" / "r.txt"
    # `feedworker replay` sent it again from failed/ (the ledger keeps final_path); it failed once more...
    again = finalize(tmp_path, {**row, "final_path": str(first), "reason": "still down"}, "move")
    assert again.final_path == first
    assert json.loads((tmp_path / "failed" / "r.txt.error.json").read_text())["reason"] == "still down"
    # ...then succeeded: out of failed/, report and all
    ok = finalize(tmp_path, {**row, "final_path": str(first), "state": "published"}, "move")
    assert ok.final_path == tmp_path / "processed" / "2024-03-09" / "r.txt"
    assert list((tmp_path / "failed").iterdir()) == []
