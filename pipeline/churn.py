"""Churn risk with named drivers. Pure functions of the customer state at an instant.

Model (documented in README.md, "Churn risk"):

1. *Still active?* A BG/NBD-style view of purchases: while active, a customer buys at a
   rate λ with a gamma prior centred on the population's typical gap (`median_gap_days`,
   worth `prior_gaps` pseudo-gaps), updated by the customer's own purchases; after each
   purchase they may drop out with probability p = a / (a + b + repeat purchases). The
   probability of being still active after a silence s is then
       P(alive) = (1-p)·L / ((1-p)·L + p),  L = (B / (B + s))^A,
       A = prior_gaps + repeat purchases,  B = prior_gaps·median_gap + Σ gaps.
   Single-purchase customers lean on the population gap, so they do not all look safe.
   A customer with no purchase at all is judged on its last event the same way.
2. *Experience and behaviour* add log-odds: open complaints, SLA breaches, failed service
   recovery, late fulfilment, detractor answers, low ratings, refunds/returns, effort, a
   CXI drop against the customer's own slow baseline, and declining purchase frequency.
3. risk = σ(logit(p) + z_inactivity + Σ z_factor).

A driver's *contribution* is its share of the risk above the customer's baseline dropout
risk p: contribution_f = (risk − p) · z_f / Σ z. Contributions are in [0, 1] and sum to
risk − p; drivers are listed largest first.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import orjson

if TYPE_CHECKING:
    from pipeline.state import CustomerState

DAY = 86400.0


@dataclass(frozen=True)
class PopulationParams:
    """Population-level parameters, re-fitted periodically from the customers' states."""
    median_gap_days: float = 30.0
    prior_gaps: float = 2.0
    dropout_a: float = 1.0
    dropout_b: float = 5.0
    fitted_on: int = 0          # customers with repeat purchases the fit used (0 = priors)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def load(cls, path: Path | None) -> "PopulationParams":
        if path is None or not Path(path).exists():
            return cls()
        return cls(**orjson.loads(Path(path).read_bytes()))


# log-odds per unit of each factor, and the cap on units (one table).
FACTOR_WEIGHTS: dict[str, tuple[float, float]] = {
    "unresolved_complaints": (0.5, 3.0),
    "sla_breaches": (0.7, 3.0),
    "failed_recovery": (1.0, 2.0),
    "late_fulfilment": (0.45, 3.0),
    "detractor": (0.7, 2.0),
    "low_ratings": (0.35, 3.0),
    "refunds_returns": (0.45, 3.0),
    "high_effort": (0.25, 6.0),
    "experience_drop": (0.06, 40.0),     # per CXI point below the customer's own baseline
    "declining_frequency": (0.8, 2.0),   # per doubling of the recent gap over the usual gap
}
MIN_CONTRIBUTION = 0.005
MAX_DRIVERS = 5


@dataclass(frozen=True)
class ChurnAssessment:
    risk: float
    p_alive: float
    drivers: list[tuple[str, float]]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def dropout_probability(repeat: int, pop: PopulationParams) -> float:
    return pop.dropout_a / (pop.dropout_a + pop.dropout_b + repeat)


def p_alive(repeat: int, sum_gaps_days: float, silence_days: float, pop: PopulationParams) -> float:
    a = pop.prior_gaps + repeat
    b = pop.prior_gaps * pop.median_gap_days + sum_gaps_days
    likelihood = (b / (b + max(0.0, silence_days))) ** a
    p = dropout_probability(repeat, pop)
    alive = (1 - p) * likelihood
    return alive / (alive + p)


def _declining_frequency(times: list[float]) -> float:
    """log2 of (mean of the last two gaps) / (mean of the earlier gaps); 0 when too few."""
    if len(times) < 5:
        return 0.0
    gaps = [b - a for a, b in zip(times, times[1:])]
    recent, earlier = gaps[-2:], gaps[:-2]
    usual = sum(earlier) / len(earlier)
    if usual <= 0:
        return 0.0
    return max(0.0, math.log2(max(1e-9, sum(recent) / len(recent)) / usual))


def assess_churn(state: "CustomerState", as_of: float, pop: PopulationParams, *, factors: dict[str, float],
                 cxi: float | None, baseline_cxi: float | None, open_complaints: int,
                 sla_breaches: int) -> ChurnAssessment:
    if state.n_orders:
        repeat = state.n_orders - 1
        last = state.orders[-1][1] if state.orders else state.wm
        sum_gaps = (last - (state.first_order or last)) / DAY
    else:
        repeat, last, sum_gaps = 0, state.wm, 0.0
    silence = (as_of - last) / DAY
    alive = p_alive(repeat, sum_gaps, silence, pop)
    base_p = dropout_probability(repeat, pop)
    z0 = _logit(base_p)
    units = {
        "unresolved_complaints": float(open_complaints),
        "sla_breaches": sla_breaches + factors.get("sla_breaches_folded", 0.0),
        "failed_recovery": factors.get("failed_recovery", 0.0),
        "late_fulfilment": factors.get("late_fulfilment", 0.0),
        "detractor": factors.get("detractor", 0.0),
        "low_ratings": factors.get("low_ratings", 0.0),
        "refunds_returns": factors.get("refunds_returns", 0.0),
        "high_effort": factors.get("high_effort", 0.0),
        "experience_drop": max(0.0, (baseline_cxi or 0.0) - (cxi or 0.0)) if cxi is not None and baseline_cxi is not None else 0.0,
        "declining_frequency": _declining_frequency([o[1] for o in state.orders]),
    }
    z = {"inactivity": max(0.0, _logit(1 - alive) - z0)}
    for name, amount in units.items():
        weight, cap = FACTOR_WEIGHTS[name]
        z[name] = weight * min(cap, max(0.0, amount))
    total = sum(z.values())
    risk = _sigmoid(z0 + total)
    lift = max(0.0, risk - base_p)
    drivers = []
    if total > 0:
        drivers = sorted(((f, lift * v / total) for f, v in z.items() if lift * v / total >= MIN_CONTRIBUTION),
                         key=lambda fc: (-fc[1], fc[0]))[:MAX_DRIVERS]
    return ChurnAssessment(risk, alive, drivers)


def fit_population(states: Iterable["CustomerState"], prior: PopulationParams | None = None,
                   min_customers: int = 30) -> PopulationParams:
    """Re-fit the population's typical purchase gap from customers with repeat purchases
    (the median of their mean gaps). Keeps the prior when too few customers qualify."""
    prior = prior or PopulationParams()
    gaps = []
    for s in states:
        if s.n_orders >= 2 and s.first_order is not None and s.orders:
            gaps.append((s.orders[-1][1] - s.first_order) / DAY / (s.n_orders - 1))
    if len(gaps) < min_customers:
        return prior
    median = min(365.0, max(1.0, statistics.median(gaps)))
    return replace(prior, median_gap_days=round(median, 3), fitted_on=len(gaps))
