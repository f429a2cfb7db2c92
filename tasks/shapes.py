"""The shapes the stages hand each other, each defined once: a drop (as the ledger knows it, as a task carries it,
as it failed), image statuses, an image check's result, the checker the verify stage calls, and a drop's outcome.
Plain types (no Celery, no I/O), so every layer may import them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol, TypedDict, get_args


class Drop(TypedDict):
    """One drop file as the ledger knows it: its key (folder, path, size, mtime: the same for every watcher of the
    folder) and the escaped name and path (tasks/names.py) that the ledger, logs and reports show."""

    key: str
    name: str
    path: str
    size: int
    mtime_ns: int


class WireDrop(Drop, total=False):
    """A drop as the parse task carries it: its bytes (base64), or why its sender could not read them."""

    data: str
    error: str  # the reason, for the ledger and `failures`
    error_stage: str  # "read" unless said otherwise


class Failure(Drop):
    """A drop refused on the way: the stage that refused it and why (the publish stage records it in the ledger)."""

    stage: str
    reason: str


def wire_of(drop: Drop) -> WireDrop:
    """``drop`` as a wire drop, its bytes or its error still to be set."""
    return WireDrop(key=drop["key"], name=drop["name"], path=drop["path"], size=drop["size"],
                    mtime_ns=drop["mtime_ns"])


def drop_of(row: Mapping[str, Any]) -> Drop:
    """The drop in a wider mapping (a wire drop, a failure, a ledger row), its five fields only."""
    return Drop(key=row["key"], name=row["name"], path=row["path"], size=int(row["size"]),
                mtime_ns=int(row["mtime_ns"]))


ImageStatus = Literal["ok", "broken", "not_image", "unreachable", "blocked"]
IMAGE_STATUSES: tuple[ImageStatus, ...] = get_args(ImageStatus)

Outcome = Literal["published", "unchanged", "failed"]
"""How a drop ended in the ledger (docs/outcomes.md): the three done states."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


class ImageResult(TypedDict):
    """The IMAGE fields of the contract that a check computes."""

    status: ImageStatus
    width: int | None  # real size, when status is ok
    height: int | None
    http_status: int | None
    content_type: str | None
    reason: str | None  # why blocked / unreachable / broken / not_image, short, for people


class Checker(Protocol):
    """What the verify stage needs of an image checker (tasks.images.checker.ImageChecker is the real one)."""

    def check_many(self, urls: Iterable[str], deadline: float | None = None) -> Mapping[str, ImageResult]: ...
