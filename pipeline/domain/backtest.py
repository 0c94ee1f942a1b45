"""Live backtest: does the published churn_risk work on this business's own customers?

Each customer's risk as published H days ago (their latest score at or before T − H) is
joined with what happened next: *churned* = no accepted event in (T − H, T], the very
definition churn_risk estimates ("gone, or no activity within the horizon"). From those
rows, `backtest_figures` computes the ROC AUC, the Brier score beside that of the base
rate, and precision / recall at the alert thresholds (each customer against the warning
and the critical threshold of their tier at the prediction, as the alerts fire).

The early warning ("P(leaves within H | still a customer)", the learned model of
pipeline/learning/churn_trainer.py `train_early_warning`) is judged as it was trained: its
value as published 2H days ago, among the customers who were still there (active in the H
days after it), against whether they then left (no accepted event in the last H days):
`early_warning_figures`.

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
    risks, tiers = [r.churn_risk for r in rows], [r.tier for r in rows]
    n, churned, auc, brier, brier_base_rate = _scored(labels, risks)
    out: dict = {"customers": n, "churned": churned, "churn_rate": churned / n if n else None,
                 "auc": auc, "brier": brier, "brier_base_rate": brier_base_rate}
    for level in LEVELS:
        alerted, p, rc = alert_figures(labels, risks, tiers, level, thresholds)
        out[f"alerted_{level}"] = alerted
        out[f"precision_{level}"] = p
        out[f"recall_{level}"] = rc
    return out


def alerted_at(score: float | None, tier: str, level: str = "warning",
               thresholds: Mapping[str, tuple[float, float]] = CHURN_THRESHOLDS) -> bool:
    """Whether `score` reaches the churn alert threshold of `tier` at `level` (LEVELS), as an
    alert fires; None (no score) never does, an unknown tier has the standard thresholds."""
    return score is not None and score >= thresholds.get(tier, thresholds["standard"])[LEVELS.index(level)]


def alert_figures(labels: Sequence[bool], scores: Sequence[float | None], tiers: Sequence[str],
                  level: str = "warning", thresholds: Mapping[str, tuple[float, float]] = CHURN_THRESHOLDS
                  ) -> tuple[int, float | None, float | None]:
    """(customers alerted, precision, recall) of the alert thresholds (`alerted_at`) applied to
    `scores` against `labels`; precision is None when nobody is alerted, recall when no label
    is positive."""
    alerted = [alerted_at(s, t, level, thresholds) for s, t in zip(scores, tiers)]
    p, rc = precision_recall_at(list(labels), [1.0 if a else 0.0 for a in alerted], 0.5)
    return sum(alerted), (p if any(alerted) else None), (rc if any(labels) else None)


@dataclass(frozen=True)
class EarlyWarningRow:
    customer_id: str
    early_warning: float  # as published at the prediction instant (2H before the backtest's)
    left: bool            # still there in the H days after it, then no accepted event in the next H


def early_warning_figures(rows: Sequence[EarlyWarningRow]) -> dict:
    """{customers, left, leave_rate, mean_early_warning, auc, brier, brier_base_rate} of the
    early warning; None where undefined (AUC needs both classes). `mean_early_warning` beside
    `leave_rate` is its calibration in the large. No alert reads the early warning, so there
    are no thresholds to judge."""
    labels = [r.left for r in rows]
    warnings = [r.early_warning for r in rows]
    n, left, auc, brier, brier_base_rate = _scored(labels, warnings)
    return {"customers": n, "left": left, "leave_rate": left / n if n else None,
            "mean_early_warning": sum(warnings) / n if n else None,
            "auc": auc, "brier": brier, "brier_base_rate": brier_base_rate}


def _scored(labels: list[bool], risk: list[float]) -> tuple[int, int, float | None, float | None, float | None]:
    """(rows, positives, ROC AUC, Brier, Brier of the base rate) of predictions `risk`."""
    n, positives = len(labels), sum(labels)
    return (n, positives, roc_auc(labels, risk) if 0 < positives < n else None,
            brier_score(labels, risk) if n else None,
            (positives / n) * (1 - positives / n) if n else None)
