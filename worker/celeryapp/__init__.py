"""The Celery app: its configuration, its message codec, the per-delivery request class, the webhook task, the
patches to Celery's dependencies (patches/), and the start-up heap set aside from the garbage collector (heap.py).
``worker.celeryapp.celery_app`` builds the app when imported.
"""
