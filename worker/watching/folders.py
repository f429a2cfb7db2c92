"""The drop folder's layout: where drops arrive, and the reserved folders finished drops are put in.

``processed/`` and ``failed/`` sit in the drop folder unless ``watch.processed_dir`` / ``watch.failed_dir`` name
other folders (outside it: then producers cannot touch them at all). Either way they are the service's: made by
it, and checked (a real folder, owned by the service's user) on every use, through worker/watching/safedir.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tasks.names import escaped_path
from worker.watching.dropfiles import RESERVED_DIRS
from worker.watching.safedir import Tampered, open_base, open_under


@dataclass(frozen=True)
class Folders:
    """The drop folder and its two reserved folders (absolute paths)."""

    root: Path
    processed: Path
    failed: Path

    @classmethod
    def of(cls, root: Path, processed: Path | None = None, failed: Path | None = None) -> Folders:
        root = root.resolve()
        folders = cls(root, Path(os.path.abspath(processed or root / RESERVED_DIRS[0])),
                      Path(os.path.abspath(failed or root / RESERVED_DIRS[1])))
        for top in folders.reserved:
            if root.is_relative_to(top):
                raise ValueError(f"{top} cannot hold finished drops: it is (or holds) the drop folder {root}")
        return folders

    @property
    def reserved(self) -> tuple[Path, Path]:
        return self.processed, self.failed

    def inside(self) -> list[Path]:
        """The reserved folders inside the drop folder (a scan skips them)."""
        return [p for p in self.reserved if p.is_relative_to(self.root) and p != self.root]

    def open_dir(self, path: Path, create: bool = False) -> int:
        """A descriptor of folder ``path`` (below the drop folder or a reserved folder), reached without
        following a link; reserved folders are made when ``create`` and must be the service's."""
        for top in sorted(self.reserved, key=lambda p: len(p.parts), reverse=True):  # the deepest base first
            if path.is_relative_to(top):
                return self._open_reserved(top, path.relative_to(top).parts, create)
        if path.is_relative_to(self.root):
            fd = open_base(self.root, create=False, owned=False)
            try:
                return open_under(fd, path.relative_to(self.root).parts, self.root, create=False, owned_from=None)
            finally:
                os.close(fd)
        raise Tampered(path, "is outside the drop folder and its reserved folders")

    def _open_reserved(self, top: Path, parts: tuple[str, ...], create: bool) -> int:
        if top.is_relative_to(self.root):  # inside the drop folder: every step from the root is checked
            above = top.relative_to(self.root).parts
            fd = open_base(self.root, create=False, owned=False)
            try:
                return open_under(fd, (*above, *parts), self.root, create, owned_from=len(above) - 1)
            finally:
                os.close(fd)
        fd = open_base(top, create=create, owned=True)
        try:
            return open_under(fd, parts, top, create, owned_from=0)
        finally:
            os.close(fd)

    def check(self) -> dict[str, str]:
        """Each reserved folder that exists and is not a real folder of the service's: path -> why."""
        problems = {}
        for top in self.reserved:
            try:
                os.close(self.open_dir(top))
            except Tampered as exc:
                problems[escaped_path(exc.path)] = exc.why
            except OSError:
                continue  # missing (made on first use) or unreadable: the move itself will say
        return problems
