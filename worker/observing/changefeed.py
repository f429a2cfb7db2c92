"""`feedworker changes`: the change log, one JSON object a line, from a cursor; ``--follow`` waits for more.

Waiting: on PostgreSQL the reader LISTENs on the channel each publish NOTIFYs in its transaction (so the
notification arrives once the changes are visible), and reads again on each notification, or every
``_FOLLOW_CHECK`` seconds regardless; it LISTENs before reading, so a publish between a read and the wait still
wakes it. SQLite has no notifications: the reader polls every ``_SQLITE_POLL`` seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

from tasks.store.changes import CHANNEL, BadCursor, parse_cursor, read
from tasks.store.ledger import Store

EXIT_OK, EXIT_BAD_CURSOR = 0, 2
_PAGE = 500
_FOLLOW_CHECK = 30.0
_SQLITE_POLL = 0.5


class Waiter(Protocol):
    def wait(self) -> None: ...


def run_changes(store: Store, since: str | None, follow: bool, limit: int | None, out: TextIO) -> int:
    """Print changes after ``since``; return the exit code (2: a bad cursor, said in one line on stderr)."""
    try:
        cursor = parse_cursor(since) if since else None  # "": from the start (a consumer's empty cursor file)
        with _waiter(store, follow) as waiter:
            _print_changes(store, cursor, limit, out, waiter)
    except BadCursor as exc:
        print(f"feedworker changes: {exc}", file=sys.stderr)
        return EXIT_BAD_CURSOR
    except BrokenPipeError:  # `changes | head`: the reader has what it wanted
        sys.stderr.close()
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _print_changes(store: Store, cursor: int | None, limit: int | None, out: TextIO, waiter: Waiter | None) -> None:
    left = limit
    while left is None or left > 0:
        page = read(store, cursor, _PAGE if left is None else min(_PAGE, left))
        for line in page:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
        if page:
            cursor = int(page[-1]["cursor"])
            left = None if left is None else left - len(page)
        if len(page) < _PAGE and (left is None or left > 0):  # caught up
            if waiter is None:
                return
            waiter.wait()


@contextmanager
def _waiter(store: Store, follow: bool) -> Iterator[Waiter | None]:
    if not follow:
        yield None
    elif store.dialect == "postgresql":
        with _Listener.open(store) as listener:
            yield listener
    else:
        yield _Poller()


class _Poller:
    def wait(self) -> None:
        time.sleep(_SQLITE_POLL)


class _Listener:
    """A connection of its own, in autocommit, LISTENing on the change channel."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    @contextmanager
    def open(cls, store: Store) -> Iterator[_Listener]:
        import psycopg

        url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            yield cls(conn)

    def wait(self) -> None:
        for _ in self.conn.notifies(timeout=_FOLLOW_CHECK, stop_after=1):
            pass
