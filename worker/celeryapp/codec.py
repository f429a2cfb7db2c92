"""The task messages' serializer: orjson, with the stdlib JSON of kombu for whatever orjson would not keep exactly.

A batch between two stages is ~5 KB of JSON per drop and crosses the broker three times; kombu's own ``json``
serializer (the stdlib with a Python ``object_hook`` for every dict) spent ~13 ms encoding and decoding one batch
of 100 drops here, orjson ~3 ms. The payload stays JSON, so any JSON reader can inspect a message.

Exactness: orjson refuses integers past 64 bits and lone surrogates (``TypeError``) and reads integers past 64 bits
back as floats, so a message it refuses is written by kombu's JSON encoder instead, behind a one-byte marker that
sends it back through kombu's JSON decoder. Values orjson does not know (datetimes included: kombu gives them
back as datetimes, orjson would give text) take the same path. An object with a ``__json__`` method (kombu's
convention, see ``tasks.stages.Sealed``) is written as what that method returns.

Register once per process, before sending or receiving: ``worker.celeryapp.celery_app`` does it.
"""

from __future__ import annotations

from typing import Any

import orjson
from kombu.serialization import register
from kombu.utils import json as kombu_json

NAME = "feedworker-json"
CONTENT_TYPE = "application/x-feedworker-json"
_STDLIB = b"J"  # never the first byte of orjson's output (JSON text starts with [ { " digit - t f n)


def encode(data: Any) -> bytes:
    try:
        return orjson.dumps(data, default=_reduce, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except TypeError:
        return _STDLIB + str(kombu_json.dumps(data)).encode("utf-8")  # type: ignore[no-untyped-call]


def decode(payload: bytes | str) -> Any:
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if raw.startswith(_STDLIB):
        return kombu_json.loads(raw[1:])  # type: ignore[no-untyped-call]
    return orjson.loads(raw)


def _reduce(value: Any) -> Any:
    reducer = getattr(value, "__json__", None)
    if reducer is None:
        raise TypeError(f"{type(value).__name__} is left to kombu's JSON encoder")
    return reducer()


def register_codec() -> None:
    register(NAME, encode, decode, content_type=CONTENT_TYPE, content_encoding="binary")  # type: ignore[no-untyped-call]
