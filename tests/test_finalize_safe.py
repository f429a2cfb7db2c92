"""Putting drops away in a folder strangers can write to: no symbolic link is ever followed, a reserved folder
that is not the service's is refused (``Tampered``), reports fit in a file name, odd names survive the trip."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.names import escape, escaped_path
from tasks.parse.parsing import read_drop
from worker.watching.finalize import NAME_MAX, finalize, move_at, report_name, write_error_report
from worker.watching.folders import Folders
from worker.watching.safedir import Tampered, opened

FINISHED = datetime(2024, 3, 9, 23, 59, tzinfo=UTC)
DAY = "2024-03-09"


def drop(root: Path, rel: str, data: bytes = b"---\ntitle: x\n---\n", **row: Any) -> dict[str, Any]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return {"key": rel, "name": escape(path.name), "path": escaped_path(path), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "state": "failed", "stage": "parse", "reason": "bad", "finished_at": FINISHED,
            "attempts": 1, **row}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "precious").write_bytes(b"keep me")
    return out


@pytest.mark.parametrize("state", ["failed", "published"])
def test_a_reserved_folder_swapped_for_a_link_is_never_followed(tmp_path: Path, outside: Path, state: str) -> None:
    root = tmp_path / "drops"
    row = drop(root, "a.txt", state=state)
    before = snapshot(outside)
    (root / ("failed" if state == "failed" else "processed")).symlink_to(outside)
    with pytest.raises(Tampered, match="symbolic link"):
        finalize(root, row, "move")
    assert snapshot(outside) == before
    assert (root / "a.txt").exists()  # left where it was: its outcome is in the ledger


def test_a_dated_subfolder_swapped_for_a_link_is_never_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "drops"
    (root / "processed").mkdir(parents=True)
    (root / "processed" / DAY).symlink_to(outside)
    row = drop(root, "sub/a.txt", state="published")
    before = snapshot(outside)
    with pytest.raises(Tampered) as caught:
        finalize(root, row, "move")
    assert caught.value.path == root.resolve() / "processed" / DAY
    assert snapshot(outside) == before


def test_a_link_above_the_drop_in_its_own_subfolder_is_not_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "drops"
    row = drop(root, "sub/a.txt", state="published")
    (root / "sub").rename(tmp_path / "elsewhere")
    (root / "sub").symlink_to(outside)  # the drop's folder now points outside: its file is no longer there
    (outside / "a.txt").write_bytes(b"---\ntitle: x\n---\n")
    os.utime(outside / "a.txt", ns=(row["mtime_ns"], row["mtime_ns"]))  # even the same size and mtime
    assert finalize(root, row, "move").action == "missing"
    assert (outside / "a.txt").exists() and not (root / "processed").exists()


def test_links_planted_at_the_report_and_temporary_names_are_never_written_through(tmp_path: Path,
                                                                                   outside: Path) -> None:
    root = tmp_path / "drops"
    (root / "failed").mkdir(parents=True)
    for name in ("bad.txt.error.json", ".bad.txt.error.json.1.tmp", f".bad.txt.error.json.{os.getpid()}.tmp"):
        (root / "failed" / name).symlink_to(outside / "precious")
    before = snapshot(outside)
    out = finalize(root, drop(root, "bad.txt"), "move")
    report = root / "failed" / "bad.txt.error.json"
    assert out.final_path == root.resolve() / "failed" / "bad.txt"
    assert not report.is_symlink() and json.loads(report.read_text())["file"] == "bad.txt"
    assert snapshot(outside) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown to another user")
def test_a_reserved_folder_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "drops"
    (root / "failed").mkdir(parents=True)
    os.chown(root / "failed", 65534, 65534)
    row = drop(root, "a.txt")
    with pytest.raises(Tampered, match="owned by uid 65534"):
        finalize(root, row, "move")
    assert list((root / "failed").iterdir()) == []
    assert Folders.of(root).check() == {escaped_path(root.resolve() / "failed"):
                                        "is owned by uid 65534, not by the service's uid 0"}


def test_check_names_each_tampered_reserved_folder(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "drops"
    root.mkdir()
    folders = Folders.of(root)
    assert folders.check() == {}  # missing: made on first use, nothing wrong
    (root / "processed").symlink_to(outside)
    (root / "failed").write_text("not a folder")
    assert folders.check() == {escaped_path(folders.processed): "is a symbolic link, not a folder (it is never "
                                                                "followed)",
                               escaped_path(folders.failed): "is not a folder"}


def test_reserved_folders_outside_the_drop_folder(tmp_path: Path) -> None:
    root, done, bad = tmp_path / "drops", tmp_path / "done", tmp_path / "var" / "bad"
    folders = Folders.of(root, done, bad)
    good = finalize(folders, drop(root, "s/g.txt", state="published"), "move")
    failed = finalize(folders, drop(root, "s/b.txt"), "move")
    assert good.final_path == done / DAY / "s" / "g.txt" and good.final_path.is_file()
    assert failed.final_path == bad / "s" / "b.txt" and (bad / "s" / "b.txt.error.json").is_file()
    assert folders.inside() == [] and not (root / "processed").exists()
    with pytest.raises(ValueError, match=r"\(or holds\) the drop folder"):
        Folders.of(root, processed=tmp_path)


def test_the_move_goes_through_descriptors_not_paths(tmp_path: Path, outside: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a.txt").write_text("x")
    with opened(os.open(src, os.O_RDONLY | os.O_DIRECTORY)) as sfd, \
            opened(os.open(dst, os.O_RDONLY | os.O_DIRECTORY)) as dfd:
        dst.rename(tmp_path / "dst-real")  # swapped for a link after it was opened...
        dst.symlink_to(outside)
        assert move_at(sfd, "a.txt", dfd) == "a.txt"
    assert (tmp_path / "dst-real" / "a.txt").read_text() == "x"  # ...the file went where the descriptor points
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]


def test_report_names_fit_and_stay_unique() -> None:
    assert report_name("a.txt") == "a.txt.error.json"
    long_a, long_b = "é" * 120 + "a.txt", "é" * 120 + "b.txt"  # 245 bytes each: the suffix would not fit
    ra, rb = report_name(long_a), report_name(long_b)
    assert ra != rb and ra.endswith(".error.json") and rb.endswith(".error.json")
    assert len(os.fsencode(ra)) <= NAME_MAX and len(os.fsencode(rb)) <= NAME_MAX
    ra.encode("utf-8")  # cut at a character boundary
    odd = os.fsdecode(b"\xe9" * 250 + b".txt")
    assert len(os.fsencode(report_name(odd))) <= NAME_MAX


def test_names_at_the_limit_get_their_report_and_a_suffix_when_taken(tmp_path: Path) -> None:
    root = tmp_path / "drops"
    name = "n" * (NAME_MAX - 4) + ".txt"
    first = finalize(root, drop(root, name, b"one"), "move").final_path
    second = finalize(root, drop(root, name, b"two"), "move").final_path
    assert first is not None and second is not None and first != second
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert second.name.endswith("-1.txt") and len(os.fsencode(second.name)) <= NAME_MAX
    for moved in (first, second):
        report = json.loads((moved.parent / report_name(moved.name)).read_text())
        assert report["file"] == name and report["reason"] == "bad"


def test_a_name_that_is_not_utf8_is_put_away_and_reported_escaped(tmp_path: Path) -> None:
    root = tmp_path / "drops"
    raw = os.fsdecode(b"caf\xe9\nx.txt")
    out = finalize(root, drop(root, raw), "move")
    assert out.final_path == root.resolve() / "failed" / raw
    report = json.loads((root / "failed" / (raw + ".error.json")).read_text(encoding="utf-8"))
    assert report["file"] == "caf\\xe9\\u000ax.txt"
    assert report["path"].endswith("/drops/caf\\xe9\\u000ax.txt")


def test_a_rewritten_report_replaces_the_old_one_whole(tmp_path: Path) -> None:
    root = tmp_path / "drops"
    row = drop(root, "r.txt")
    target = finalize(root, row, "move").final_path
    assert target is not None
    write_error_report(root, target, {**row, "reason": "second"})
    assert json.loads((root / "failed" / "r.txt.error.json").read_text())["reason"] == "second"
    assert sorted(p.name for p in (root / "failed").iterdir()) == ["r.txt", "r.txt.error.json"]


def test_a_hard_linked_drop_is_refused_alone(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("---\ntitle: secret\nwebUrl: https://x.test/s\n---\n")
    (tmp_path / "drops").mkdir()
    os.link(secret, tmp_path / "drops" / "linked.txt")
    with pytest.raises(DropRejected, match="2 hard links") as caught:
        read_drop(tmp_path / "drops" / "linked.txt", ParseLimits())
    assert caught.value.stage == "read"


def test_a_reserved_folder_configured_inside_the_drop_folder_is_never_scanned(tmp_path: Path) -> None:
    from worker.watching.dropfiles import walk

    root = tmp_path / "drops"
    folders = Folders.of(root, processed=root / "done")
    out = finalize(folders, drop(root, "a.txt", state="published"), "move")
    assert out.final_path == root.resolve() / "done" / DAY / "a.txt"
    (root / "b.txt").write_text("new")
    assert [e.name for e in walk(root.resolve(), skip=folders.inside())] == ["b.txt"]


def test_a_drop_whose_folder_becomes_a_link_loop_is_dropped_not_fatal(tmp_path: Path) -> None:
    from worker.watching.settle import SettleTracker

    root = tmp_path / "drops"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("x")
    tracker = SettleTracker(0.0)
    tracker.closed(root / "sub" / "a.txt", 0.0)
    (root / "sub").rename(tmp_path / "away")
    (root / "sub").symlink_to(root / "sub")  # a loop: lstat of anything below it fails with ELOOP
    assert tracker.due(10.0) == [] and tracker.next_deadline() is None  # forgotten, the loop goes on


def test_a_tampered_folder_is_said_once_and_shown_to_status(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    from worker.observing.tampered import tampered_folders
    from worker.watching.tamper import TamperLog

    state = tmp_path / ".feedworker"
    log = TamperLog(tmp_path / "drops", state)
    log.update({})
    assert tampered_folders(state) == []
    problem = {"/d/failed\\u000ax": "is a symbolic link, not a folder (it is never followed)"}
    for _ in range(5):  # five polls
        log.update(dict(problem))
    assert caplog.text.count("reserved folder /d/failed\\u000ax is a symbolic link") == 1
    assert tampered_folders(state) == [{"root": str(tmp_path / "drops"), "folder": "/d/failed\\u000ax",
                                        "why": problem["/d/failed\\u000ax"]}]
    assert [p.name for p in state.iterdir()] == [log.state_file.name]  # no temporary file left
    log.update({})
    assert "reserved folder /d/failed\\u000ax is fine again" in caplog.text and tampered_folders(state) == []
