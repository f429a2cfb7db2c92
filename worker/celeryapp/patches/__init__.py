"""Fixes to kombu and billiard behaviour, each guarded by the version it was written for (tests/test_patches.py).
"""
