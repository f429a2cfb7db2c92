"""Registering drops is per file: a row the store refuses as data fails alone, its batch-mates are registered.
And the enqueuer itself gives the store only names it can hold (the escaped form)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.limits import ParseLimits
from tasks.names import escape, os_path
from tasks.store.ledger import Store
from worker.celeryapp.celery_app import app
from worker.watching.enqueue import Enqueuer


def rows(names: list[str]) -> list[dict[str, object]]:
    return [{"key": f"k{i}", "name": n, "path": f"/drops/{n}", "size": 1, "mtime_ns": i} for i, n in enumerate(names)]


def test_a_row_the_store_refuses_is_refused_alone(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    raw = os.fsdecode(b"caf\xe9.txt")  # the name as Python has it, not escaped: what broke whole batches
    enq = Enqueuer(app, store, ParseLimits(), "run", "watch", "scope")
    fresh = enq._register(rows(["a.txt", raw, "b.txt"]))
    assert sorted(fresh) == ["k0", "k2"]
    assert store.known_keys(["k0", "k1", "k2"]) == {"k0", "k2"}
    assert "refused caf\\xe9.txt: the store cannot register it" in caplog.text


def test_the_enqueuer_registers_odd_names_in_their_escaped_form(store: Store, tmp_path: Path) -> None:
    names = [os.fsdecode(b"caf\xe9.txt"), "a\nb\x1b[2J.txt", "plain.txt"]
    for n in names:
        (tmp_path / n).write_text("---\ntitle: x\n---\n")
    enq = Enqueuer(app, store, ParseLimits(), "run", "watch", "scope")
    wire = [enq._wire(tmp_path / n) for n in names]
    assert [w["name"] for w in wire if w] == [escape(n) for n in names]
    assert [os_path(w["path"]) for w in wire if w] == [(tmp_path / n).absolute() for n in names]
    registered = enq._register([{k: w[k] for k in ("key", "name", "path", "size", "mtime_ns")} for w in wire if w])
    assert len(registered) == 3


def test_a_subfolder_swapped_for_a_link_after_its_file_was_seen_is_not_read_through(store: Store,
                                                                                     tmp_path: Path) -> None:
    root, outside = tmp_path / "drops", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.txt").write_text("---\ntitle: mine\n---\n")
    (outside / "a.txt").write_text("---\ntitle: SECRET\nwebUrl: https://x.test/secret\n---\n")
    enq = Enqueuer(app, store, ParseLimits(), "run", "watch", "scope", root=root)
    assert enq._wire(root / "sub" / "a.txt")["data"]  # type: ignore[index]
    (root / "sub").rename(tmp_path / "moved")
    (root / "sub").symlink_to(outside)  # the same name now leads outside the folder
    wire = enq._wire(root / "sub" / "a.txt")
    assert wire is not None and "data" not in wire
    assert wire["error_stage"] == "read" and "is a symbolic link" in wire["error"], wire
