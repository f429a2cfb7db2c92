"""The layout's promises that a move could break silently: `celery -A worker` finds the app, and the stage tasks
get their runtime from the app that is made (tasks/ imports nothing from worker/; import-linter checks that)."""

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
