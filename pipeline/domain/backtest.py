"""Live backtest: does the published churn_risk work on this business's own customers?

Each customer's risk as published H days ago (their latest score at or before T − H) is
joined with what happened next: *churned* = no accepted event in (T − H, T], the very
definition churn_risk estimates ("gone, or no activity within the horizon"). From those
rows, `backtest_figures` computes the ROC AUC, the Brier score beside that of the base
rate, and precision / recall at the alert thresholds (each customer against the warning
and the critical threshold of their tier at the prediction, as the alerts fire).

Pure: rows in, figures out. The rows come from ClickHouse (pipeline.adapters.clickhouse.queries.live_backtest_rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from pipeline.domain.alerts import CHURN_THRESHOLDS
from pipeline.domain.prediction_metrics import brier_score, precision_recall_at, roc_auc

LEVELS = ("warning", "critical")


@dataclass(frozen=True)
class BacktestRow:
    customer_id: str
    churn_risk: float     # as published at the prediction instant
    tier: str             # the customer's tier at the prediction instant
    active: bool          # any accepted event in the horizon after the prediction


def backtest_figures(rows: Sequence[BacktestRow],
                     thresholds: Mapping[str, tuple[float, float]] = CHURN_THRESHOLDS) -> dict:
    """{customers, churned, churn_rate, auc, brier, brier_base_rate, precision_<level>,
    recall_<level>, alerted_<level>}; figures that need both classes (AUC) or any customer
    are None when undefined. An unknown tier is judged against the standard thresholds."""
    labels = [not r.active for r in rows]
    risk = [r.churn_risk for r in rows]
    n, churned = len(rows), sum(labels)
    out: dict = {"customers": n, "churned": churned, "churn_rate": churned / n if n else None,
                 "auc": roc_auc(labels, risk) if 0 < churned < n else None,
                 "brier": brier_score(labels, risk) if n else None,
                 "brier_base_rate": (churned / n) * (1 - churned / n) if n else None}
    for i, level in enumerate(LEVELS):
        alerted = [r.churn_risk >= thresholds.get(r.tier, thresholds["standard"])[i] for r in rows]
        p, rc = precision_recall_at(labels, [1.0 if a else 0.0 for a in alerted], 0.5)
        out[f"alerted_{level}"] = sum(alerted)
        out[f"precision_{level}"] = p if any(alerted) else None
        out[f"recall_{level}"] = rc if churned else None
    return out
