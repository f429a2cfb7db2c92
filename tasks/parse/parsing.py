"""The parsing layer: a drop file -> its bytes -> a validated ``Item``, or ``DropRejected`` naming file, field, reason.

Example::

    data = read_drop(Path("drops/000_fb3687fbf0a8c61d.txt"), limits)      # stage "read"
    item = parse_drop("000_fb3687fbf0a8c61d.txt", data, limits)           # stage "parse"
    source_id("000_fb3687fbf0a8c61d.txt")  ->  "fb3687fbf0a8c61d"
    jsonable(item.model_extra)             ->  the unknown fields, ready for JSON

The steps live in their own modules: ``frontmatter`` (bytes -> YAML text), ``yamlsafe`` (bounded safe YAML ->
data), ``models`` (data -> ``Item``, pydantic lax mode). A refusal never quotes the input: the ``secured`` blob
(or anything else) cannot leak into a message, a log line or the failures list.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import math
import os
import re
import stat
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from tasks.errors import DropRejected
from tasks.limits import ParseLimits
from tasks.names import escape
from tasks.parse.frontmatter import FrontMatterError, split_front_matter
from tasks.parse.models import Item
from tasks.parse.yamlloader import NUL_REASON, UnsafeYaml, field_path
from tasks.parse.yamlsafe import load_front_matter

logger = logging.getLogger(__name__)

_SOURCE_NAME = re.compile(r"[0-9]+_([0-9a-fA-F]{1,64})\.txt")  # 64: the store's source_id column
_READ_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang open()
_OS_REASONS = {
    errno.ENOENT: "the file vanished before it could be read",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ELOOP: "is a symbolic link: a drop must be a regular file",
    errno.EISDIR: "is a directory, not a regular file",
    errno.ENXIO: "is not a regular file (a socket or a device)",
}


def read_drop(path: Path, limits: ParseLimits, dir_fd: int | None = None) -> bytes:
    """The bytes of a drop file, refused (stage ``read``) when it is not a regular file or over ``max_bytes``.

    The size is judged from ``fstat`` before reading, and at most ``max_bytes + 1`` bytes are read, so a file
    that grows meanwhile (or lies about its size) costs no more than the limit. A file with other hard links is
    refused like a symbolic link: a link made in the drop folder may name a file its maker could not read.
    ``dir_fd``: the folder holding the file, already opened (``path.name`` is opened in it, no path is resolved).
    """
    try:
        fd = os.open(path if dir_fd is None else path.name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _read_refusal(path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DropRejected(escape(path.name), f"is not a regular file ({_file_kind(info.st_mode)})", stage="read")
        if info.st_nlink > 1:
            raise DropRejected(escape(path.name), f"has {info.st_nlink} hard links: a drop must be a file of its own "
                               "(hard links are refused like symbolic links)", stage="read")
        if info.st_size > limits.max_bytes:
            raise DropRejected(escape(path.name), _too_big(info.st_size, limits), stage="read")
        data = _read_at_most(fd, limits.max_bytes + 1, info.st_size + 1)
    except OSError as exc:
        raise _read_refusal(path, exc) from None
    finally:
        os.close(fd)
    if len(data) > limits.max_bytes:
        raise DropRejected(escape(path.name), f"grew past the limit of {limits.max_bytes} bytes while read",
                           stage="read")
    return data


def parse_drop(name: str, data: bytes, limits: ParseLimits) -> Item:
    """The item a drop holds, or ``DropRejected(file=name, field=..., reason=..., stage="parse")``."""
    if len(data) > limits.max_bytes:
        raise DropRejected(name, _too_big(len(data), limits))
    try:
        front = split_front_matter(data)
        loaded = load_front_matter(front.text, limits, raw=front.raw, first_line=front.first_line)
    except FrontMatterError as exc:
        raise _refused(name, exc.reason) from None
    except UnsafeYaml as exc:
        raise _refused(name, exc.reason, exc.field) from None
    except RecursionError:  # a last guard: the depth limit is checked before anything recurses
        raise _refused(name, f"nested too deeply to read (limit: {limits.max_depth} levels)") from None
    try:
        item = Item.model_validate(loaded.data)
    except RecursionError:
        raise _refused(name, f"nested too deeply to read (limit: {limits.max_depth} levels)") from None
    except ValidationError as exc:
        # "from None": pydantic's own text quotes the input (the secured blob too); it must not ride along
        raise _refused(name, *_first_error(exc)) from None
    if loaded.has_binary:  # !!binary bytes may have been decoded into a text field
        field = _nul_field(item)
        if field is not None:
            raise _refused(name, NUL_REASON, field)
    return item


def source_id(name: str) -> str | None:
    """The producer's id in a ``NNN_<hex>.txt`` file name (``000_fb3687fbf0a8c61d.txt`` -> ``fb3687fbf0a8c61d``)."""
    match = _SOURCE_NAME.fullmatch(name)
    return match.group(1) if match else None


