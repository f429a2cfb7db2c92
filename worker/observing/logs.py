"""Structured logs: ``key=value`` text (default) or one JSON object a line (FEEDWORKER_LOG_FORMAT=json).

Fields passed with ``extra={...}`` (file, stage, reason, url, duration) become keys. A filter drops any field
named ``secured`` and masks a ``BASE64;BASE64`` blob should one ever reach a message: logs never carry it.
Control characters, bidi overrides and undecodable bytes (a file name's, an exception's) are escaped
(tasks/names.py ``display``) in both formats: a name cannot forge a log line or a terminal escape sequence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from tasks.names import display
from worker.settings import Settings

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Two base64 runs joined by ';' with the first long enough to be a ciphertext: the shape of `secured`.
_BLOB = re.compile(r"[A-Za-z0-9+/]{40,}={0,2};[A-Za-z0-9+/]{8,}={0,2}")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
            and k != "secured"}


def _mask(text: str) -> str:
    return _BLOB.sub("[secured]", display(text))


def _traceback(exc_info: Any) -> str:
    """A traceback with its own line breaks, and its exception messages (which may quote a file name) on one
    line each: a frame or a chaining note keeps its breaks, any other chunk is escaped whole."""
    chunks = []
    for chunk in traceback.TracebackException(*exc_info).format():
        body = chunk.rstrip("\n")
        if chunk.startswith(("Traceback", "  File ", "\n")):
            chunks.append("\n".join(_mask(line) for line in body.split("\n")))
        else:
            chunks.append(_mask(body))
    return "\n".join(chunks)


def _safe(value: Any) -> Any:
    return display(value) if isinstance(value, str) else value


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        parts = [stamp, record.levelname, record.name, _mask(record.getMessage())]
        parts += [f"{display(k)}={display(json.dumps(_safe(v), default=str, ensure_ascii=False))}"
                  for k, v in _fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + _traceback(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": _mask(record.getMessage()),
            **{k: _safe(v) for k, v in _fields(record).items()},
        }
        if record.exc_info:
            out["exc"] = _traceback(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    """One handler on the root logger, to stderr, in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("httpx", "httpcore", "aiohttp", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
