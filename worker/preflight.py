"""What commands check before they start, so a mistake ends in one clear line (``worker.clierrors``):

- a command that only reads (``export``, ``failures``, ``status``) opens the store as it is: it never creates a
  SQLite file, never migrates (a write), and refuses with what to run when the schema is behind the code;
- ``run`` watches a folder it may create, but only its last component: a typo in a parent is refused.
"""

from __future__ import annotations

from pathlib import Path

from tasks.errors import FeedworkerError
from tasks.store.ledger import Store


class NotReadable(FeedworkerError):
    """The store can't be read as it is (missing, or its schema is not this code's)."""


class BadDropFolder(FeedworkerError):
    """The drop folder can't be used."""


def open_for_reading(url: str) -> Store:
    """The store at ``url``, opened to read: raises :class:`NotReadable` when it is missing or not current."""
    from worker.observing.status import missing_sqlite_file

    store = Store(url)
    try:
        problem = missing_sqlite_file(store) or schema_behind(store)
    except Exception:
        store.dispose()
        raise
    if problem:
        store.dispose()
        raise NotReadable(problem)
    return store


def schema_behind(store: Store) -> str | None:
    """Why the store's schema isn't the one this code reads (with what to run), or None when it is."""
    from alembic.script import ScriptDirectory

    from tasks.store.migrate import MIGRATIONS, current_revision, head_revision

    current, head = current_revision(store), head_revision()
    if current == head:
        return None
    if current is None:
        return "the store has no schema yet: run `feedworker migrate` (or point FEEDWORKER_STORE_URL at a store)"
    if current not in {rev.revision for rev in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}:
        return (f"the store's schema is at revision {current}, newer than this feedworker knows ({head}): "
                "upgrade feedworker")
    return f"the store's schema is at revision {current}, this feedworker reads {head}: run `feedworker migrate`"


def drop_folder(path: Path, create: bool = True) -> Path:
    """``path`` as a folder to watch: created (``create``) when only its last component is missing; anything else
    refused. ``create=False`` only checks that it could be."""
    if path.is_dir() or (not create and path.absolute().parent.is_dir() and not path.exists()):
        return path
    if path.exists():
        raise BadDropFolder(f"{path} is not a folder")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise BadDropFolder(f"{path}: its parent folder {parent} does not exist (a typo?); create it first, or "
                            "name an existing folder")
    try:
        path.mkdir()
    except OSError as exc:
        raise BadDropFolder(f"{path}: can't create it: {exc.strerror or exc}") from exc
    return path
