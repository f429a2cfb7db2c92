"""The feedworker runtime: settings, the Celery app, the watcher, the CLI. `celery -A worker worker` starts a worker."""

from worker.celery_app import app

__all__ = ["app"]
