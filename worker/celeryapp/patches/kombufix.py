"""A fix for kombu's Redis channel, so a worker survives its broker going away (kombu 5.7 with celery 5.7).

When the broker connection is lost, Celery 5.7's consumer closes the connection twice: ``collect()`` (which also
detaches the transport) and then ``close()``. If the channel was waiting in BRPOP at that moment, kombu's
``Channel.close`` first reads the BRPOP reply, gets the connection error, and leaves before marking the channel
closed. The second close then tries to restore the unacknowledged messages through the detached transport, raises
``AttributeError: 'NoneType' object has no attribute 'hostname'``, and Celery takes that for an unrecoverable
error: the worker exits instead of reconnecting. Measured here: a busy worker exited on the 1st to 3rd of six
Redis restarts; with this fix it reconnected after every one (tests/test_faults_redis.py).

The fix: when that read fails because the connection is gone, finish closing the channel anyway. The reply is
lost with the connection; the messages a worker held stay in Redis's unacked hash and come back after the
visibility timeout (or, if Redis itself lost them, the ledger sends the drops again).

Guard: the fix rests on kombu's private ``_in_poll`` and on the close sequence above, as in kombu 5.7. On any other
kombu (or one without ``_in_poll``) it is NOT applied, and a warning says so: patching code we have not read could
do harm, and an upstream fix would make it useless. Before extending ``WRITTEN_FOR``, read the new
``Channel.close`` and run ``tests/test_faults_redis.py``; ``tests/test_patches.py`` shows the effect in a second.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

from kombu.transport import redis as kombu_redis

from worker.celeryapp.patches import refused

logger = logging.getLogger(__name__)
WRITTEN_FOR = ("5.7.",)  # kombu versions whose Channel.close this fix was written against
_FIXED = "_feedworker_close_despite_lost_poll"


def applies_to(kombu_version: str, channel: Any) -> bool:
    return kombu_version.startswith(WRITTEN_FOR) and "_in_poll" in vars(channel)


def apply() -> bool:
    """Patch ``kombu.transport.redis.Channel.close`` once per process; False (with a warning) when this kombu is
    not one the fix was written for."""
    channel: Any = kombu_redis.Channel
    original = channel.close
    if getattr(original, _FIXED, False):
        return True
    found = version("kombu")
    if not applies_to(found, channel):
        return refused(logger, "kombufix", "kombu", WRITTEN_FOR, found,
                       "check whether a worker still exits when Redis restarts (tests/test_faults_redis.py)")

    def close(self: Any) -> None:
        try:
            original(self)
        except self.connection_errors:
            if self.closed:
                raise  # closed, then restoring failed: the caller ignores connection errors
            original(self)  # the failed BRPOP read cleared _in_poll: this pass really closes the channel

    setattr(close, _FIXED, True)
    close.__wrapped__ = original  # type: ignore[attr-defined]
    channel.close = close
    return True
