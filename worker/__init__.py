"""The feedworker runtime: settings, the Celery app, the watcher, the CLI. `celery -A worker worker` starts a worker.

``worker.app`` is built on first use (PEP 562), not when the package is imported: the `feedworker` command imports
``worker.cli`` first, so a bad setting or config file is reported as one clear line (``worker.clierrors``) instead
of failing inside an import.
"""

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.celeryapp.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
