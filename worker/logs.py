"""Structured logs: ``key=value`` text (default) or one JSON object a line (FEEDWORKER_LOG_FORMAT=json).

Fields passed with ``extra={...}`` (file, stage, reason, url, duration) become keys. A filter drops any field
named ``secured`` and masks a ``BASE64;BASE64`` blob should one ever reach a message: logs never carry it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from worker.settings import Settings

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Two base64 runs joined by ';' with the first long enough to be a ciphertext: the shape of `secured`.
_BLOB = re.compile(r"[A-Za-z0-9+/]{40,}={0,2};[A-Za-z0-9+/]{8,}={0,2}")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
            and k != "secured"}


def _mask(text: str) -> str:
    return _BLOB.sub("[secured]", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        parts = [stamp, record.levelname, record.name, _mask(record.getMessage())]
        parts += [f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in _fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + _mask(self.formatException(record.exc_info))
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": _mask(record.getMessage()),
            **_fields(record),
        }
        if record.exc_info:
            out["exc"] = _mask(self.formatException(record.exc_info))
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
