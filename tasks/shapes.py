"""The shapes the stages hand each other, each defined once: image statuses, an image check's result, the checker
the verify stage calls, and a drop's outcome. Plain types (no Celery, no I/O), so every layer may import them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, Protocol, TypedDict, get_args

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
