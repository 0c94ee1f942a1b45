"""The learned churn model's features: one fixed-order numeric vector per customer at an
instant, derived from the state and its profile, used for training and scoring alike.

Every feature belongs to exactly one factor of the churn-driver vocabulary (DESIGN.md
section 2, `schemas.outputs.ChurnFactor`): a customer's drivers are the factors whose
features push their risk up (the sum of the features' contributions, `churn_model.py`).
`FEATURES` is the one table of names, factors and meanings; nothing else lists them.

Unknown values (no rating yet, one purchase only) are NaN: the trainer imputes them
(the training mean for the linear model; trees route them). No constant here is fitted
to a data set: windows are the churn horizon H or calendar months, scales are logs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.domain.churn import DAY, PopulationParams, activity_summary, p_alive
from pipeline.domain.signals import DIMENSIONS
from pipeline.domain.state import FACTOR_KEY, RECENT_FACTOR_KEY
from schemas.outputs import ChurnFactor

if TYPE_CHECKING:
    from pipeline.domain.scoring import Profile
    from pipeline.domain.state import CustomerState

NAN = float("nan")
PRECISION = 6     # decimals kept of every feature
TIER_RANK = {"standard": 0, "silver": 1, "gold": 2, "platinum": 3}


@dataclass(frozen=True)
class Feature:
    name: str
    factor: ChurnFactor
    meaning: str
    # the domain's prior on the sign of the feature's effect on the risk, which a learned model
    # must respect (pipeline/learning/churn_trainer.py): +1 more of it never lowers the risk
    # (silence, incidents, the hand-set model's factor units), −1 more of it never raises the
    # risk (recent activity, experience levels), 0 no prior (volume, tenure, value, tier)
    direction: int = 0


_F = ChurnFactor
UP, DOWN = 1, -1
# the incident factors the core counts as they happen (state.FACTOR_KEY; SLA breaches are
# read from the complaint records instead)
INCIDENT_COUNTED = (_F.failed_recovery, _F.late_fulfilment, _F.detractor, _F.low_ratings, _F.refunds_returns,
                    _F.high_effort)
FEATURES: tuple[Feature, ...] = (
    # inactivity: silence against the customer's own rhythm and the population's
    Feature("quiet_logit", _F.inactivity, "logit of 1 − P(active within H) from the MBG/NBD fit", UP),
    Feature("gone_logit", _F.inactivity, "logit of 1 − P(alive) from the MBG/NBD fit", UP),
    Feature("silence_days", _F.inactivity, "log(1 + days since the last active day)", UP),
    Feature("silence_vs_own_gap", _F.inactivity, "log((1 + silence) / own mean gap between active days); NaN with one active day", UP),
    Feature("silence_vs_population_gap", _F.inactivity, "log((1 + silence) / the population's mean gap α/r)", UP),
    Feature("active_days", _F.inactivity, "log(1 + distinct active days)"),
    Feature("tenure_days", _F.inactivity, "log(1 + days since the first active day)"),
    # declining_frequency: purchase and visit frequency and its trend
    Feature("declining_frequency", _F.declining_frequency, "unit: doublings of the recent purchase gap over the usual one", UP),
    Feature("orders", _F.declining_frequency, "log(1 + purchases)"),
    Feature("purchase_gap_open", _F.declining_frequency, "log((1 + days since the last purchase) / usual purchase gap); NaN below two purchases", UP),
    Feature("recent_active_vs_usual", _F.declining_frequency, "log((1 + active days in the last H) / (1 + H × own active-day rate))", DOWN),
    # declining_spend: monetary value and its trend (tier is a revenue class)
    Feature("declining_spend", _F.declining_spend, "unit: halvings of the recent basket against the usual one", UP),
    Feature("revenue_365d", _F.declining_spend, "log(1 + net revenue of the trailing 12 months)"),
    Feature("basket", _F.declining_spend, "log(1 + mean paid amount per purchase); NaN without a purchase"),
    Feature("revenue_trend", _F.declining_spend, "log((1 + revenue of the last 3 months) / (1 + a third of the 9 before))"),
    Feature("tier", _F.declining_spend, "tier rank 0–3 (standard … platinum)"),
    # complaints and service recovery
    Feature("unresolved_complaints", _F.unresolved_complaints, "unit: open complaints (double when past resolution target)", UP),
    Feature("sla_breaches", _F.sla_breaches, "unit: complaints that breached an SLA (incl. folded)", UP),
    Feature("open_past_sla", _F.sla_breaches, "open complaints past an SLA deadline now", UP),
    Feature("failed_recovery", _F.failed_recovery, "unit: decayed count of reopened / unsatisfied resolutions", UP),
    # incidents against the customer's own chances (population rate × own chances subtracted)
    Feature("late_fulfilment", _F.late_fulfilment, "unit: late deliveries above the usual rate for own deliveries", UP),
    Feature("detractor", _F.detractor, "unit: detractor answers above the usual rate for own NPS answers", UP),
    Feature("low_ratings", _F.low_ratings, "unit: low ratings above the usual rate for own rated answers", UP),
    Feature("refunds_returns", _F.refunds_returns, "unit: refunds/returns above the usual rate for own orders", UP),
    Feature("high_effort", _F.high_effort, "unit: effortful contacts above the usual rate for own contacts", UP),
    # the same incidents as plain counts over two windows: a 45-day and a one-week half-life
    *(Feature(f"{f.value}_{w}", f, f"{f.value.replace('_', ' ')} incidents, decayed count, {span} half-life",
      UP) for f in INCIDENT_COUNTED for w, span in (("count", "45-day"), ("week", "7-day"))),
    # experience: levels and their recent change
    Feature("experience_drop", _F.experience_drop, "unit: points of recent perceived experience below the long-run", UP),
    Feature("cxi", _F.experience_drop, "CXI 0–100; NaN without evidence", DOWN),
    Feature("cxi_change", _F.experience_drop, "CXI minus its slow baseline", DOWN),
    *(Feature(d, _F.experience_drop, f"{d} score 0–100; NaN without evidence", DOWN) for d in DIMENSIONS),
    *(Feature(f"{d}_change", _F.experience_drop, f"{d} score minus its slow baseline", DOWN) for d in DIMENSIONS),
    Feature("csat", _F.experience_drop, "share of 4–5 CSAT answers, percent", DOWN),
    Feature("nps", _F.experience_drop, "rolling NPS of the customer's answers", DOWN),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_FACTOR: dict[str, str] = {f.name: f.factor.value for f in FEATURES}
FEATURE_DIRECTION: tuple[int, ...] = tuple(f.direction for f in FEATURES)
assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _log_ratio(num: float, den: float) -> float:
    return math.log(num / den) if den > 0 and num > 0 else NAN


def _none(x: float | None) -> float:
    return NAN if x is None else float(x)


def _change(now: float | None, base: float | None) -> float:
    return NAN if now is None or base is None else now - base


def _active_days_within(state: "CustomerState", as_of: float, days: int) -> int:
    """Active days in (as_of − days, as_of] from the 64-day activity bitmap."""
    if state.last_day is None:
        return 0
    days = min(days, 64)
    today = int(as_of // DAY)
    lo = max(0, state.last_day - today)                 # bit of `today` (days after it cannot be set)
    hi = min(64, state.last_day - today + days)          # bits up to the window's start (exclusive)
    if hi <= lo:
        return 0
    mask = ((1 << hi) - 1) ^ ((1 << lo) - 1)
    return bin(state.day_mask & mask).count("1")


def _revenue_trend(state: "CustomerState", as_of: float) -> float:
    from pipeline.domain.utc_month import month_of, month_of_key   # the month arithmetic of the state's buckets

    now = month_of(as_of)
    recent = prior = 0.0
    for key, amount in state.revenue.items():
        age = now - month_of_key(key)
        if 0 <= age < 3:
            recent += amount
        elif 3 <= age < 12:
            prior += amount
    return math.log((1.0 + max(0.0, recent)) / (1.0 + max(0.0, prior) / 3.0))


def churn_features(state: "CustomerState", p: "Profile", pop: PopulationParams) -> list[float]:
    """The feature vector (order of FEATURES) of `state` as of `p.as_of`."""
    as_of = p.as_of
    summary = activity_summary(state, as_of)
    repeat, t_x, T = summary if summary is not None else (0, 0.0, 0.0)
    silence = T - t_x
    alive = p_alive(repeat, t_x, silence, pop)
    active = alive
    if pop.horizon_days > 0:
        quiet = ((pop.alpha + T) / (pop.alpha + T + pop.horizon_days)) ** (pop.r + repeat)
        active = alive * (1.0 - quiet)
    own_gap = t_x / repeat if repeat > 0 else 0.0
    horizon = max(1, int(round(pop.horizon_days or 30.0)))
    usual_rate = state.n_days / (T + 1.0)
    recent = _active_days_within(state, as_of, horizon)
    if state.n_orders >= 2 and state.first_order is not None and state.orders:
        last_order = state.orders[-1][1]
        usual_gap = (last_order - state.first_order) / DAY / (state.n_orders - 1)
        purchase_gap_open = _log_ratio(1.0 + max(0.0, as_of - last_order) / DAY, usual_gap)
    else:
        purchase_gap_open = NAN
    u = p.churn_units
    from pipeline.domain.scoring import FACTOR_HALF_LIFE_DAYS, RECENT_FACTOR_HALF_LIFE_DAYS

    lag = {w: 0.5 ** (max(0.0, as_of - state.wm) / (half_life * DAY))
           for w, half_life in (("count", FACTOR_HALF_LIFE_DAYS), ("week", RECENT_FACTOR_HALF_LIFE_DAYS))}
    keys = {"count": FACTOR_KEY, "week": RECENT_FACTOR_KEY}
    counts = {f"{f.value}_{w}": state.acc.get(keys[w][f.value], 0.0) * lag[w]
              for f in INCIDENT_COUNTED for w in ("count", "week")}
    values = {
        "quiet_logit": _logit(1.0 - active),
        "gone_logit": _logit(1.0 - alive),
        "silence_days": math.log1p(silence),
        "silence_vs_own_gap": _log_ratio(1.0 + silence, own_gap),
        "silence_vs_population_gap": _log_ratio(1.0 + silence, pop.alpha / pop.r),
        "active_days": math.log1p(state.n_days),
        "tenure_days": math.log1p(T),
        "declining_frequency": u["declining_frequency"],
        "orders": math.log1p(state.n_orders),
        "purchase_gap_open": purchase_gap_open,
        "recent_active_vs_usual": math.log((1.0 + recent) / (1.0 + horizon * usual_rate)),
        "declining_spend": u["declining_spend"],
        "revenue_365d": math.log1p(p.revenue_365d),
        "basket": math.log1p(max(0.0, state.spent) / state.n_orders) if state.n_orders else NAN,
        "revenue_trend": _revenue_trend(state, as_of),
        "tier": float(TIER_RANK[p.tier]),
        "unresolved_complaints": u["unresolved_complaints"],
        "sla_breaches": u["sla_breaches"],
        "open_past_sla": float(sum(1 for rec in state.complaints if rec.is_open and p.slas[rec.id].breached)),
        "failed_recovery": u["failed_recovery"],
        "late_fulfilment": u["late_fulfilment"],
        "detractor": u["detractor"],
        "low_ratings": u["low_ratings"],
        "refunds_returns": u["refunds_returns"],
        "high_effort": u["high_effort"],
        **counts,
        "experience_drop": u["experience_drop"],
        "cxi": _none(p.cxi),
        "cxi_change": _change(p.cxi, p.baseline_cxi),
        **{d: _none(p.dims[d]) for d in DIMENSIONS},
        **{f"{d}_change": _change(p.dims[d], p.baseline_dims.get(d)) for d in DIMENSIONS},
        "csat": _none(p.csat),
        "nps": _none(p.nps),
    }
    # rounded to 1e-6: the state's decayed sums carry float noise that depends on the order
    # events arrived in (~1e-13); a feature must not (a fit on it would differ in its last bits)
    return [round(values[name], PRECISION) for name in FEATURE_NAMES]
