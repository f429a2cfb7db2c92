"""Putting finished drops away: ``processed/YYYY-MM-DD/`` or ``failed/`` (with ``NAME.error.json``), kept, or deleted.

Only the watcher calls this, and only for drops whose outcome the ledger holds: the outcome commits in the same
transaction as the records, so a file is never moved before its record exists. Moves never overwrite: a name that
is taken gets a numbered suffix (``a.txt`` -> ``a-1.txt``), and the no-overwrite test is the kernel's own (a hard
link refuses an existing name), so two watchers finalizing at once cannot clobber each other.

Every step goes through directory descriptors (worker/watching/safedir.py): a folder swapped for a symbolic link is
never followed, and a reserved folder that is not the service's raises ``Tampered`` (the file then stays where it is;
its outcome is in the ledger). A file is moved only if it is still the version the drop was made of (same size
and mtime): a file rewritten in place after it was taken is a new drop, and it is left for that drop.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tasks.names import os_path
from tasks.utc import as_utc
from worker.watching.folders import Folders
from worker.watching.safedir import Tampered, claim_copy, link_at, lstat_at, opened, placed, unlink_at, write_new

ERROR_SUFFIX = ".error.json"
NAME_MAX = 255  # bytes in one file name (Linux file systems)
_NO_LINKS = (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP)


@dataclass(frozen=True)
class Outcome:
    """What finalizing one drop did: ``final_path`` is where the file is now (None: deleted or left alone)."""

    action: Literal["moved", "kept", "deleted", "superseded", "missing"]
    final_path: Path | None


def finalize(folders: Folders | Path, row: Mapping[str, Any], after: str) -> Outcome:
    """Move, keep or delete one finished drop's file, as ``after`` says; failures are always moved to failed/.

    ``row`` is the drop's ledger row (path, name, size, mtime_ns, state, stage, reason, finished_at, final_path;
    paths in the ledger's escaped form). A drop sent again by `feedworker replay` is found where its first
    finalization put it (``final_path``, in failed/): on success it leaves failed/ for processed/ with its stale
    report removed; on another failure its report is rewritten in place.
    """
    folders = folders if isinstance(folders, Folders) else Folders.of(folders)
    path = os_path(row["path"])
    current = _current_file(folders, row)
    if current is None:
        moved = find_moved(folders, row) if row["state"] == "failed" else None
        if moved is not None:  # moved before, but its report never written (a crash, a full disk): write it now
            write_error_report(folders, moved, row)
            return Outcome("moved", moved)
        return Outcome("missing" if _stat(folders, path, source=True) is None else "superseded", None)
    failed, replayed = row["state"] == "failed", current != path
    sub = _relative_parent(folders.root, path)
    if after == "keep" and not replayed:
        return Outcome("kept", current)
    if failed:
        target = current if replayed else _move(folders, current, folders.failed / sub)
        write_error_report(folders, target, row)
        return Outcome("moved", target)
    if after == "delete":
        _remove(folders, current)
        _remove(folders, current.with_name(report_name(current.name)))
        return Outcome("deleted", None)
    day = _utc(row.get("finished_at")).strftime("%Y-%m-%d")
    target = _move(folders, current, folders.processed / day / sub)
    _remove(folders, current.with_name(report_name(current.name)))  # a replayed success: its old report goes
    return Outcome("moved", target)


def _current_file(folders: Folders, row: Mapping[str, Any]) -> Path | None:
    """The drop's file as the drop knows it (same size and mtime): at its path, or where it was put before."""
    for candidate, source in ((row["path"], True), (row.get("final_path"), False)):
        if candidate and _same_version(_stat(folders, os_path(candidate), source), row):
            return os_path(candidate)
    return None


def _stat(folders: Folders, path: Path, source: bool = False) -> os.stat_result | None:
    """lstat through descriptors. A drop's own sub-folder that became a link (``source``) means the file is no
    longer there; a reserved folder that did raises ``Tampered``."""
    try:
        with opened(folders.open_dir(path.parent)) as fd:
            return lstat_at(fd, path.name)
    except Tampered:
        if source and not any(path.is_relative_to(r) for r in folders.reserved):
            return None
        raise
    except (FileNotFoundError, NotADirectoryError):
        return None


def _remove(folders: Folders, path: Path) -> None:
    try:
        fd = folders.open_dir(path.parent)
    except FileNotFoundError:
        return
    with opened(fd):
        unlink_at(fd, path.name)


def find_moved(folders: Folders | Path, row: Mapping[str, Any]) -> Path | None:
    """Where an earlier finalization of this drop put its file, if it got as far as moving it (a crash between
    the move and the ledger update): the same name, or a suffixed one, of the same size and mtime."""
    folders = folders if isinstance(folders, Folders) else Folders.of(folders)
    path = os_path(row["path"])
    parent = _relative_parent(folders.root, path)
    folder = folders.failed / parent if row["state"] == "failed" else (
        folders.processed / _utc(row.get("finished_at")).strftime("%Y-%m-%d") / parent)
    try:
        fd = folders.open_dir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with opened(fd):
        for name in _names(path.name, limit=100):
            st = lstat_at(fd, name)
            if st is None:
                break
            if _same_version(st, row):
                return folder / name
    return None


