"""Verifying image URLs: the checker (httpx on aiohttp), its SSRF guard, the header sniffer, the outcome cache.

No Celery: ``ImageChecker.check_many`` is a synchronous facade the verify stage calls.
"""
