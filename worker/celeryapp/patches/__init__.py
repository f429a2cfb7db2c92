"""Fixes to kombu, billiard and Celery behaviour, and kombu's Redis envelopes written with orjson: each guarded by
the version it was written for (tests/test_patches.py).
"""

from __future__ import annotations

import logging


def refused(logger: logging.Logger, patch: str, package: str, written_for: tuple[str, ...], found: str,
            then: str, what: str = "not applied") -> bool:
    """Say that ``patch`` is left out on this ``package`` (``found``), written for versions ``written_for``, and
    what to do or expect ``then``; False, for ``return refused(...)`` from a patch's ``apply``."""
    logger.warning("%s: %s: written for %s %s, found %s; %s", patch, what, package,
                   "/".join(f"{v}x" for v in written_for), found, then)
    return False
