"""Seeing what the worker does: Prometheus metrics, health checks, `status`, logs, broker probes, `trace`, and
the change feed reader.
"""
