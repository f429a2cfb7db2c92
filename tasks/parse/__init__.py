"""Parsing a drop: front matter split, the bounded YAML loader (with its fast path), the pydantic item model.

No Celery, no store: text in, an ``Item`` or a ``DropRejected`` with file, field and reason out.
"""
