"""The one exception tree of feedworker. What a caller does depends only on the branch::

    FeedworkerError
    ├── PermanentError          bad input: never retried; the drop is recorded as failed and quarantined
    │   └── DropRejected        a drop file that cannot become a record (names file, field, reason, stage)
    ├── ChecksTimedOut          a batch's image checks passed their deadline (the verify stage splits the batch)
    └── TransientError          the world was briefly unavailable: retried with backoff and jitter
        ├── StoreUnavailable    the database refused or dropped the connection
        └── BrokerUnavailable   Redis / the embedded broker did not answer
"""

from __future__ import annotations


class FeedworkerError(Exception):
    """Base of every error feedworker raises on purpose."""


class PermanentError(FeedworkerError):
    """Retrying cannot help: the input itself is wrong."""


class DropRejected(PermanentError):
    """A drop that is refused. ``str()`` is the message a person acts on: file, field and reason."""

    def __init__(self, file: str, reason: str, field: str | None = None, stage: str = "parse") -> None:
        self.file, self.reason, self.field, self.stage = file, reason, field, stage
        where = f"field {field!r}: " if field else ""
        super().__init__(f"{file}: {where}{reason}")

    @property
    def summary(self) -> str:
        """The reason with its field, without the file name (the ledger keeps the name beside it)."""
        return f"{self.field}: {self.reason}" if self.field else self.reason


class ChecksTimedOut(FeedworkerError):
    """The image checks of one call did not finish by their deadline; the unfinished ones were cancelled. The
    deadline is the checker's own, not a signal: on Celery's threads pool (the verify worker) there are no soft
    time limits."""


class TransientError(FeedworkerError):
    """Worth another try after a pause."""


class StoreUnavailable(TransientError):
    """The store could not be reached or dropped the connection."""


class BrokerUnavailable(TransientError):
    """The broker could not be reached."""
