"""Churn risk with named drivers. Pure functions of the customer state at an instant.

Model (documented in README.md, "Churn risk"):

1. *Still active?* The MBG/NBD model (Batislam et al. 2007, a BG/NBD variant) over the
   customer's active days (days with any event; in a purchase-only history, purchase
   days): while active a customer comes back at a gamma-distributed rate λ ~ Γ(r, α),
   and after each active day — the first included — drops out with a beta-distributed
   probability p ~ B(a, b). With x repeat active days, the last t_x days after the
   first, and T days of age,
       P(alive) = 1 / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x)).
   Churn is "gone, or no active day within the horizon H" (CXPULSE_CHURN_HORIZON_DAYS,
   30): P(active within H) = P(alive) · (1 − ((α+T)/(α+T+H))^(r+x)), the gamma-posterior
   chance of at least one active day in H days. A customer who is alive but comes rarely
   carries more risk than one who comes daily.
   Unlike BG/NBD, a single-purchase customer can have dropped out, so they do not all
   look safe; their silence is judged against the population's rates. (r, α, a, b)
   are re-fitted by maximum likelihood from the customers' states (`fit_population`),
   in the worker on a timer and in replay at the same points of event time.
   A customer with no purchase at all is judged on its latest event the same way.
2. *Experience and behaviour* add log-odds: open complaints, SLA breaches, failed service
   recovery, late fulfilment, detractor answers, low ratings, refunds/returns, effort, a drop
   of the recent perceived experience below the customer's long-run one, and declining
   purchase frequency and spend. Incident factors count incidents above the population's usual rate
   for the customer's own chances (deliveries, orders, answers, contacts; the rates are
   re-fitted with the population parameters).
3. leaving = σ(logit(p) + z_inactivity + Σ z_factor), p the baseline dropout risk; and
   defection while still active, d = P(active) · (q − q0) with
   q = σ(logit(q0) + 1.5 · Σ z_factor), q0 = 0.005: an engaged customer can be driven
   away by bad experiences before any silence shows. risk = 1 − (1 − leaving) · (1 − d).

A driver's *contribution* is its share of the risk above the baseline p, in proportion
to its log-odds: contribution_f = (risk − p) · z_f / Σ z. Contributions are ≥ 0 and sum
to risk − p; drivers are listed largest first. While a complaint is unresolved, the effort
log-odds (repeat contacts, hand-offs) are credited to `unresolved_complaints`: chasing an
open complaint is its symptom, not a second reason.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable

from pipeline.domain.state import FACTOR_KEY, OPPORTUNITY_KEY, CustomerState
from pipeline.domain.vocabulary import CHURN_FACTORS

DAY = 86400.0


PRIOR_INCIDENT_RATES = {"refunds_returns": 0.05, "late_fulfilment": 0.05, "low_ratings": 0.10,
                        "detractor": 0.25, "high_effort": 0.20}
MIN_CHANCES = 30.0   # population chances needed before an incident rate is re-fitted


@dataclass(frozen=True)
class PopulationParams:
    """MBG/NBD population parameters (times in days), re-fitted by maximum likelihood
    from the customers' purchase summaries (`fit_population`)."""
    r: float = 2.0          # shape of the purchase-rate heterogeneity (gamma)
    alpha: float = 60.0     # scale (days): r / alpha is the mean purchase rate per day
    a: float = 1.0          # dropout-probability heterogeneity (beta)
    b: float = 5.0
    fitted_on: int = 0      # customers the last fit used (0 = priors)
    horizon_days: float = 30.0  # churn = gone, or no activity within this horizon (0: gone only)
    # the population's usual incidents per chance (late deliveries per delivery, ...):
    # churn counts a customer's incidents above this rate; re-fitted with (r, α, a, b)
    incident_rates: dict[str, float] = field(default_factory=lambda: dict(PRIOR_INCIDENT_RATES))


def population_json(params: PopulationParams) -> str:
    """The parameters as JSON (`PopulationParams` fields): a population file, a stored fit."""
    return json.dumps(asdict(params), sort_keys=True)


def population_of_json(text: str | bytes) -> PopulationParams:
    return PopulationParams(**json.loads(text))


# log-odds per unit of each factor, and the cap on units (one table).
PRIOR = PopulationParams()
PRIOR_LOG_SD = 1.0

