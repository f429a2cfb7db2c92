"""Which files in a drop folder are drops, and how a drop is identified in the ledger."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterator
from pathlib import Path

# Producers write under a temporary name and rename when done; such names are never drops.
TEMP_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".swp", "~")
RESERVED_DIRS = ("processed", "failed")  # where the watcher moves finished drops


def is_candidate(name: str) -> bool:
    """A name that may be a drop: not hidden, not a temporary, not our own error report."""
    return not (name.startswith(".") or name.endswith(TEMP_SUFFIXES) or name.endswith(".error.json"))


def drop_key(scope: str, path: Path, size: int, mtime_ns: int) -> str:
    """The ledger key: one file version at one path. The same file seen twice (rescan, two watchers) is one
    drop; a new file written under the same name later is another."""
    raw = f"{scope}\0{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).hexdigest()[:40]


def walk(root: Path, recursive: bool = True, skip_reserved: bool = True,
         skip: Collection[Path] = ()) -> Iterator[os.DirEntry[str]]:
    """Candidate files under ``root``, streamed (no full listing in memory). Symlinks are never followed: a
    symlink is yielded like a file so that reading it refuses it, and the refusal is listed with its name.
    ``skip``: folders never walked (reserved folders configured inside the drop folder)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if not is_candidate(entry.name) or (skip_reserved and folder == root
                                                         and entry.name in RESERVED_DIRS):
                        continue  # a reserved name is never a drop, even when someone made it a link
                    if entry.is_dir(follow_symlinks=False):
                        if recursive and Path(entry.path) not in skip:
                            stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        yield entry
        except OSError:
            continue  # a folder removed while we walked it, or one we may not read: it holds back nothing else
