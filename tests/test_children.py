"""The supervisor's launcher (worker/running/children.py): a niced child is niced where the scheduler looks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import autogroups_on, group_nice
from worker.running.children import bound_to_parent

AUTOGROUP = Path("/proc/self/autogroup")
SHOW = [sys.executable, "-c", "import os; print(os.nice(0)); print(open('/proc/self/autogroup').read())"]

needs_autogroups = pytest.mark.skipif(
    not autogroups_on(), reason="this kernel does not group processes by session: niceness alone already orders them")


@needs_autogroups
def test_a_niced_child_in_a_session_of_its_own_renices_its_group() -> None:
    """With autogroups, the CPU is shared between sessions first: a child niced only by os.nice, in a session of
    its own, would still get as much CPU as the live worker's session. So its group is reniced too."""
    out = subprocess.run(bound_to_parent(SHOW, nice=10), capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.splitlines()
    assert int(out[0]) == os.nice(0) + 10
    assert group_nice(out[1]) == 10


@needs_autogroups
def test_a_niced_child_in_its_parents_session_leaves_the_group_alone() -> None:
    """The group is the whole session's: a child that shares its parent's must not renice the parent.

    The file is empty when the session has no autogroup of its own, in the root group: so it is for init's
    session, where a CI runner may start the tests. The child must show the very same line either way."""
    before = AUTOGROUP.read_text()
    out = subprocess.run(bound_to_parent(SHOW, nice=10), capture_output=True, text=True, check=True).stdout
    assert int(out.splitlines()[0]) == os.nice(0) + 10
    assert AUTOGROUP.read_text() == before
    assert out.splitlines()[1] == before.strip()


def test_a_child_not_niced_keeps_its_priority() -> None:
    out = subprocess.run(bound_to_parent(SHOW), capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.splitlines()
    assert int(out[0]) == os.nice(0)
    assert group_nice(out[1]) == 0
