"""The periodic live backtest of the worker: query ClickHouse, compute, export.

`refresh_live_backtest` is the one call the worker makes on a timer (agents/app.py, in
the ClickHouse thread); `cxpulse evaluate --live` runs the same query and pure function
and prints the figures instead. `client` is the ClickHouse adapter's client (the sink's):
clickhouse-connect itself stays in the adapter (pipeline/adapters/clickhouse/queries.py).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pipeline.domain.backtest import backtest_figures
from pipeline.adapters.observability.metrics import Metrics
from pipeline.adapters.clickhouse.queries import live_backtest_rows

log = logging.getLogger(__name__)


def live_backtest(client: Any, horizon_days: float, as_of: datetime | None = None) -> dict:
    """{as_of, horizon_days, **backtest_figures} for predictions made horizon_days before as_of
    (default: the latest event time stored)."""
    at, rows = live_backtest_rows(client, horizon_days, as_of)
    return {"as_of": at.isoformat() if at else None, "horizon_days": horizon_days, **backtest_figures(rows)}


def refresh_live_backtest(client: Any, metrics: Metrics, horizon_days: float, now: float) -> dict | None:
    """Compute the live backtest and export it as gauges; logs and returns None on failure
    (a ClickHouse outage must not stop the worker)."""
    try:
        figures = live_backtest(client, horizon_days)
    except Exception as exc:  # noqa: BLE001 - reported, retried at the next tick
        log.warning("live backtest failed: %r", exc)
        return None
    metrics.churn_backtest(figures, horizon_days, now)
    log.info("live backtest: %s", figures)
    return figures
