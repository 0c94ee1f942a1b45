"""The hazard model of the causal generator: experiences cause departures.

Every customer present on day d (whole days since the stream start) leaves during that day
with probability 1 − exp(−h_d), where

    h_d = baseline · Π_{incidents i with r_i < d ≤ r_i + decay_days} HR[factor_i]

r_i is the moment the incident became visible in the stream (a late delivery at its
delivery, an unacknowledged complaint at its acknowledgement deadline, ...), in days since
the start; an incident counts from the first whole day after it was revealed and for
`decay_days` days (a step, not a fade). Incidents of one factor stack multiplicatively.

The **oracle** is the best achievable probability of leaving within the next `window` days
for a customer still present at a cut (a whole day c), from the incidents revealed before
the cut: 1 − exp(−Σ_{d=c}^{c+window−1} h_d) with h_d from those incidents only. Incidents
revealed after the cut are ignored (not integrated at their expected rate), so the oracle
is exact for "what is known at the cut" and slightly below the realised hazard of
customers who go on having incidents.

Factor names are the churn-factor vocabulary of DESIGN.md §2. Pure: no I/O, no clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

# The incident factors the causal generator plants (DESIGN.md §2 vocabulary).
INCIDENT_FACTORS: tuple[str, ...] = (
    "late_fulfilment", "refunds_returns", "high_effort", "detractor", "low_ratings",
    "sla_breaches", "unresolved_complaints", "failed_recovery",
)

Incident = tuple[float, str]   # (reveal time in days since the stream start, factor)


@dataclass(frozen=True)
class HazardModel:
    """Baseline daily hazard, hazard ratio per incident factor, and how long an incident lasts."""
    name: str
    baseline: float                      # daily hazard of leaving with no incident in force
    ratios: Mapping[str, float] = field(default_factory=dict)
    decay_days: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.baseline < 1:
            raise ValueError(f"baseline daily hazard must be in (0, 1), got {self.baseline}")
        if self.decay_days <= 0:
            raise ValueError(f"decay_days must be positive, got {self.decay_days}")
        for f, hr in self.ratios.items():
            if f not in INCIDENT_FACTORS:
                raise ValueError(f"unknown incident factor {f!r} (one of {', '.join(INCIDENT_FACTORS)})")
            if not hr > 0:
                raise ValueError(f"hazard ratio of {f} must be positive, got {hr}")

    def ratio(self, factor: str) -> float:
        return self.ratios.get(factor, 1.0)

    def to_json(self) -> dict:
        return {"name": self.name, "baseline": self.baseline, "decay_days": self.decay_days,
                "ratios": {f: self.ratio(f) for f in INCIDENT_FACTORS}}


PRESETS: dict[str, HazardModel] = {
    # incidents drive departures clearly (a failed recovery multiplies the hazard by 8 for a month)
    "strong": HazardModel("strong", baseline=0.0006, decay_days=30.0, ratios={
        "late_fulfilment": 3.0, "refunds_returns": 2.5, "high_effort": 2.5, "detractor": 4.0,
        "low_ratings": 3.0, "sla_breaches": 3.0, "unresolved_complaints": 5.0, "failed_recovery": 8.0}),
    # incidents matter, but little: most leavers leave at the baseline rate
    "weak": HazardModel("weak", baseline=0.0012, decay_days=45.0, ratios={
        "late_fulfilment": 1.5, "refunds_returns": 1.4, "high_effort": 1.4, "detractor": 1.8,
        "low_ratings": 1.5, "sla_breaches": 1.6, "unresolved_complaints": 2.0, "failed_recovery": 2.5}),
}


def parse_ratios(text: str) -> dict[str, float]:
    """`NAME=VALUE,...` → {factor: hazard ratio}; ValueError naming the bad item."""
    out: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in INCIDENT_FACTORS:
            raise ValueError(f"bad hazard ratio {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(INCIDENT_FACTORS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"bad hazard ratio {item!r}: {value!r} is not a number") from None
    return out


def hazard_model(preset: str = "strong", ratios: Mapping[str, float] | None = None,
                 baseline: float | None = None, decay_days: float | None = None) -> HazardModel:
    """A preset, with any hazard ratios, baseline or decay overridden (the name then says so)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown hazard setting {preset!r} (one of {', '.join(PRESETS)})")
    m = PRESETS[preset]
    if not ratios and baseline is None and decay_days is None:
        return m
    return replace(m, name=f"{preset}+custom", ratios={**m.ratios, **(ratios or {})},
                   baseline=m.baseline if baseline is None else baseline,
                   decay_days=m.decay_days if decay_days is None else decay_days)


def in_force(incidents: Iterable[Incident], day: int, model: HazardModel) -> list[Incident]:
    """The incidents that multiply the hazard of whole day `day`."""
    return [(r, f) for r, f in incidents if r < day <= r + model.decay_days]


def daily_hazard(incidents: Iterable[Incident], day: int, model: HazardModel) -> float:
    """h_day = baseline · Π HR of the incidents in force on that day."""
    log_h = math.log(model.baseline)
    for _, f in in_force(incidents, day, model):
        log_h += math.log(model.ratio(f))
    return math.exp(log_h)


def dominant_factor(incidents: Iterable[Incident], day: int, model: HazardModel) -> str | None:
    """The factor whose incidents in force on `day` add the most log-hazard (ties: the
    first in INCIDENT_FACTORS order); None when no incident with a ratio above 1 is in force."""
    total: dict[str, float] = {}
    for _, f in in_force(incidents, day, model):
        total[f] = total.get(f, 0.0) + math.log(model.ratio(f))
    best = max(INCIDENT_FACTORS, key=lambda f: total.get(f, 0.0))
    return best if total.get(best, 0.0) > 0 else None


def oracle_drivers(incidents: Sequence[Incident], cut_day: int, model: HazardModel,
                   window_days: int = 30) -> list[str]:
    """The oracle's own drivers at the cut: the factors of the incidents revealed before the
    cut, by the log-hazard they add over the next `window_days` days (log HR × days in
    force within the window), largest first; factors adding nothing are left out. The best
    any model can name at the cut: a departure whose dominant incident is revealed after
    the cut cannot be explained by then."""
    total: dict[str, float] = {}
    for r, f in incidents:
        if r >= cut_day:
            continue
        days_in_force = sum(1 for d in range(cut_day, cut_day + window_days) if r < d <= r + model.decay_days)
        total[f] = total.get(f, 0.0) + math.log(model.ratio(f)) * days_in_force
    return [f for f, v in sorted(total.items(), key=lambda fv: (-fv[1], fv[0])) if v > 0]


def oracle_probability(incidents: Sequence[Incident], cut_day: int, model: HazardModel,
                       window_days: int = 30) -> float:
    """P(leave within days cut_day .. cut_day + window_days − 1 | present at the cut), from the
    incidents revealed before the cut (later incidents ignored)."""
    known = [(r, f) for r, f in incidents if r < cut_day]
    total = sum(daily_hazard(known, d, model) for d in range(cut_day, cut_day + window_days))
    return 1.0 - math.exp(-total)
