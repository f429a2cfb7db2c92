"""The scrape of the multiprocess directory survives a process that is still creating its value file.

A pool child that starts during a scrape creates ``counter_PID.db`` empty and sizes it a moment later;
prometheus_client's reader failed the whole scrape on the empty file (HTTP 500, seen in a full test run).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from worker.observing.metricserver import _FilesCollector


def _counter_file(folder: Path, pid: int, value: float) -> None:
    d = MmapedDict(str(folder / f"counter_{pid}.db"))  # type: ignore[no-untyped-call]
    key = mmap_key("feedworker_test_total", "feedworker_test_total", [], [], "a test counter")
    d.write_value(key, value, 0)  # type: ignore[no-untyped-call]
    d.close()  # type: ignore[no-untyped-call]


def _total(collector: _FilesCollector) -> float:
    return float(sum(s.value for m in collector.collect() for s in m.samples if s.name == "feedworker_test_total"))


def test_an_empty_value_file_being_created_is_left_out_not_fatal(tmp_path: Path) -> None:
    _counter_file(tmp_path, os.getpid(), 3.0)
    _counter_file(tmp_path, 1, 4.0)  # pid 1: alive, so never reaped
    (tmp_path / "counter_999999.db").touch()  # a starting process: created, not yet sized
    assert _total(_FilesCollector(tmp_path)) == 7.0


def test_the_stock_reader_fails_on_that_file(tmp_path: Path) -> None:
    """Why the filter exists: prometheus_client's own collector raises on the empty file (if a later version
    stops doing so, the filter can go)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    _counter_file(tmp_path, os.getpid(), 3.0)
    (tmp_path / "counter_999999.db").touch()
    try:
        list(MultiProcessCollector(None, str(tmp_path)).collect())  # type: ignore[no-untyped-call]
    except Exception as exc:  # struct.error in 0.2x
        assert "unpack" in str(exc)
    else:
        raise AssertionError("the stock collector read an empty value file: the filter may be unneeded now")
