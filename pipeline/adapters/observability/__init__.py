"""Observability adapter: the Prometheus metrics the worker exports."""
