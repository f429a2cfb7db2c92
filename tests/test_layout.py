"""The layout's promises that a move could break silently: `celery -A worker` finds the app, and the stage tasks
get their runtime from the app that is made (tasks/ imports nothing from worker/; import-linter checks that)."""

import subprocess
import sys

from celery import Celery
from celery.app.utils import find_app

import worker
import worker.celeryapp.celery_app
from tasks import stages
from worker.celeryapp.runtime import WorkerRuntime


def test_celery_finds_the_app_as_worker_app_after_the_subpackages_are_imported() -> None:
    # worker.celeryapp is imported above: a subpackage named ``app`` would now shadow the lazy attribute
    assert isinstance(worker.app, Celery)
    assert find_app("worker") is worker.app  # what `celery -A worker worker` (and flower) look up
    assert worker.app is worker.celeryapp.celery_app.app


def test_making_the_app_installs_the_stages_runtime() -> None:
    assert isinstance(stages._rt(), WorkerRuntime)
    assert stages._rt().settings().max_worker_deaths >= 1


def test_importing_any_other_module_builds_no_app() -> None:
    """Importing builds nothing: every module of tasks/ and worker/ but the app's own (the one `celery -A worker`
    loads) imports without making the Celery app, which reads the settings and patches kombu. A fresh interpreter,
    so that this test's own imports above do not count."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import tasks, worker\n"
        "names = [m.name for p in (tasks, worker) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "for name in names:\n"
        "    if name != 'worker.celeryapp.celery_app' and '.migrations' not in name:\n"
        "        importlib.import_module(name)\n"
        "print(len(names), 'worker.celeryapp.celery_app' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 60 and out[1] == "False", out
