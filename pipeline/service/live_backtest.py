"""The periodic live backtest of the worker: fetch the rows, compute, export.

`refresh_live_backtest` is the one call the worker makes on a timer (agents/app.py, in
the ClickHouse thread); `cxpulse evaluate --live` runs the same fetch and pure function
and prints the figures instead. The service knows no adapter: the shell passes the ports,
`fetch_rows` (pipeline.adapters.clickhouse.queries.live_backtest_rows bound to a client),
optionally `fetch_early_warning` (…early_warning_backtest_rows) for the early warning's part,
and `export` (pipeline.adapters.observability.metrics.Metrics.churn_backtest).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from pipeline.domain.backtest import BacktestRow, EarlyWarningRow, backtest_figures, early_warning_figures

log = logging.getLogger(__name__)

# (horizon_days, as_of or None for the latest event time) -> (as_of used, rows)
FetchRows = Callable[[float, "datetime | None"], tuple["datetime | None", Sequence[BacktestRow]]]
# (horizon_days, as_of) -> rows of the early warning published 2·horizon_days before as_of
FetchEarlyWarningRows = Callable[[float, datetime], Sequence[EarlyWarningRow]]
# (figures, horizon_days, wall time) -> None
ExportFigures = Callable[[Mapping[str, Any], float, float], None]


def live_backtest(fetch_rows: FetchRows, horizon_days: float, as_of: datetime | None = None,
                  fetch_early_warning: FetchEarlyWarningRows | None = None) -> dict[str, Any]:
    """{as_of, horizon_days, **backtest_figures} for predictions made horizon_days before as_of
    (default: the latest event time stored); with `fetch_early_warning`, also `early_warning`:
    early_warning_figures of the early warnings published 2·horizon_days before it."""
    at, rows = fetch_rows(horizon_days, as_of)
    out = {"as_of": at.isoformat() if at else None, "horizon_days": horizon_days, **backtest_figures(rows)}
    if fetch_early_warning is not None:
        out["early_warning"] = early_warning_figures(fetch_early_warning(horizon_days, at) if at else [])
    return out


def refresh_live_backtest(fetch_rows: FetchRows, export: ExportFigures, horizon_days: float,
                          now: float, fetch_early_warning: FetchEarlyWarningRows | None = None) -> dict[str, Any] | None:
    """Compute the live backtest and export it (as gauges); logs and returns None on failure
    (a ClickHouse outage must not stop the worker)."""
    try:
        figures = live_backtest(fetch_rows, horizon_days, fetch_early_warning=fetch_early_warning)
    except Exception as exc:  # noqa: BLE001 - reported, retried at the next tick
        log.warning("live backtest failed: %r", exc)
        return None
    export(figures, horizon_days, now)
    log.info("live backtest: %s", figures)
    return figures
