"""Operator mistakes as one clear line, not a traceback: what went wrong, which setting or file, what to do.

``feedworker`` wraps its entry point in :func:`run_guarded`. Errors it knows (a bad setting, a broken config
file, an unreachable or unmigrated store, an unreachable broker, a path it can't use) print as
``feedworker: ...`` on stderr and exit 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tasks.errors import FeedworkerError

ENV_PREFIX = "FEEDWORKER_"


def run_guarded(main: Callable[[], Any]) -> None:
    try:
        main()
    except Exception as exc:
        line = explain(exc)
        if line is None:
            raise
        print(f"feedworker: {line}", file=sys.stderr)
        sys.exit(1)


def explain(exc: BaseException) -> str | None:
    """The line for an error an operator can fix, or None for anything else."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, FeedworkerError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return "; ".join(_setting_problem(err) for err in exc.errors()) + " (see config/feedworker.example.yaml)"
    if isinstance(exc, SettingsError):
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        return f"{exc}{cause} (a nested setting given in the environment must be JSON)"
    return _store_or_broker(exc) or _os_problem(exc)


def _setting_problem(err: Any) -> str:
    """``setting watch.after (FEEDWORKER_WATCH__AFTER): 'explode' is not allowed: Input should be ...``."""
    loc = [str(part) for part in err.get("loc", ())]
    dotted = ".".join(loc) or "?"
    env = ENV_PREFIX + "__".join(loc).upper()
    given = err.get("input")
    shown = f" is {given!r}:" if isinstance(given, str | int | float | bool) else ":"
    return f"setting {dotted} ({env} or `{dotted}` in the config file){shown} {err.get('msg', 'invalid')}"


def _store_or_broker(exc: BaseException) -> str | None:
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if _is_connect_error(exc):
        return (f"the store can't be reached ({_first_line(exc)}); check FEEDWORKER_STORE_URL and that the "
                "database is up")
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return (f"FEEDWORKER_STORE_URL is not a usable SQLAlchemy URL ({_first_line(exc)}); e.g. "
                "sqlite:///feedworker.db or postgresql+psycopg://user@host/db")
    if isinstance(exc, KombuOperationalError | RedisConnectionError):
        return f"the broker can't be reached ({_first_line(exc)}); check FEEDWORKER_BROKER_URL and that it is up"
    return None


def _is_connect_error(exc: BaseException) -> bool:
    """An error of the store's connection (refused, unknown host, no such database, bad password, lost), not of a
    statement (a bug keeps its traceback)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    return exc.statement is None or "connection" in _first_line(exc).lower()


def _os_problem(exc: BaseException) -> str | None:
    if isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError | IsADirectoryError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