def jsonable(value: Any) -> Any:
    """``value`` (data a safe YAML loader builds) as JSON-safe data, for the unknown fields kept in ``extra``.

    - datetime / date -> ISO 8601 text (``2023-02-02T22:17:00+00:00``; a naive datetime stays naive);
    - bytes (``!!binary``) -> standard base64 text;
    - set / frozenset -> a sorted list (sorted by value, or by JSON text when the values are of mixed kinds);
      tuple (``!!omap``, ``!!pairs``) -> a list;
    - floats that JSON cannot hold -> their JavaScript spelling as text: ``"NaN"``, ``"Infinity"``,
      ``"-Infinity"`` (kept, not nulled: PostgreSQL's jsonb refuses the bare tokens);
    - mapping keys -> text: a str key as is, any other key as its JSON spelling above (``true``, ``null``, ``3``).

    Anything else raises ``TypeError``: the loader never builds it.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return (
            value
            if math.isfinite(value)
            else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))
        )
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return _sorted([jsonable(v) for v in value])
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"jsonable: unexpected {type(value).__name__}")


# -- helpers -------------------------------------------------------------------------------------------------------


def _refused(name: str, reason: str, field: str | None = None) -> DropRejected:
    logger.debug("drop refused", extra={"file": name, "stage": "parse", "field": field})
    return DropRejected(name, reason, field=field, stage="parse")


def _first_error(exc: ValidationError) -> tuple[str, str | None]:
    """(reason, field) of the first error, counting the others: pydantic's words, never the input."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0]
    reason = _error_message(first)
    rest = errors[1:]
    if rest:
        names = ", ".join(field_path(_loc(e)) or "(top level)" for e in rest[:3])
        more = f"{len(rest)} more error{'s' if len(rest) > 1 else ''}"
        reason += f" (and {more}: {names}{', ...' if len(rest) > 3 else ''})"
    return reason, field_path(_loc(first)) or None


def _error_message(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "required, but missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _loc(error: ErrorDetails) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in error["loc"]]


def _nul_field(model: BaseModel, path: tuple[str | int, ...] = ()) -> str | None:
    """The first text field of a validated model holding a NUL (its input path), or None."""
    for name, info in type(model).model_fields.items():
        found = _nul_in(getattr(model, name), (*path, info.alias or name))
        if found is not None:
            return found
    return None


def _nul_in(value: Any, path: tuple[str | int, ...]) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        return field_path(path) if "\0" in value else None
    if isinstance(value, BaseModel):
        return _nul_field(value, path)
    if isinstance(value, list):
        for index, element in enumerate(value):
            found = _nul_in(element, (*path, index))
            if found is not None:
                return found
    return None


def _read_at_most(fd: int, limit: int, expected: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    size = min(limit, max(expected, 1))  # usually one read takes the whole file, a second sees EOF
    while remaining > 0:
        chunk = os.read(fd, min(remaining, size))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
        size = _READ_CHUNK
    return b"".join(chunks)


def _read_refusal(path: Path, exc: OSError) -> DropRejected:
    reason = _OS_REASONS.get(exc.errno or 0) or f"cannot be read: {exc.strerror or type(exc).__name__}"
    return DropRejected(escape(path.name), reason, stage="read")


def _too_big(size: int, limits: ParseLimits) -> str:
    return f"the file is {size} bytes, over the limit of {limits.max_bytes} bytes"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((label for test, label in kinds if test(mode)), "not a regular file")


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    converted = jsonable(key)
    return converted if isinstance(converted, str) else json.dumps(converted, ensure_ascii=False)


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed kinds (1 and "a"): a total order on their JSON text instead
        return sorted(values, key=lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False))
