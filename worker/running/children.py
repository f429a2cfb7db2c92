"""Child processes that die with their parent: `feedworker run`'s worker, Flower and embedded broker."""

from __future__ import annotations

import os
import sys

# Run before exec in each child: die with the supervisor (PR_SET_PDEATHSIG survives exec), even if it already
# died between fork and here. SIGTERM, so each child still shuts down cleanly (the broker flushes its
# append-only file, the worker warm-shuts down and returns what it held to the queue). Then its niceness: here
# rather than in a preexec_fn, which is unsafe beside the supervisor's threads.
#
# Niceness alone does nothing between children: each starts a session of its own, and where the kernel groups
# processes by session (autogroups: a desktop's or a VM's default, whenever the processes sit in the root CPU
# cgroup) the scheduler first shares the CPU between the groups, equally, and only then by niceness inside each.
# So a niced child also renices its session's group. Unprivileged, the kernel takes one such write a 100 ms
# machine-wide (EAGAIN otherwise): hence the retries. No autogroup file, or autogroups off: nothing to do.
_LAUNCHER = (
    "import ctypes, os, signal, sys, time\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "nice = int(sys.argv[2])\n"
    "os.nice(nice)\n"
    "for _ in range(30 if nice and os.getsid(0) == os.getpid() else 0):\n"
    "    try:\n"
    "        with open('/proc/self/autogroup', 'w') as f: f.write(str(nice))\n"
    "        break\n"
    "    except BlockingIOError: time.sleep(0.05)\n"
    "    except OSError: break\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def bound_to_parent(argv: list[str], nice: int = 0) -> list[str]:
    """``argv`` run so that the child gets SIGTERM when this process dies (the Linux parent-death signal), at
    ``nice`` more niceness than this process, and, if it leads a session of its own, its session's autogroup at
    ``nice`` too.

    ``argv[0]`` must be a path (exec does not search PATH). Note the kernel ties the signal to the thread that
    forked the child: start children from the main thread."""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), str(nice), *argv]
