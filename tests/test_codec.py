"""The task messages' serializer: what goes in comes out, exactly, whichever encoder wrote it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kombu import serialization

from tasks.pipeline import Batch
from tasks.stages import Sealed
from worker.celeryapp import codec
from worker.celeryapp.celery_app import app


def dumps(data: Any, serializer: str) -> tuple[str, str, Any]:
    return serialization.dumps(data, serializer=serializer)  # type: ignore[no-untyped-call,no-any-return]


def loads(payload: Any, content_type: str, encoding: str, accept: list[str]) -> Any:
    return serialization.loads(payload, content_type, encoding, accept=accept)  # type: ignore[no-untyped-call]


def roundtrip(data: Any) -> Any:
    content_type, encoding, payload = dumps(data, serializer=codec.NAME)
    assert (content_type, encoding) == (codec.CONTENT_TYPE, "binary")
    return loads(payload, content_type, encoding, accept=[codec.CONTENT_TYPE])


@pytest.mark.parametrize("data", [
    [[{"key": "k", "data": "QUJD", "size": 3, "mtime_ns": 1_700_000_000_123_456_789}], {}, {"chain": None}],
    {"text": "émission 東京 \x1b\x7f\u2028 \"quoted\" \\ /", "n": -(2**63), "m": 2**64 - 1, "f": 0.1, "b": True,
     "none": None, "nested": [[], {}, [1, [2, [3]]]]},
])
def test_plain_json_data_comes_back_equal(data: Any) -> None:
    assert roundtrip(data) == data


@pytest.mark.parametrize("data", [
    {"big": 123456789012345678901234567890},  # orjson would read it back as a float
    {"negative_big": -(2**64)},
    {"surrogate": "\ud800"},  # orjson refuses lone surrogates
    {"when": datetime(2023, 2, 1, 12, 0, tzinfo=UTC)},  # kombu gives datetimes back as datetimes
    {3: "an int key"},
])
def test_what_orjson_would_change_takes_kombus_json(data: Any) -> None:
    content_type, encoding, payload = dumps(data, serializer=codec.NAME)
    assert payload.startswith(b"J")
    expected = {str(k) if isinstance(k, int) else k: v for k, v in data.items()}  # JSON keys are text
    assert loads(payload, content_type, encoding, accept=[codec.CONTENT_TYPE]) == expected


def test_a_sealed_batch_travels_as_a_plain_mapping_and_comes_back_sealed() -> None:
    batch = Batch(ok=[], failed=[{"key": "k", "name": "001_aa.txt", "path": "/d/1", "size": 1, "mtime_ns": 2,
                                  "stage": "parse", "reason": "title: must not be empty"}])
    received = roundtrip([[Sealed(batch, 1700000000.5)], {}, {}])[0][0]
    assert isinstance(received, dict)
    sealed = Sealed.of(received)
    assert (sealed.data, sealed.started) == (batch, 1700000000.5)
    assert repr(sealed) == "<1 drops: 001_aa.txt>"


def test_the_app_sends_with_the_codec_and_still_accepts_plain_json() -> None:
    assert app.conf.task_serializer == codec.NAME
    assert {"json", codec.CONTENT_TYPE} <= set(app.conf.accept_content)
    content_type, encoding, payload = dumps([[1], {}, {}], serializer="json")
    accept = serialization.prepare_accept_content(app.conf.accept_content)  # type: ignore[no-untyped-call]
    assert loads(payload, content_type, encoding, accept=accept) == [[1], {}, {}]