def _move(folders: Folders, src: Path, folder: Path) -> Path:
    try:
        with opened(folders.open_dir(src.parent)) as sfd, opened(folders.open_dir(folder, create=True)) as dfd:
            return folder / move_at(sfd, src.name, dfd)
    except OSError as exc:
        raise placed(exc, folder / src.name) from None


def move_no_clobber(src: Path, folder: Path) -> Path:
    """Move ``src`` into ``folder`` (made if missing) under its own name, or a suffixed one; never replace a file."""
    folder.mkdir(parents=True, exist_ok=True)
    sfd = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with opened(sfd), opened(dfd):
        return folder / move_at(sfd, src.name, dfd)


def move_at(sfd: int, name: str, dfd: int) -> str:
    """Move ``name`` from folder ``sfd`` into folder ``dfd`` (its name or a suffixed one); return the new name."""
    for target in _names(name):
        try:
            link_at(sfd, name, dfd, target)  # atomic, and refuses an existing name
        except FileExistsError:
            if _same_inode(lstat_at(sfd, name), lstat_at(dfd, target)):  # an interrupted move, or another watcher's
                unlink_at(sfd, name)
                return target
            continue
        except OSError as exc:
            if exc.errno in _NO_LINKS:
                return _copy_at(sfd, name, dfd)  # a file system without hard links, or another device
            raise
        unlink_at(sfd, name)  # missing: another watcher finishing the same move
        return target
    raise AssertionError("unreachable: _names is endless")


def _copy_at(sfd: int, name: str, dfd: int) -> str:
    for target in _names(name):
        try:
            claim_copy(sfd, name, dfd, target)
        except FileExistsError:
            continue
        unlink_at(sfd, name)
        return target
    raise AssertionError("unreachable: _names is endless")


def report_name(name: str) -> str:
    """``NAME.error.json``; for a name too long for that, its start and a hash of the whole (unique per name):
    the report's ``file`` field keeps the full name."""
    full = name + ERROR_SUFFIX
    if len(os.fsencode(full)) <= NAME_MAX:
        return full
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return _cut(name, NAME_MAX - len(tag) - len(ERROR_SUFFIX)) + tag + ERROR_SUFFIX


def write_error_report(folders: Folders | Path, target: Path, row: Mapping[str, Any]) -> Path:
    """``NAME.error.json`` beside a failed drop: file, stage, reason, time. Written whole or not at all, through
    the folder's descriptor (a link planted at the report's name or any temporary name is never followed)."""
    folders = folders if isinstance(folders, Folders) else Folders.of(folders)
    body = {
        "file": row["name"],
        "path": row["path"],
        "stage": row.get("stage"),
        "reason": row.get("reason"),
        "failed_at": _utc(row.get("finished_at")).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "moved_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "attempts": row.get("attempts"),
    }
    report = target.with_name(report_name(target.name))
    data = (json.dumps(body, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    try:
        with opened(folders.open_dir(target.parent)) as fd:
            write_new(fd, report.name, data)  # our own report name: replacing it (a rerun) is fine
    except OSError as exc:
        raise placed(exc, report) from None
    return report


def _names(name: str, limit: int | None = None) -> Iterator[str]:
    """``a.txt``, then ``a-1.txt``, ``a-2.txt``... (a name without a suffix: ``a``, ``a-1``...), each cut to fit
    in NAME_MAX bytes."""
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no dot, or only a leading one
        stem, dot, ext = name, "", ""
    n = 1
    while limit is None or n < limit:
        tail = f"-{n}{dot}{ext}"
        yield _cut(stem, NAME_MAX - len(os.fsencode(tail))) + tail
        n += 1


def _cut(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` bytes, at a character boundary."""
    raw = os.fsencode(text)
    if len(raw) <= budget:
        return text
    raw = raw[:max(budget, 0)]
    while raw and raw[-1] & 0xC0 == 0x80:  # a cut UTF-8 sequence: drop its continuation bytes...
        raw = raw[:-1]
    if raw and raw[-1] >= 0xC0:  # ...and its lead byte
        raw = raw[:-1]
    return os.fsdecode(raw)


def _same_version(st: os.stat_result | None, row: Mapping[str, Any]) -> bool:
    return (st is not None and stat.S_ISREG(st.st_mode) and st.st_size == int(row["size"])
            and st.st_mtime_ns == int(row["mtime_ns"]))


def _same_inode(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _relative_parent(drop_dir: Path, path: Path) -> Path:
    """The drop's sub-folder below the drop folder (kept below processed/ and failed/ so names stay apart)."""
    try:
        return path.parent.relative_to(drop_dir)
    except ValueError:
        return Path()


def _utc(value: datetime | None) -> datetime:
    """The drop's finishing time in UTC (now, for a row without one)."""
    return datetime.now(UTC) if value is None else as_utc(value)
