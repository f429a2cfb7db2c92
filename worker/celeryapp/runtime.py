"""What the stage tasks (tasks/stages.py) need of the process that runs them, given to them as the app is made.

tasks/ never imports worker/: the stage tasks reach settings, metrics, the per-process store and image checker,
and the webhook wake-up through this object, which ``make_app`` installs (``tasks.stages.install``).
"""

from __future__ import annotations

from tasks.runtime import StageMetrics
from tasks.shapes import Checker
from tasks.store.ledger import Store
from worker.observing import metrics
from worker.settings import Settings, get_settings


class WorkerRuntime:
    """The worker's side of ``tasks.stages.Runtime``."""

    metrics: StageMetrics = metrics

    def settings(self) -> Settings:
        return get_settings()

    def make_store(self) -> Store:
        from worker.celeryapp.resources import make_store

        return make_store()

    def make_checker(self) -> Checker:
        from worker.celeryapp.resources import make_checker

        return make_checker()

    def after_publish(self, store: Store) -> None:
        from worker.celeryapp.webhooks import after_publish

        after_publish(store)
