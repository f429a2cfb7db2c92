"""Putting finished drops away: ``processed/YYYY-MM-DD/`` or ``failed/`` (with ``NAME.error.json``), kept, or deleted.

Only the watcher calls this, and only for drops whose outcome the ledger holds: the outcome commits in the same
transaction as the records, so a file is never moved before its record exists. Moves never overwrite: a name that
is taken gets a numbered suffix (``a.txt`` -> ``a-1.txt``), and the no-overwrite test is the kernel's own (a hard
link refuses an existing name), so two watchers finalizing at once cannot clobber each other.

A file is moved only if it is still the version the drop was made of (same size and mtime): a file rewritten in
place after it was taken is a new drop, and it is left for that drop.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from worker.dropfiles import RESERVED_DIRS

logger = logging.getLogger(__name__)

PROCESSED, FAILED = RESERVED_DIRS
ERROR_SUFFIX = ".error.json"


@dataclass(frozen=True)
class Outcome:
    """What finalizing one drop did: ``final_path`` is where the file is now (None: deleted or left alone)."""

    action: Literal["moved", "kept", "deleted", "superseded", "missing"]
    final_path: Path | None


def finalize(drop_dir: Path, row: Mapping[str, Any], after: str) -> Outcome:
    """Move, keep or delete one finished drop's file, as ``after`` says; failures are always moved to failed/.

    ``row`` is the drop's ledger row (path, name, size, mtime_ns, state, stage, reason, finished_at, final_path).
    A drop sent again by `feedworker replay` is found where its first finalization put it (``final_path``, in
    failed/): on success it leaves failed/ for processed/ with its stale report removed; on another failure its
    report is rewritten in place.
    """
    path = Path(row["path"])
    current = _current_file(row)
    if current is None:
        moved = find_moved(drop_dir, row) if row["state"] == "failed" else None
        if moved is not None:  # moved before, but its report never written (a crash, a full disk): write it now
            write_error_report(moved, row)
            return Outcome("moved", moved)
        return Outcome("missing" if not os.path.lexists(path) else "superseded", None)
    failed, replayed = row["state"] == "failed", current != path
    sub = _relative_parent(drop_dir, path)
    if after == "keep" and not replayed:
        return Outcome("kept", current)
    if failed:
        target = current if replayed else move_no_clobber(current, drop_dir / FAILED / sub)
        write_error_report(target, row)
        return Outcome("moved", target)
    if after == "delete":
        current.unlink(missing_ok=True)
        _remove_report(current)
        return Outcome("deleted", None)
    day = _utc(row.get("finished_at")).strftime("%Y-%m-%d")
    target = move_no_clobber(current, drop_dir / PROCESSED / day / sub)
    _remove_report(current)  # a replayed drop that now succeeded: its old failure report goes
    return Outcome("moved", target)


def _current_file(row: Mapping[str, Any]) -> Path | None:
    """The drop's file as the drop knows it (same size and mtime): at its path, or where it was put before."""
    for candidate in (row["path"], row.get("final_path")):
        if candidate and _same_version(Path(candidate), row):
            return Path(candidate)
    return None


def _remove_report(path: Path) -> None:
    path.with_name(path.name + ERROR_SUFFIX).unlink(missing_ok=True)


def find_moved(drop_dir: Path, row: Mapping[str, Any]) -> Path | None:
    """Where an earlier finalization of this drop put its file, if it got as far as moving it (a crash between
    the move and the ledger update): the same name, or a suffixed one, of the same size and mtime."""
    path = Path(row["path"])
    parent = _relative_parent(drop_dir, path)
    folders = [drop_dir / FAILED / parent] if row["state"] == "failed" else [
        drop_dir / PROCESSED / _utc(row.get("finished_at")).strftime("%Y-%m-%d") / parent]
    for folder in folders:
        for candidate in _names(folder, path.name, limit=100):
            if not os.path.lexists(candidate):
                break
            if _same_version(candidate, row):
                return candidate
    return None


def move_no_clobber(src: Path, folder: Path) -> Path:
    """Move ``src`` into ``folder`` under its own name, or a suffixed one when taken; never replace a file."""
    folder.mkdir(parents=True, exist_ok=True)
    for target in _names(folder, src.name):
        try:
            os.link(src, target, follow_symlinks=False)  # atomic, and refuses an existing name
        except FileExistsError:
            if _same_inode(src, target):  # our own link from an interrupted attempt, or another watcher's
                src.unlink(missing_ok=True)
                return target
            continue
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
                return _move_without_links(src, folder)  # a file system without hard links, or another device
            raise
        src.unlink(missing_ok=True)  # missing: another watcher finishing the same move
        return target
    raise AssertionError("unreachable: _names is endless")


def write_error_report(target: Path, row: Mapping[str, Any]) -> Path:
    """``NAME.error.json`` beside a failed drop: file, stage, reason, time. Written whole or not at all."""
    report = target.with_name(target.name + ERROR_SUFFIX)
    body = {
        "file": row["name"],
        "path": row["path"],
        "stage": row.get("stage"),
        "reason": row.get("reason"),
        "failed_at": _utc(row.get("finished_at")).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "moved_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "attempts": row.get("attempts"),
    }
    tmp = report.with_name(f".{report.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, report)  # our own report name: replacing it (a rerun) is fine
    except OSError:
        tmp.unlink(missing_ok=True)  # no half-written report left behind (e.g. the disk is full)
        raise
    return report


def _move_without_links(src: Path, folder: Path) -> Path:
    """The fallback where hard links are refused: claim the name with O_EXCL, then move the bytes over it."""
    for target in _names(folder, src.name):
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        shutil.copy2(src, target)  # into the placeholder we own; keeps mtime
        src.unlink()
        return target
    raise AssertionError("unreachable: _names is endless")


def _names(folder: Path, name: str, limit: int | None = None) -> Iterator[Path]:
    """``a.txt``, then ``a-1.txt``, ``a-2.txt``... (a name without a suffix: ``a``, ``a-1``...)."""
    yield folder / name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no dot, or only a leading one
        stem, dot, ext = name, "", ""
    n = 1
    while limit is None or n < limit:
        yield folder / f"{stem}-{n}{dot}{ext}"
        n += 1


def _same_version(path: Path, row: Mapping[str, Any]) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == int(row["size"]) and st.st_mtime_ns == int(row["mtime_ns"])


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.lstat(), b.lstat()
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _relative_parent(drop_dir: Path, path: Path) -> Path:
    """The drop's sub-folder below the drop folder (kept below processed/ and failed/ so names stay apart)."""
    try:
        return path.parent.relative_to(drop_dir)
    except ValueError:
        return Path()


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