# Log-odds per unit of each factor, and the cap on units; they enter both `leaving` and
# (×DEFECTION_SCALE) the defection term. A unit is one incident *above* the population's
# usual rate for the customer's own number of chances (deliveries, orders, answers,
# contacts), a complaint, or as stated. Each moves the odds by a modest, bounded amount
# (odds ratio 1.2–1.8): silence is the strongest signal of leaving, one bad experience
# does not make a customer leave, and a failed recovery weighs most.
FACTOR_WEIGHTS: dict[str, tuple[float, float]] = {
    "unresolved_complaints": (0.3, 3.0),
    "sla_breaches": (0.4, 3.0),
    "failed_recovery": (0.6, 2.0),
    "late_fulfilment": (0.3, 3.0),
    "detractor": (0.4, 2.0),
    "low_ratings": (0.3, 3.0),
    "refunds_returns": (0.3, 3.0),
    "high_effort": (0.15, 6.0),
    "experience_drop": (0.03, 40.0),     # per point (0–100) of recent experience below the long-run
    "declining_frequency": (0.4, 2.0),   # per doubling of the recent purchase gap over the usual gap
    "declining_spend": (0.3, 2.0),       # per halving of the recent basket against the usual basket
}
assert set(FACTOR_WEIGHTS) | {"inactivity"} == set(CHURN_FACTORS)
DEFECTION_BASE = 0.005   # chance that an active customer with no bad experience defects
DEFECTION_SCALE = 1.5    # experience log-odds count 1.5x towards defection
MIN_CONTRIBUTION = 0.005
MAX_DRIVERS = 5


@dataclass(frozen=True)
class ChurnAssessment:
    risk: float
    p_alive: float
    drivers: list[tuple[str, float]]
    model_version: str | None = None   # the learned model that scored it; None: the hand-set model


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def dropout_probability(repeat: int, pop: PopulationParams) -> float:
    """Probability of having dropped out right after the latest purchase (MBG/NBD)."""
    return pop.a / (pop.a + pop.b + repeat)


def p_alive(repeat: int, t_x_days: float, silence_days: float, pop: PopulationParams) -> float:
    """MBG/NBD: 1 / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x)), with T = t_x + silence."""
    base = pop.alpha + t_x_days
    ratio = ((base + max(0.0, silence_days)) / base) ** (pop.r + repeat)
    return 1.0 / (1.0 + pop.a / (pop.b + repeat) * ratio)


def _log2_ratio(recent: float, usual: float) -> float:
    """log2(recent / usual); 0 when `usual` is not positive."""
    return math.log2(max(1e-9, recent) / usual) if usual > 0 else 0.0


def _declining_frequency(state: CustomerState) -> float:
    """Doublings of the mean of the last two purchase gaps over the customer's usual gap,
    the mean gap over their whole purchase history (first to latest purchase); 0 with
    fewer than five purchases. The whole history, not the few purchases kept, so a
    Poisson-irregular buyer's usual gap is not judged from three noisy gaps."""
    times = [o[1] for o in state.orders]
    if state.n_orders < 5 or len(times) < 3 or state.first_order is None:
        return 0.0
    usual = (times[-1] - state.first_order) / (state.n_orders - 1)
    return max(0.0, _log2_ratio((times[-1] - times[-3]) / 2.0, usual))


def _declining_spend(state: CustomerState) -> float:
    """Halvings of the mean of the last two baskets against the customer's usual basket,
    the mean over all their purchases; 0 with fewer than five purchases. (A state written
    before `spent` was kept judges against the earlier baskets it keeps.)"""
    amounts = [o[2] for o in state.orders]
    if state.n_orders < 5 or len(amounts) < 2:
        return 0.0
    if state.spent > 0:
        usual = state.spent / state.n_orders
    elif len(amounts) >= 5:
        usual = sum(amounts[:-2]) / len(amounts[:-2])
    else:
        return 0.0
    return max(0.0, -_log2_ratio(sum(amounts[-2:]) / 2.0, usual))


