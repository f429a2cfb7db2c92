"""Fixes to kombu, billiard and Celery behaviour, and kombu's Redis envelopes written with orjson: each guarded by
the version it was written for (tests/test_patches.py).
"""
