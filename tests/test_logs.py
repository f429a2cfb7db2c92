"""Structured logs: one line per drop outcome (file, stage, duration, record URL), and never a secret.

The end-to-end test reads a real worker's log at INFO, in JSON, after an ingest of drops that carry a ``secured``
blob and a recognizable excerpt; the unit tests pin the formatters' masking.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer

from tests.imagehost import serve_images
from tests.processes import celery_worker, env_for, feedworker
from tests.test_metrics import EXCERPT, SECURED, write_drops
from worker.observing.logs import JsonFormatter, TextFormatter


@pytest.fixture
def broker(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.mark.slow
def test_one_line_per_drop_outcome_and_no_secrets(tmp_path: Path, broker: str, httpserver: HTTPServer) -> None:
    corpus = write_drops(tmp_path / "drops", serve_images(httpserver))
    env = env_for(broker, f"sqlite:///{tmp_path / 'fw.db'}", FEEDWORKER_LOG_FORMAT="json",
                  FEEDWORKER_WATCH__BATCH_MAX="5")
    env["FEEDWORKER_LOG_LEVEL"] = "INFO"  # everything a worker says, Celery's own task lines included
    with celery_worker(env, tmp_path):
        summary = json.loads(feedworker(env, "ingest", str(tmp_path / "drops"), "--wait", "--json").stdout)
    assert summary == {"published": 17, "unchanged": 0, "failed": 3}

    text = (tmp_path / "w1.log").read_text(encoding="utf-8")
    assert SECURED not in text and SECURED.split(";")[0][:40] not in text
    assert EXCERPT not in text and "Zebra-quartz" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert not any("secured" in line for line in lines)
    assert any(line["logger"].startswith("celery") for line in lines)  # INFO really was on
    outcomes = [line for line in lines if "outcome" in line]
    assert sorted(line["file"] for line in outcomes) == sorted(
        [f"{i:03d}_{i:016x}.txt" for i in range(17)] + list(corpus.refused))
    for line in outcomes:
        assert isinstance(line["duration"], float) and 0 < line["duration"] < 60, line
        if line["outcome"] == "failed":
            assert (line["level"], line["stage"]) == ("WARNING", corpus.refused[line["file"]]), line
            assert line["reason"] and "url" not in line
        else:
            assert (line["level"], line["outcome"], line["stage"]) == ("INFO", "published", "publish"), line
            assert line["url"] in corpus.urls


def record(msg: str, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("tasks.stages", logging.WARNING, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_secured_never_formatted(formatter: logging.Formatter) -> None:
    out = formatter.format(record(f"oops {SECURED} leaked", secured=SECURED, file="a.txt", stage="parse"))
    assert SECURED not in out and "secured=" not in out and '"secured"' not in out
    assert "[secured]" in out and "a.txt" in out and "parse" in out


def test_text_is_key_value_and_json_is_one_object() -> None:
    rec = record("drop published", file="a b.txt", stage="publish", duration=0.25, url="https://x.test/a")
    text = TextFormatter().format(rec)
    assert text.split(" ", 3)[1:3] == ["WARNING", "tasks.stages"]
    assert 'file="a b.txt" stage="publish" duration=0.25 url="https://x.test/a"' in text
    data = json.loads(JsonFormatter().format(rec))
    assert {k: data[k] for k in ("level", "msg", "file", "duration", "url")} == {
        "level": "WARNING", "msg": "drop published", "file": "a b.txt", "duration": 0.25, "url": "https://x.test/a"}


def test_exceptions_are_masked_too() -> None:
    try:
        raise ValueError(f"bad blob {SECURED}")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    for formatter in (TextFormatter(), JsonFormatter()):
        assert SECURED not in formatter.format(rec)
