"""The reserved folders a watcher found tampered with, as `feedworker status` reads them: one small JSON file per
drop folder in the state folder, written by the watcher (worker/watching/tamper.py), read here."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STATE_PREFIX = "watch-"


def state_file(root: Path, state_dir: Path) -> Path:
    """The file that holds what the watchers of drop folder ``root`` found (one per folder: its path's hash)."""
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:12]
    return state_dir / f"{STATE_PREFIX}{digest}.json"


def tampered_folders(state_dir: Path) -> list[dict[str, Any]]:
    """What the watchers using this state folder last found: one {"root", "folder", "why"} per problem."""
    found = []
    try:
        files = sorted(state_dir.glob(f"{STATE_PREFIX}*.json"))
    except OSError:
        return []
    for path in files:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            found += [{"root": body["root"], "folder": folder, "why": why}
                      for folder, why in body.get("tampered", {}).items()]
        except (OSError, ValueError, KeyError, AttributeError):
            continue
    return found
