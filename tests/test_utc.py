"""One UTC rule for every timestamp feedworker reads back (tasks/utc.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from tasks.utc import as_utc


def test_naive_is_utc_aware_is_converted_none_stays_none() -> None:
    assert as_utc(datetime(2026, 1, 2, 3, 4, 5)) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    paris = datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    converted = as_utc(paris)
    assert converted.tzinfo is UTC and converted.hour == 3 and converted == paris
    assert as_utc(None) is None
