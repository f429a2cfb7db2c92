"""Linking: canonical URLs for item identity, parsed items to record drafts, and the merge rules that decide
what a publish changes (docs/identity.md). No SQL, no Celery.
"""
