"""The Celery app: its configuration, its message codec, the per-delivery request class, the webhook task, and
the patches to Celery's dependencies (patches/). ``worker.celeryapp.celery_app`` builds the app when imported.
"""
