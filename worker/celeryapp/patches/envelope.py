"""kombu's Redis transport writes each message envelope with orjson, not the stdlib's encoder (kombu 5.7).

A message on Redis is a JSON envelope (headers, properties, and the body as one base64 string) that kombu's Redis
channel writes with ``kombu.utils.json.dumps``: the stdlib encoder, through a Python ``default``, escaping as it
goes. For a batch that is ~450 KB of text, and it is written twice: when a process publishes the message (the
ingester, the watcher, every stage sending the next) and again when a worker receives it (the copy kept in the
unacked hash until the ack). Measured end to end (bench/e2e.py, 3,000 files, one worker ``-c 2``, three runs
each, interleaved with ``--code`` of the code before): CPU a file over all processes 2,173 -> 2,093 us (medians),
768 -> 802 files/s; ~4 %, for a patch of one function.

Exactness: readers parse the envelope with kombu's ``loads`` (stdlib JSON plus kombu's type markers), so an
envelope may be written by either encoder as long as it reads back the same. orjson writes the same values for
text, integers, booleans, null, lists, tuples and mappings with text keys; spacing and non-ASCII text are spelled
differently and read back the same. Anything else (datetimes, UUIDs, decimals, which kombu writes as typed
markers; non-finite floats; integers past 64 bits; lone surrogates; text subclasses) goes to kombu's own encoder:
``dumps`` checks the envelope's small parts (headers, properties) before it takes the fast path, and the body is
one string. tests/test_patches.py holds the two encoders to the same reading on real and tricky envelopes.

The result is bytes where kombu's is text: every use in ``kombu.transport.redis`` 5.7 hands it to a Redis command,
which takes either. Guard: applied only on the kombu versions that use was read on (``WRITTEN_FOR``); on any other
it is not applied, with a warning.
"""

from __future__ import annotations

import logging
import math
from importlib.metadata import version
from typing import Any

import orjson
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from worker.celeryapp.patches import refused

logger = logging.getLogger(__name__)
WRITTEN_FOR = ("5.7.",)  # kombu versions whose Redis transport uses dumps only as a Redis command's argument
_KOMBU_DUMPS = kombu_json.dumps
_TRANSPORT: Any = kombu_redis  # its module global ``dumps`` is what the patch replaces: untyped on purpose


def dumps(envelope: Any) -> bytes | str:
    """``envelope`` as JSON that kombu's ``loads`` reads back exactly as it reads kombu's own ``dumps``."""
    if _plain(envelope):
        try:
            return orjson.dumps(envelope)
        except TypeError:  # integers past 64 bits, lone surrogates, nesting past orjson's depth
            pass
    return str(_KOMBU_DUMPS(envelope))  # type: ignore[no-untyped-call]


def _plain(value: Any) -> bool:
    """Does ``value`` hold only what both encoders write alike (see the module's docstring)?"""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


def applies_to(kombu_version: str) -> bool:
    return kombu_version.startswith(WRITTEN_FOR)


def apply() -> bool:
    """Make ``kombu.transport.redis`` write envelopes with :func:`dumps`, once per process; False (with a warning)
    when this kombu is not one the patch was written for."""
    if _TRANSPORT.dumps is dumps:
        return True
    found = version("kombu")
    if not applies_to(found):
        return refused(logger, "envelope", "kombu", WRITTEN_FOR, found,
                       "messages are written with kombu's own JSON encoder")
    _TRANSPORT.dumps = dumps
    return True
