"""The pure core: customer state, signals, SLA rules, scoring, churn and alerts.

May import only the standard library, numpy/scipy and `schemas`; does no I/O and reads no
clock, file or environment: everything it needs arrives as values.
"""