def assess_churn(state: CustomerState, as_of: float, pop: PopulationParams, *, units: dict[str, float],
                 open_complaints: int) -> ChurnAssessment:
    """The hand-set model's assessment from the customer's `factor_units` (`units`) and the
    open complaints counted for churn."""
    summary = activity_summary(state, as_of)
    repeat, t_x, T = summary if summary is not None else (0, 0.0, 0.0)
    alive = p_alive(repeat, t_x, T - t_x, pop)
    base_p = dropout_probability(repeat, pop)
    if pop.horizon_days > 0:
        # active again within the horizon: alive, and at least one active day in H days
        quiet = ((pop.alpha + T) / (pop.alpha + T + pop.horizon_days)) ** (pop.r + repeat)
        alive = alive * (1.0 - quiet)
        base_p = 1.0 - (1.0 - base_p) * (1.0 - quiet)
    z = {"inactivity": max(0.0, _logit(1.0 - alive) - _logit(base_p))}
    for name, amount in units.items():
        weight, cap = FACTOR_WEIGHTS[name]
        z[name] = weight * min(cap, max(0.0, amount))
    if open_complaints and z["unresolved_complaints"] > 0:
        # A customer with an unresolved complaint chases it: their repeat contacts and
        # hand-offs are its symptom, so their weight is credited to the complaint (same
        # risk, one reason named once).
        z["unresolved_complaints"] += z["high_effort"]
        z["high_effort"] = 0.0
    experience = sum(z.values()) - z["inactivity"]
    # leaving: silence and experiences on the odds of having left (or of no activity
    # within the horizon), from the customer's baseline dropout risk
    leaving = _sigmoid(_logit(base_p) + z["inactivity"] + experience)
    # defection while still active: bad experiences can drive an engaged customer away
    # before any silence shows (this is what gives alerts lead time)
    q = _sigmoid(_logit(DEFECTION_BASE) + DEFECTION_SCALE * experience)
    defect = alive * max(0.0, q - DEFECTION_BASE)
    risk = 1.0 - (1.0 - leaving) * (1.0 - defect)
    # Contributions share the risk above the baseline dropout in proportion to each
    # driver's log-odds (silence: its lift over the baseline; a factor: weight × units).
    total = sum(z.values())
    lift = max(0.0, risk - base_p)
    contributions = {f: lift * v / total for f, v in z.items()} if total > 0 else {}
    drivers = sorted(((f, c) for f, c in contributions.items() if c >= MIN_CONTRIBUTION),
                     key=lambda fc: (-fc[1], fc[0]))[:MAX_DRIVERS]
    return ChurnAssessment(risk, alive, drivers)


def factor_units(state: CustomerState, pop: PopulationParams, *, factors: dict[str, float],
                 chances: dict[str, float], experience_drop: float, open_complaints: int,
                 sla_breaches: int) -> dict[str, float]:
    """The units of every experience and behaviour factor (FACTOR_WEIGHTS' keys), not
    clipped: incident factors count incidents above the population's usual rate for the
    customer's own chances (negative: fewer than usual). The hand-set model clips and
    weighs them; the learned model (pipeline/domain/churn_features.py) takes them as they are."""
    units = {
        "unresolved_complaints": float(open_complaints),
        "sla_breaches": sla_breaches + factors.get("sla_breaches_folded", 0.0),
        "failed_recovery": factors.get("failed_recovery", 0.0),
        "experience_drop": experience_drop,
        "declining_frequency": _declining_frequency(state),
        "declining_spend": _declining_spend(state),
    }
    for name, usual in pop.incident_rates.items():
        units[name] = factors.get(name, 0.0) - usual * chances.get(name, 0.0)
    return units


def activity_summary(state: CustomerState, as_of: float) -> tuple[int, float, float] | None:
    """(x repeat active days, t_x, T) in days since the first active day, or None.
    An active day is a UTC day with any event (a purchase, a touchpoint, a complaint):
    in a transaction-only history it is a purchase day, as in the classic BG/NBD."""
    if not state.n_days or state.first_day is None or state.last_day is None:
        return None
    t_x = float(state.last_day - state.first_day)
    silence = max(0.0, as_of / DAY - (state.last_day + 1))
    return state.n_days - 1, t_x, t_x + silence


def mbgnbd_log_likelihood(params, x, t_x, T):
    """Per-customer MBG/NBD log-likelihood (Batislam et al. 2007), numpy arrays."""
    import numpy as np
    from scipy.special import betaln, gammaln

    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    alive = betaln(a, b + x + 1) - (r + x) * np.log(alpha + T)
    dropped = betaln(a + 1, b + x) - (r + x) * np.log(alpha + t_x)
    return common + np.logaddexp(alive, dropped)


POPULATION_MAX_CUSTOMERS = 20_000   # customers a population fit reads (the first by customer id)


