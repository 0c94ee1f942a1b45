"""A learned churn model as the core sees it: a value that turns a feature vector into a
calibrated risk, the risk of the reference customer (the baseline), and exact additive
per-feature contributions. The core never trains and never imports a learning library:
the model arrives as a value (`pipeline/learning/` builds it), and scoring stays pure.

Drivers from contributions: the contributions of the features of one factor are summed
(`FEATURE_FACTOR`, one table); the factors with a positive sum are the drivers, largest
first, scaled so that they add up to the risk above the customer's own baseline — the same
contract as the hand-set model (`pipeline/domain/churn.py`), so alerts ("a churn alert needs a
reason") and the score record read them unchanged. The customer's baseline is the model's
baseline moved by the features with no sign prior (orders, tenure, value, tier), which name
no driver (`customer_baseline`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Protocol, Sequence

from pipeline.domain.churn import MAX_DRIVERS, MIN_CONTRIBUTION, ChurnAssessment, _logit, _sigmoid
from pipeline.domain.churn import PopulationParams
from pipeline.domain.churn_features import FEATURE_DIRECTION, FEATURE_FACTOR, FEATURE_NAMES, churn_features
from pipeline.domain.scoring import Profile
from pipeline.domain.state import CustomerState


class ChurnModel(Protocol):
    """What scoring needs of a learned model."""
    version: str
    feature_names: tuple[str, ...]

    def explain(self, features: Sequence[float]) -> tuple[float, float, list[float]]:
        """(risk, baseline risk, per-feature contributions on the model's log-odds scale,
        in feature order; baseline log-odds + Σ contributions = the customer's log-odds)."""
        ...


# The features with no sign prior (volume, tenure, value, tier: who the customer is, not what
# happened to them) set the customer's own baseline and name no driver.
_PROFILE = tuple(d == 0 for d in FEATURE_DIRECTION)


def factor_contributions(contributions: Sequence[float]) -> dict[str, float]:
    """Sum of the contributions of each factor's features that carry a sign prior."""
    out: dict[str, float] = {}
    for name, c, profile_only in zip(FEATURE_NAMES, contributions, _PROFILE):
        if not profile_only:
            factor = FEATURE_FACTOR[name]
            out[factor] = out.get(factor, 0.0) + c
    return out


def customer_baseline(contributions: Sequence[float], baseline: float) -> float:
    """The customer's own baseline risk: the model's baseline (the average customer's)
    moved by the contributions of the features with no sign prior — the risk of a customer
    like this one (orders, tenure, value, tier) to whom nothing in particular happened."""
    own = sum(c for c, profile_only in zip(contributions, _PROFILE) if profile_only)
    return _sigmoid(_logit(baseline) + own)


def drivers_from(contributions: Sequence[float], risk: float, baseline: float) -> list[tuple[str, float]]:
    """The factors that raise the risk above the customer's own baseline
    (`customer_baseline`), largest first, their shares of (risk − that baseline) in
    proportion to their log-odds contributions (MIN_CONTRIBUTION, MAX_DRIVERS as the
    hand-set model, whose baseline is also the customer's own). Before the MAX_DRIVERS cut
    they sum to max(0, risk − customer_baseline(contributions, baseline)). A feature with no
    sign prior names no driver: many orders or a long tenure are no reason to act on, and
    counted as `declining_frequency` or `inactivity` they named a reason the customer did not
    show."""
    by_factor = factor_contributions(contributions)
    positive = {f: c for f, c in by_factor.items() if c > 0}
    total = sum(positive.values())
    lift = max(0.0, risk - customer_baseline(contributions, baseline))
    if total <= 0 or lift <= 0:
        return []
    shares = sorted(((f, lift * c / total) for f, c in positive.items()), key=lambda fc: (-fc[1], fc[0]))
    return [(f, c) for f, c in shares if c >= MIN_CONTRIBUTION][:MAX_DRIVERS]


def explained(model: ChurnModel, features: Sequence[float], what: str = "churn model") -> tuple[float, float, list[float]]:
    """`model.explain(features)`; ValueError when `model` was trained on other features than
    this build computes (`what` names it in the message)."""
    if tuple(model.feature_names) != FEATURE_NAMES:
        raise ValueError(f"{what} {model.version} was trained on other features than this build computes")
    return model.explain(features)


def assess_learned(model: ChurnModel, features: Sequence[float], p_alive: float,
                   what: str = "churn model") -> ChurnAssessment:
    risk, baseline, contributions = explained(model, features, what)
    return ChurnAssessment(risk, p_alive, drivers_from(contributions, risk, baseline), model.version)


def learned_profile(state: CustomerState, p: Profile, model: ChurnModel | None, pop: PopulationParams,
                    early_warning: ChurnModel | None = None) -> Profile:
    """`p` (the hand-set model's profile) with churn_risk and its drivers from `model`, a
    learned model, and `early_warning` (the risk and its drivers, by the same rule) from the
    early-warning model (P(leaves within H | still here), pipeline/learning/churn_trainer.py
    `train_early_warning`); `p` unchanged without either (cold start). `p.churn_hand_set` keeps the hand-set assessment either way."""
    if model is None and early_warning is None:
        return p
    features = churn_features(state, p, pop)
    if model is not None:
        p = replace(p, churn=assess_learned(model, features, p.churn.p_alive))
    if early_warning is not None:
        p = replace(p, early_warning=assess_learned(early_warning, features, p.churn.p_alive, "early-warning model"))
    return replace(p, churn_features=features)
