"""Timestamps in UTC, one rule for every reader: a naive datetime is UTC (SQLite hands timestamps back without
their zone; feedworker writes them in UTC), an aware one is converted to UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