@dataclass(frozen=True)
class PopulationInput:
    """One customer's share of a population fit: its activity summary as of the fit and its
    decayed incident counts and chances (count, chances per incident factor, in
    OPPORTUNITY_KEY's order). Detached from the state: the worker gathers them on its event
    loop a slice at a time and fits in a thread (pipeline/service/worker_loop.py)."""
    customer_id: str
    activity: tuple[int, float, float] | None
    incidents: tuple[float, ...]


def population_input(state: CustomerState, as_of: float) -> PopulationInput:
    return PopulationInput(state.customer_id, activity_summary(state, as_of), _incidents(state))


def _incidents(state: CustomerState) -> tuple[float, ...]:
    return tuple(v for name, key in OPPORTUNITY_KEY.items()
                 for v in (state.acc.get(FACTOR_KEY[name], 0.0), state.acc.get(key, 0.0)))


def fit_population(states: Iterable[CustomerState], prior: PopulationParams | None = None,
                   as_of: float | None = None, min_customers: int = 50,
                   max_customers: int = POPULATION_MAX_CUSTOMERS) -> PopulationParams:
    """Maximum-likelihood MBG/NBD fit on up to `max_customers` purchase summaries as of
    `as_of` (default: the latest event seen), the customers first by id
    (`fit_population_inputs`). Keeps the prior when too few customers have purchased, or when
    the optimiser does not converge."""
    # customer-id order: the same customers and the same sums whatever order they arrived in
    states = sorted(states, key=lambda s: s.customer_id)
    if as_of is None:
        as_of = max((s.wm for s in states), default=0.0)
    return fit_population_inputs([population_input(s, as_of) for s in states[:max_customers]], prior, min_customers)


def fit_population_inputs(inputs: list[PopulationInput], prior: PopulationParams | None = None,
                          min_customers: int = 50) -> PopulationParams:
    """`fit_population` on the customers' inputs (in customer-id order)."""
    import numpy as np
    from scipy.optimize import minimize

    prior = prior or PopulationParams()
    incident_rates = _incident_rates(inputs, prior.incident_rates)
    prior = replace(prior, incident_rates=incident_rates)
    rows = [i.activity for i in inputs if i.activity is not None]
    if len(rows) < min_customers:
        return prior
    x, t_x, T = (np.array(col, dtype=float) for col in zip(*rows))
    if float(T.max()) <= 0:
        return prior

    centre = np.log([PRIOR.r, PRIOR.alpha, PRIOR.a, PRIOR.b])

    def loss(log_params):
        ll = mbgnbd_log_likelihood(np.exp(log_params), x, t_x, T)
        if not np.all(np.isfinite(ll)):
            return 1e12
        # A weak log-normal prior (MAP): keeps (a, b) from running off together to a
        # degenerate fixed dropout probability when the data hardly identify them.
        penalty = float(((log_params - centre) ** 2).sum()) / (2 * PRIOR_LOG_SD ** 2) / len(x)
        return -float(ll.mean()) + penalty

    start = np.log([prior.r, prior.alpha, prior.a, prior.b])
    res = minimize(loss, start, method="L-BFGS-B", bounds=[(-6.9, 6.9)] * 4)
    if not np.all(np.isfinite(res.x)):
        return prior
    r, alpha, a, b = (float(v) for v in np.exp(res.x))
    return PopulationParams(round(r, 6), round(alpha, 6), round(a, 6), round(b, 6), fitted_on=len(rows),
                            horizon_days=prior.horizon_days, incident_rates=incident_rates)


def fit_incident_rates(states: Iterable[CustomerState], prior: dict[str, float]) -> dict[str, float]:
    """The population's incidents per chance for each incident factor (pooled decayed
    counts over pooled decayed chances); a factor keeps its prior until the population
    has had MIN_CHANCES chances."""
    return _incident_rates([PopulationInput(s.customer_id, None, _incidents(s)) for s in states], prior)


def _incident_rates(inputs: Iterable[PopulationInput], prior: dict[str, float]) -> dict[str, float]:
    names = list(OPPORTUNITY_KEY)
    counts = dict.fromkeys(names, 0.0)
    chances = dict.fromkeys(names, 0.0)
    for i in inputs:
        for n, name in enumerate(names):
            counts[name] += i.incidents[2 * n]
            chances[name] += i.incidents[2 * n + 1]
    return {name: round(min(1.0, counts[name] / chances[name]), 6) if chances[name] >= MIN_CHANCES else prior[name]
            for name in names}
