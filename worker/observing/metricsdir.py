"""The metrics' multiprocess directory: where every process's values go, so one process can serve them all.

Every process writes its values to small files in ``PROMETHEUS_MULTIPROC_DIR``, and the process that
serves /metrics adds them up. The variable is prometheus-client's own convention and is how forked pool children
and spawned workers find the directory, so it is the one piece of the environment read here. The directory must
be chosen before the first metric exists: :func:`serve` (the `run` / `watch` process) and the Celery worker's
``worker_init`` (before its pool forks) call :func:`prepare_multiprocess`, which makes a private directory when the
variable is unset and removes it again on :func:`release_multiprocess`. A pool child that exits is marked dead
(:func:`process_exited`), which drops its live gauges; counters of exited children stay, so totals never go back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from worker.observing import metrics

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "feedworker-metrics-"  # + the creating process's id: a private directory, see prepare_multiprocess
_owned_dir: Path | None = None


def owned() -> Path | None:
    """The directory this process made (None: named in the environment, or not prepared)."""
    return _owned_dir


def prepare_multiprocess() -> Path:
    """Make sure this process (and every child it starts afterwards) writes metrics to one shared directory."""
    global _owned_dir
    named = os.environ.get(ENV)
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
    else:
        _remove_orphans()
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        os.environ[ENV] = str(path)
        _owned_dir = path
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client picks its value store when first imported; it was imported before the directory
        # existed, so pick again. Metrics made before now counted in memory only: start them afresh.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        metrics.forget()
    return path


def _remove_orphans() -> None:
    """Private directories of processes that are gone (killed before they could remove their own)."""
    for d in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        try:
            os.kill(int(d.name[len(_PREFIX):].split("-", 1)[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def release_multiprocess() -> None:
    """Remove the directory :func:`prepare_multiprocess` made (a directory named in the environment is kept)."""
    global _owned_dir
    if _owned_dir is None:
        return
    from prometheus_client import values

    close_all = getattr(values.ValueClass, "close_all_files", None)
    if close_all is not None:
        close_all()
    shutil.rmtree(_owned_dir, ignore_errors=True)
    if os.environ.get(ENV) == str(_owned_dir):
        del os.environ[ENV]
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _owned_dir = None
    metrics.forget(quietly=True)  # built again on next use, in memory


def process_exited(pid: int) -> None:
    """A pool child exited: its live gauges go (counters stay, so totals never decrease)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def reap_dead_processes(path: Path) -> None:
    """Drop live gauges of processes that died without a word (SIGKILL, OOM killer): ``worker_process_shutdown``
    never ran for them. Only processes of this machine write here, so a pid that doesn't exist is dead."""
    for f in path.glob("gauge_live*_*.db"):
        try:
            pid = int(f.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                f.unlink()
        except (ValueError, PermissionError):
            continue
