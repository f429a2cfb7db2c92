"""What the service keeps for itself is private to its user: folders 0700, files 0600.

That is the state folder (``.feedworker/``: the embedded broker's append-only file holds queued drops, the
``secured`` blob included; its log; ``broker.url`` and ``flower.auth`` hold passwords) and a SQLite store (every
record and the ledger). Drops are not touched here: a drop moved to ``processed/`` or ``failed/`` keeps the mode
its producer gave it.

Example::

    private_dir(Path(".feedworker"))          # made 0700; what an older version left there made 0700/0600
    private_sqlite("sqlite:///feedworker.db")  # the file made 0600 before SQLite makes it (its -wal/-shm follow)
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE, FILE_MODE = 0o700, 0o600
UMASK = 0o077  # for child processes that write into the state folder (the embedded broker)


def private_dir(path: Path) -> Path:
    """``path`` made (with its parents) and closed to others, with everything already in it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path)
    for root, dirs, files in os.walk(path):  # symlinks are not followed (nor changed: lstat below)
        for name in dirs + files:
            _tighten(Path(root) / name)
    return path


def private_file(path: Path) -> int:
    """Open ``path`` for writing (created 0600, truncated), tightened if it was there; the descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def private_sqlite(url: str) -> None:
    """Create a SQLite store's file 0600 before SQLite does (SQLite gives its -wal and -shm files the main file's
    mode), and tighten files an older version made 0644. Other URLs, and ``:memory:``, are left alone."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite says what is wrong
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        _tighten(Path(f"{path}{suffix}"))


def _tighten(path: Path) -> None:
    """Remove group and other access from a folder or regular file of ours (never through a symlink)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if info.st_uid != os.geteuid() or not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return
    if info.st_mode & 0o077:
        path.chmod(stat.S_IMODE(info.st_mode) & ~0o077)
