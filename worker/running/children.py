"""Child processes that die with their parent: `feedworker run`'s worker, Flower and embedded broker."""

from __future__ import annotations

import os
import sys

# Run before exec in each child: die with the supervisor (PR_SET_PDEATHSIG survives exec), even if it already
# died between fork and here. SIGTERM, so each child still shuts down cleanly (the broker flushes its
# append-only file, the worker warm-shuts down and returns what it held to the queue). Then its niceness: here
# rather than in a preexec_fn, which is unsafe beside the supervisor's threads.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.nice(int(sys.argv[2]))\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def bound_to_parent(argv: list[str], nice: int = 0) -> list[str]:
    """``argv`` run so that the child gets SIGTERM when this process dies (the Linux parent-death signal), at
    ``nice`` more niceness than this process.

    ``argv[0]`` must be a path (exec does not search PATH). Note the kernel ties the signal to the thread that
    forked the child: start children from the main thread."""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), str(nice), *argv]
