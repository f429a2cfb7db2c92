"""Saying that a reserved folder was tampered with: once in the log, in `feedworker status`, and as a metric.

The watcher checks its reserved folders on every ledger poll (worker/watching/folders.py) and on every use (a move into
a dated subfolder). What it finds is kept here: a new problem is logged once (not at every poll), its end once
too; the gauge ``feedworker_reserved_folders_tampered`` holds how many there are; and a small file in the state
folder (``.feedworker/watch-<hash>.json``, like ``broker.url``: worker/observing/tampered.py) lets `feedworker
status` show them.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from tasks.names import display, escaped_path
from worker.observing import metrics
from worker.observing.tampered import state_file
from worker.watching.safedir import opened, write_new

logger = logging.getLogger(__name__)


class TamperLog:
    """The reserved folders of one drop folder found tampered with, and who has been told."""

    def __init__(self, root: Path, state_dir: Path) -> None:
        self.root = root
        self.state_file = state_file(root, state_dir)
        self.problems: dict[str, str] = {}
        self._written = False

    def update(self, problems: dict[str, str]) -> None:
        """The problems found in this poll (path -> why); says what is new and what is over."""
        for path, why in problems.items():
            if self.problems.get(path) != why:
                logger.error("reserved folder %s %s: finished drops stay where they are (their outcomes are in the "
                             "store) until it is a real folder of the service's again", display(path), why,
                             extra={"folder": path})
        for path in self.problems.keys() - problems.keys():
            logger.warning("reserved folder %s is fine again", display(path), extra={"folder": path})
        if problems != self.problems or not self._written:
            self.problems = dict(problems)
            metrics.reserved_folders_tampered(len(problems))
            self._write()

    def _write(self) -> None:
        body = {"root": escaped_path(self.root), "tampered": self.problems,
                "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        try:
            self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with opened(os.open(self.state_file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
                write_new(fd, self.state_file.name, json.dumps(body).encode("ascii"), mode=0o600)
            self._written = True
        except OSError as exc:
            logger.debug("cannot write %s: %s", self.state_file, exc)
