"""Pure prediction metrics: how well a risk score separates and calibrates known outcomes.

ROC AUC, precision / recall at a threshold, recall at a minimum precision, the Brier score,
a reliability (calibration) table, lift share against an oracle, top-k driver share and a
bootstrap interval of the AUC. Labels are truthy for the positive class (churned); scores
are probabilities in [0, 1]. No I/O: used by the live backtest (pipeline.domain.backtest)
and the offline evaluations (pipeline.tools.evaluate, pipeline.tools.causal_evaluate).
docs/evaluation.md explains each figure.
"""
from __future__ import annotations

from typing import Sequence


def _same_length(labels: Sequence, scores: Sequence) -> None:
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")


def roc_auc(labels: Sequence[bool | int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a
    random negative, ties counting one half (Mann-Whitney U with average ranks).

    Raises ValueError when the lengths differ or one class is absent.
    """
    _same_length(labels, scores)
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        avg_rank = (i + j) / 2.0 + 1.0          # 1-based average rank of the tie group
        rank_sum += avg_rank * sum(1 for k in order[i:j + 1] if labels[k])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def precision_recall_at(labels: Sequence[bool | int], scores: Sequence[float],
                        threshold: float) -> tuple[float, float]:
    """(precision, recall) when `score >= threshold` predicts positive.

    Precision is 0.0 when nothing is predicted positive; recall is 0.0 when there are no positives.
    """
    _same_length(labels, scores)
    tp = sum(1 for y, s in zip(labels, scores) if y and s >= threshold)
    fp = sum(1 for y, s in zip(labels, scores) if not y and s >= threshold)
    fn = sum(1 for y, s in zip(labels, scores) if y and s < threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall


def recall_at_precision(labels: Sequence[bool | int], scores: Sequence[float],
                        min_precision: float) -> tuple[float, float | None]:
    """(recall, threshold): the highest recall of any threshold `score >= t` whose precision is
    at least `min_precision`, and the highest such threshold; (0.0, None) when none reaches it."""
    _same_length(labels, scores)
    n_pos = sum(1 for y in labels if y)
    best: tuple[float, float | None] = (0.0, None)
    tp = fp = 0
    pairs = sorted(zip(scores, labels), key=lambda p: -p[0])
    for i, (s, y) in enumerate(pairs):
        tp += 1 if y else 0
        fp += 0 if y else 1
        if i + 1 < len(pairs) and pairs[i + 1][0] == s:
            continue                      # a threshold takes all tied scores at once
        if n_pos and tp / (tp + fp) >= min_precision and tp / n_pos > best[0]:
            best = (tp / n_pos, s)
    return best


def brier_score(labels: Sequence[bool | int], scores: Sequence[float]) -> float:
    """Mean squared difference between the predicted probability and the outcome (0 or 1):
    0 is perfect; always predicting the positive share p scores p(1 − p)."""
    _same_length(labels, scores)
    if not labels:
        raise ValueError("Brier score of no predictions")
    return sum((s - (1.0 if y else 0.0)) ** 2 for y, s in zip(labels, scores)) / len(labels)


RELIABILITY_EDGES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def reliability(labels: Sequence[bool | int], scores: Sequence[float],
                edges: Sequence[float] = RELIABILITY_EDGES) -> list[dict]:
    """Calibration table: for each score bin [lo, hi) (the last one includes hi) that holds
    any prediction, how many (`n`), their mean score and the observed positive share. A
    calibrated probability has mean score ≈ observed share in every bin."""
    _same_length(labels, scores)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
        last = i == len(edges) - 2
        sel = [(y, s) for y, s in zip(labels, scores) if lo <= s < hi or (last and s == hi)]
        if sel:
            rows.append({"bin": f"{lo:.2f}-{hi:.2f}", "n": len(sel),
                         "mean_risk": round(sum(s for _, s in sel) / len(sel), 4),
                         "observed": round(sum(1 for y, _ in sel if y) / len(sel), 4)})
    return rows


def lift_share(auc_model: float, auc_oracle: float) -> float:
    """The share of the oracle's lift over chance that a model captures:
    (AUC_model − 0.5) / (AUC_oracle − 0.5). ValueError when the oracle is no better than chance."""
    if auc_oracle <= 0.5:
        raise ValueError(f"oracle AUC {auc_oracle} is no better than chance")
    return (auc_model - 0.5) / (auc_oracle - 0.5)


def top_k_share(planted: Sequence[str], named: Sequence[Sequence[str]], k: int = 2) -> float:
    """Share of cases whose planted driver is among the first k named drivers.
    ValueError when the lengths differ or there is no case."""
    _same_length(planted, named)
    if not planted:
        raise ValueError("top-k share of no cases")
    return sum(1 for d, ns in zip(planted, named) if d in list(ns)[:k]) / len(planted)


def bootstrap_auc_interval(labels: Sequence[bool | int], scores: Sequence[float], resamples: int = 1000,
                           level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC: resample the cases with replacement
    `resamples` times (numpy, seeded), compute each AUC (average ranks, ties ½), and
    return the (1 − level)/2 and (1 + level)/2 quantiles. Resamples with one class only
    are skipped."""
    import numpy as np
    from scipy.stats import rankdata

    _same_length(labels, scores)
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        raise ValueError("ROC AUC needs at least one positive and one negative")
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        yy, ss = y[idx], s[idx]
        n_pos = int(yy.sum())
        n_neg = len(yy) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(ss)
        aucs.append((ranks[yy].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    lo, hi = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
