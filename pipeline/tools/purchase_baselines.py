"""Baseline churn scores for a purchase history, to set churn_risk beside (docs/evaluation.md §3).

Computed from the purchases up to a cutoff only, per customer:

- recency: days since the last purchase (more days = more likely gone);
- RFM percentile score: the mean of three percentile ranks among the customers — recency
  (more recent ranks higher), frequency (purchase days) and monetary value (total spend) —
  in [0, 1]; the churn score is 1 − RFM;
- BG/NBD P(alive) (Fader, Hardie & Lee 2005), fitted here by maximum likelihood with scipy
  on (x repeat purchase days, t_x days from the first to the last purchase day, T days from
  the first purchase day to the cutoff); the churn score is 1 − P(alive).

The classic BG/NBD, not the MBG/NBD of pipeline/domain/churn.py: it is the textbook baseline
(and what `lifetimes` fits), and unlike the MBG/NBD it treats every single-purchase
customer as alive — the comparison should be against the standard model, not our variant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

DAY = 86400.0


@dataclass(frozen=True)
class PurchaseSummary:
    purchase_days: int       # distinct purchase days up to the cutoff
    first_day: float         # days since the epoch (UTC) of the first / last purchase day
    last_day: float
    spend: float             # total spend up to the cutoff
    days: tuple[int, ...] = ()   # the purchase days themselves (days since the epoch), ascending


def summarise(purchases: Iterable[tuple[str, datetime, float]], cutoff: datetime) -> dict[str, PurchaseSummary]:
    """Per customer, from (customer_id, aware time, amount) purchases at or before the cutoff."""
    days: dict[str, set[int]] = {}
    spend: dict[str, float] = {}
    limit = cutoff.timestamp()
    for cid, when, amount in purchases:
        ts = when.timestamp()
        if ts > limit:
            continue
        days.setdefault(cid, set()).add(int(ts // DAY))
        spend[cid] = spend.get(cid, 0.0) + float(amount)
    return {cid: PurchaseSummary(len(d), float(min(d)), float(max(d)), spend[cid], tuple(sorted(d)))
            for cid, d in days.items()}


def recency_days(summary: PurchaseSummary, cutoff: datetime) -> float:
    """Days from the last purchase day to the cutoff."""
    return cutoff.timestamp() / DAY - summary.last_day


def percentile_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Each value's average rank divided by the count, in (0, 1]; ties share their rank."""
    from scipy.stats import rankdata

    ids = list(values)
    ranks = rankdata([values[c] for c in ids]) if ids else []
    return {c: float(r) / len(ids) for c, r in zip(ids, ranks)}


def rfm_scores(summaries: Mapping[str, PurchaseSummary], cutoff: datetime) -> dict[str, float]:
    """RFM percentile score in (0, 1]: mean of the recency (recent = high), frequency and
    monetary percentile ranks."""
    r = percentile_ranks({c: -recency_days(s, cutoff) for c, s in summaries.items()})
    f = percentile_ranks({c: float(s.purchase_days) for c, s in summaries.items()})
    m = percentile_ranks({c: s.spend for c, s in summaries.items()})
    return {c: (r[c] + f[c] + m[c]) / 3.0 for c in summaries}


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float


def bgnbd_inputs(summary: PurchaseSummary, cutoff: datetime) -> tuple[int, float, float]:
    """(x, t_x, T) in days: repeat purchase days, first→last purchase day, first purchase day→cutoff."""
    return (summary.purchase_days - 1, summary.last_day - summary.first_day,
            cutoff.timestamp() / DAY - summary.first_day)


def bgnbd_log_likelihood(params, x, t_x, T):
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6), numpy arrays:
    ln Γ(r+x) − ln Γ(r) + r ln α + ln B(a, b+x) − ln B(a, b) − (r+x) ln(α+T)
    + ln(1 + [x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))."""
    import numpy as np
    from scipy.special import betaln, gammaln

    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    base = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    log_ratio = np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-300)) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return base + np.where(x > 0, np.logaddexp(0.0, log_ratio), 0.0)


def fit_bgnbd(x, t_x, T) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters (L-BFGS-B on log-parameters). RuntimeError when
    the optimiser fails."""
    import numpy as np
    from scipy.optimize import minimize

    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))

    def loss(logp):
        ll = bgnbd_log_likelihood(np.exp(logp), x, t_x, T)
        return -float(ll.mean()) if np.all(np.isfinite(ll)) else 1e12

    res = minimize(loss, np.log([1.0, 10.0, 1.0, 2.0]), method="L-BFGS-B", bounds=[(-9.0, 9.0)] * 4)
    if not res.success and not np.all(np.isfinite(res.x)):
        raise RuntimeError(f"BG/NBD fit failed: {res.message}")
    return BgNbdParams(*(float(v) for v in np.exp(res.x)))


def bgnbd_p_alive(p: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """P(alive | x, t_x, T) = 1 / (1 + [x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))."""
    if x <= 0:
        return 1.0
    log_odds_dead = math.log(p.a / (p.b + x - 1)) + (p.r + x) * (math.log(p.alpha + T) - math.log(p.alpha + t_x))
    return 1.0 / (1.0 + math.exp(min(700.0, log_odds_dead)))


def bgnbd_p_no_purchase(p: BgNbdParams, x: int, t_x: float, T: float, horizon: float) -> float:
    """P(no purchase in (T, T + horizon] | x, t_x, T) under the BG/NBD: dead, or alive with no
    purchase in the horizon (a BG/NBD customer drops out only right after a purchase, so an
    alive customer's chance of none is the gamma posterior's ((α+T)/(α+T+h))^(r+x)):
    1 − P(alive) · (1 − ((α+T)/(α+T+h))^(r+x))."""
    quiet = math.exp((p.r + x) * (math.log(p.alpha + T) - math.log(p.alpha + T + horizon)))
    return 1.0 - bgnbd_p_alive(p, x, t_x, T) * (1.0 - quiet)


# ----------------------------------------------------------------------------- the hindsight ceiling

HINDSIGHT_WINDOWS = (30, 90, 180)   # days before the cutoff whose purchase days are counted


def hindsight_features(summaries: Mapping[str, PurchaseSummary], cutoff: datetime,
                       ids: list[str]) -> list[list[float]]:
    """Per customer of `ids` (their `summarise` summaries), the purchase-history features any
    model of this history has: log(1 + ·) of the days since the last purchase day, the
    purchase days, the days since the first, the spend per purchase day, the mean days
    between purchase days (a single purchase: its days to the cutoff), and the purchase days
    within each of `HINDSIGHT_WINDOWS`."""
    now = cutoff.timestamp() / DAY
    rows = []
    for cid in ids:
        s = summaries[cid]
        n = s.purchase_days
        gap = (s.last_day - s.first_day) / (n - 1) if n > 1 else now - s.first_day
        rows.append([math.log1p(max(v, 0.0)) for v in (
            recency_days(s, cutoff), n, now - s.first_day, s.spend / n, gap,
            *(sum(1 for x in s.days if x > now - w) for w in HINDSIGHT_WINDOWS))])
    return rows


def hindsight_ceiling(features: list[list[float]], labels: list[bool], folds: int = 5, seed: int = 0) -> list[float]:
    """Out-of-fold P(churn) of a logistic regression fitted on the evaluation's own labels
    (`folds`-fold, stratified): a ranking that learned from the answer, which no model
    trained before the cutoff can have. Its AUC marks how far this purchase history's
    features can rank the label at all: the ceiling to read every other score against
    (docs/evaluation.md §4)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [float(p) for p in cross_val_predict(model, features, labels, cv=split, method="predict_proba")[:, 1]]
