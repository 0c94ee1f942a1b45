"""The experience-scoring core: apply one event to a customer's state, and view the
state as a score at an instant. Pure Python, event time only, deterministic.

`apply` keeps time-decayed evidence referenced to the state's watermark, so the same set
of events gives the same state in any arrival order within the lateness bound. `view`
adds time-driven rules (complaint deadlines, decay, silence) for a given instant: the
worker calls it after each micro-batch (as of the customer's latest event) and from its
timer sweep (as of now); `cxpulse replay --as-of` calls the very same function.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import cast
from datetime import datetime, timezone

from pipeline.domain import signals
from pipeline.domain.churn import ChurnAssessment, PopulationParams, assess_churn, factor_units
from pipeline.domain.business_calendar import BusinessCalendar
from pipeline.domain.sla import at_risk_from, resolve_deadline_ts, sunset_deadline_ts
from pipeline.domain.utc_month import month_key, month_of, month_of_key
from pipeline.domain.vocabulary import DIMENSIONS, TIERS
from pipeline.domain.state import (
    DAY_MASK_BITS, DIM_KEY, FACTOR_KEY, FACTOR_OF_KEY, MAX_COMPLAINTS, MAX_CONTACTS, MAX_ORDERS, MAX_REVERSALS,
    OPPORTUNITY_KEY, RECENT_FACTOR_KEY, REVENUE_MONTHS, ComplaintRec, CustomerState, fingerprint, legacy_fingerprint,
)
from schemas.events import Complaint, Order, Touchpoint
from schemas.records import ChurnDriverDict, ScoreDict

DAY = 86400.0
FACTOR_HALF_LIFE_DAYS = 45.0      # churn-factor counters (late deliveries, refunds, ...)
RECENT_FACTOR_HALF_LIFE_DAYS = 7.0   # the same incidents, counted for the last week or so
BASELINE_HALF_LIFE_FACTOR = 4.0   # the experience baseline decays 4x slower than the score
RECENT_HALF_LIFE_DAYS = 14.0      # "recent" perceived experience, against its long-run mean
COMPLAINT_RETENTION = 30 * DAY    # closed complaints are kept this long, then folded in
STATUS_RANK = {"opened": 0, "acknowledged": 1, "escalated": 2, "reopened": 3, "resolved": 4, "closed": 5}
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}

Outcome = str  # "applied" | "duplicate" | "too_late" | "too_many_open_complaints"


@dataclass(frozen=True)
class ScoringParams:
    half_life_days: float = 90.0
    lateness_seconds: float = 3600.0
    tier_thresholds: tuple[float, float, float] = (500.0, 2000.0, 10000.0)
    cxi_weights: tuple[float, ...] = (0.11, 0.32, 0.22, 0.19, 0.16)
    sla_max_ack_seconds: float = 0.0
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)   # deadlines (sunset rule, targets)
    resolve_in_business_hours: bool = False
    sla_warning_share: float = 0.75   # sla_at_risk once this share of the time to a deadline has passed
    escalate_after_seconds: float = 7200.0   # an unacknowledged critical alert escalates after this long
    max_open_complaints: int = 100   # a new open complaint beyond this many is refused (too_many_open_complaints)
    control_share: float = 0.0   # share of churn_risk alerts kept as a control group (pipeline.domain.uplift)

    @property
    def rates(self) -> dict[str, float]:
        """Decay rate (per second) by accumulator prefix."""
        h = self.half_life_days * DAY
        return {"d": math.log(2) / h, "b": math.log(2) / (h * BASELINE_HALF_LIFE_FACTOR),
                "k": math.log(2) / h, "f": math.log(2) / (FACTOR_HALF_LIFE_DAYS * DAY),
                "q": math.log(2) / (RECENT_FACTOR_HALF_LIFE_DAYS * DAY),
                "r": math.log(2) / (RECENT_HALF_LIFE_DAYS * DAY),
                "p": math.log(2) / (h * BASELINE_HALF_LIFE_FACTOR)}


# ----------------------------------------------------------------------------------
# accumulators
# ----------------------------------------------------------------------------------

def _advance(state: CustomerState, t: float, rates: dict[str, float]) -> None:
    if t <= state.wm:
        return
    if state.acc:
        dt = t - state.wm
        factors = {p: math.exp(-r * dt) for p, r in rates.items()}
        acc = state.acc
        for key in acc:
            acc[key] *= factors[key[0]]
    state.wm = t


def _add(state: CustomerState, key: str, t: float, amount: float, rates: dict[str, float]) -> None:
    f = math.exp(-rates[key[0]] * (state.wm - t)) if t < state.wm else 1.0
    state.acc[key] = state.acc.get(key, 0.0) + amount * f


# the accumulator keys of each dimension's (weight, weighted score) sums, per prefix: the
# recent ("d") and the slow baseline ("b") one
_DIM_ACC_KEYS = {prefix: {dim: (f"{prefix}.{DIM_KEY[dim]}.w", f"{prefix}.{DIM_KEY[dim]}.s") for dim in DIMENSIONS}
                 for prefix in ("d", "b")}


def _evidence(state: CustomerState, t: float, evidence: list[signals.Evidence], rates: dict[str, float]) -> None:
    for dim, score, weight in evidence:
        for prefix in ("d", "b"):
            w_key, s_key = _DIM_ACC_KEYS[prefix][dim]
            _add(state, w_key, t, weight, rates)
            _add(state, s_key, t, weight * score, rates)


def _factor(state: CustomerState, name: str, t: float, rates: dict[str, float], amount: float = 1.0) -> None:
    _add(state, FACTOR_KEY[name], t, amount, rates)
    _add(state, RECENT_FACTOR_KEY[name], t, amount, rates)


# ----------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------

def apply(state: CustomerState, ev: Touchpoint | Order | Complaint, params: ScoringParams,
          rates: dict[str, float] | None = None) -> Outcome:
    """Apply one validated event. Returns "applied", "duplicate", "too_late" or
    "too_many_open_complaints" (a new open complaint beyond params.max_open_complaints)."""
    rates = rates or params.rates
    t = ev.occurred_at.timestamp()
    if state.seen(ev.event_id):
        return "duplicate"
    if state.n and t < state.wm - params.lateness_seconds:
        return "too_late"
    if isinstance(ev, Complaint) and _opens_one_too_many(state, ev, params):
        return "too_many_open_complaints"
    if not state.customer_id:
        state.customer_id = ev.customer_id
    _advance(state, t, rates)
    state.remember(ev.event_id, t, state.wm - params.lateness_seconds)
    state.n += 1
    _active_day(state, int(t // DAY))
    if isinstance(ev, Touchpoint):
        _apply_touchpoint(state, ev, t, params, rates)
    elif isinstance(ev, Order):
        _apply_order(state, ev, t, params, rates)
    else:
        _apply_complaint(state, ev, t, params, rates)
    _prune_complaints(state, params, rates)
    return "applied"


def _active_day(state: CustomerState, day: int) -> None:
    """Distinct days with any event: the customer's activity, for the 'still active' view.
    `day_mask` bit i marks activity on day `last_day − i` (the last 64 days), so a late
    event's day is recognised in any arrival order."""
    last = state.last_day
    if last is None:
        state.last_day, state.day_mask, state.n_days, state.first_day = day, 1, 1, day
        return
    if day > last:
        shift = day - last
        state.day_mask = ((state.day_mask << shift) | 1) & DAY_MASK_BITS if shift < 64 else 1
        state.last_day = day
    else:
        bit = 1 << (last - day) if last - day < 64 else 0
        if not bit or state.day_mask & bit:
            state.first_day = _earlier_day(state.first_day, day)
            return
        state.day_mask |= bit
    state.n_days += 1
    state.first_day = _earlier_day(state.first_day, day)


def _earlier_day(first: int | None, day: int) -> int:
    return day if first is None else min(first, day)


def _perceived(state: CustomerState, t: float, evidence: list[signals.Evidence], rates: dict[str, float]) -> None:
    """What the customer tells us about their experience (ratings, csat, sentiment,
    resolution, waits), pooled over dimensions, as a recent and a long-run mean: a drop
    of the first below the second is the `experience_drop` churn factor."""
    for _, score, weight in evidence:
        for prefix in ("r", "p"):
            _add(state, f"{prefix}.w", t, weight, rates)
            _add(state, f"{prefix}.s", t, weight * score, rates)


def _apply_touchpoint(state: CustomerState, ev: Touchpoint, t: float, params: ScoringParams,
                      rates: dict[str, float]) -> None:
    evidence = signals.touchpoint_evidence(ev)
    _evidence(state, t, evidence, rates)
    if ev.csat is not None:
        evidence = evidence + [("csat", signals.rating_score(ev.csat), signals.W_RATING)]
    _perceived(state, t, evidence, rates)
    if (t, ev.stage.value) >= (state.stage_t, state.stage or ""):
        state.stage, state.stage_t = ev.stage.value, t
    if ev.csat is not None:
        _add(state, "k.csat_n", t, 1.0, rates)
        if ev.csat >= 4:
            _add(state, "k.csat_ok", t, 1.0, rates)
    # One answer, one incident factor: an answer with an NPS is judged as a (possible)
    # detractor, its ratings and CSAT are not also counted as low ratings.
    if ev.nps is None and (ev.csat is not None or ev.ratings is not None):
        _add(state, OPPORTUNITY_KEY["low_ratings"], t, 1.0, rates)
    if ev.nps is not None:
        _add(state, OPPORTUNITY_KEY["detractor"], t, 1.0, rates)
        _add(state, "k.nps_n", t, 1.0, rates)
        if ev.nps >= 9:
            _add(state, "k.nps_p", t, 1.0, rates)
        elif ev.nps <= 6:
            _add(state, "k.nps_d", t, 1.0, rates)
            _factor(state, "detractor", t, rates)
        if (t, ev.nps) >= (state.nps_t, state.nps_last if state.nps_last is not None else -1):
            state.nps_last, state.nps_t = ev.nps, t
    if ev.nps is None and signals.is_low_rating(ev):
        _factor(state, "low_ratings", t, rates)
    if ev.handoffs:
        _factor(state, "high_effort", t, rates, 0.5 * ev.handoffs)
    if signals.is_contact(ev):
        _add(state, OPPORTUNITY_KEY["high_effort"], t, 1.0, rates)
        _contact(state, t, params, rates)


def _contact(state: CustomerState, t: float, params: ScoringParams, rates: dict[str, float]) -> None:
    """Repeat-contact detection that gives the same count in any arrival order: a contact
    is a repeat when another contact precedes it within the window. Of several contacts at
    the same instant one is the first (ties have no order), so the count over a multiset of
    times is: at each distinct time with m contacts, m repeats when an earlier contact lies
    within the window, else m − 1.

    A new contact at t is a repeat when a kept contact lies in [t − window, t] (an equal time
    included: t is then a further copy of an instant that has its first). It turns into a
    repeat the first contact of each distinct later time c ≤ t + window that had no earlier
    contact within the window (strictly earlier: copies at c itself do not precede it)."""
    window = signals.REPEAT_WINDOW_SECONDS
    contacts = state.contacts
    repeats = [t] if any(t - window <= o <= t for o in contacts) else []
    for c in sorted(set(contacts)):
        if t < c <= t + window and not any(c - window <= o < c for o in contacts):
            repeats.append(c)
    for r in repeats:
        _evidence(state, r, signals.repeat_contact_evidence(), rates)
        _factor(state, "high_effort", r, rates)
    contacts.append(t)
    contacts.sort()
    horizon = state.wm - window - params.lateness_seconds
    state.contacts = [c for c in contacts if c >= horizon][-MAX_CONTACTS:]


def _apply_order(state: CustomerState, ev: Order, t: float, params: ScoringParams,
                 rates: dict[str, float]) -> None:
    evidence = signals.order_evidence(ev)
    _evidence(state, t, evidence, rates)
    status = ev.status.value
    if ev.promised_at is not None and ev.fulfilled_at is not None:
        _add(state, OPPORTUNITY_KEY["late_fulfilment"], t, 1.0, rates)
        if ev.fulfilled_at > ev.promised_at:
            _factor(state, "late_fulfilment", t, rates)
    amount = round(float(ev.amount), 4)
    oh = fingerprint(ev.order_id)
    legacy = legacy_fingerprint(ev.order_id)   # entries of states written before 64-bit fingerprints
    if status in ("refunded", "returned"):
        _factor(state, "refunds_returns", t, rates)
        new, old = _first_per_order(state.reversals, oh, legacy, int(t), amount)
        if new:
            state.reversals = state.reversals[-MAX_REVERSALS:]
            _revenue(state, t, -amount)
        elif old is not None:
            _revenue(state, old[1], old[2])
            _revenue(state, t, -amount)
    elif status == "paid":
        t = float(int(t))  # whole seconds are plenty for purchase cadence, and keep the state small
        new, old = _first_per_order(state.orders, oh, legacy, int(t), amount)
        if new:
            state.n_orders += 1
            state.spent = round(state.spent + amount, 4)
            _add(state, OPPORTUNITY_KEY["refunds_returns"], t, 1.0, rates)
            state.orders.sort(key=lambda r: r[1])
            state.orders = state.orders[-MAX_ORDERS:]
            _revenue(state, t, amount)
        elif old is not None:
            state.orders.sort(key=lambda r: r[1])
            state.spent = round(state.spent - old[2] + amount, 4)
            _revenue(state, old[1], -old[2])
            _revenue(state, t, amount)
        if new or old is not None:
            state.first_order = t if state.first_order is None else min(state.first_order, t)


def _first_per_order(entries: list[list], oh: int, legacy: int, t: int, amount: float) -> tuple[bool, list | None]:
    """Keep one [order fingerprint, time, amount] per order: the earliest event (at equal
    times the larger amount), so any arrival order gives the same result. Returns (added a
    new order, the entry it replaced). An entry with the order's 32-bit `legacy`
    fingerprint (a state written before) is the same order, and takes the 64-bit one."""
    for rec in entries:
        if rec[0] == oh or rec[0] == legacy:
            rec[0] = oh
            if (t, -amount) < (rec[1], -rec[2]):
                old = list(rec)
                rec[1], rec[2] = t, amount
                return False, old
            return False, None
    entries.append([oh, t, amount])
    return True, None


def _revenue(state: CustomerState, t: float, amount: float) -> None:
    key = month_key(t)
    state.revenue[key] = round(state.revenue.get(key, 0.0) + amount, 4)
    newest = month_of(state.wm)
    state.revenue = {k: v for k, v in state.revenue.items() if newest - month_of_key(k) < REVENUE_MONTHS}


def _apply_complaint(state: CustomerState, ev: Complaint, t: float, params: ScoringParams,
                     rates: dict[str, float]) -> None:
    rec = next((c for c in state.complaints if c.id == ev.complaint_id), None)
    if rec is None:
        rec = ComplaintRec(id=ev.complaint_id, channel=ev.channel.value, category=ev.category.value,
                           severity=ev.severity.value, first_seen=t, status=ev.status.value, status_t=t)
        state.complaints.append(rec)
    status = ev.status.value
    rec.first_seen = min(rec.first_seen, t)
    rec.version += 1
    if SEVERITY_RANK[ev.severity.value] > SEVERITY_RANK[rec.severity]:
        rec.severity = ev.severity.value
    if (t, STATUS_RANK[status]) >= (rec.status_t, STATUS_RANK[rec.status]):
        rec.status, rec.status_t = status, t
    if ev.satisfied is not None:
        # the customer's verdict of the latest event that gave one (by event time, then status;
        # at a tie a dissatisfied one): not the status winner's, which may carry none, so that
        # any arrival order of the same events gives the same verdict
        by = [t, STATUS_RANK[status], 0 if ev.satisfied else 1]
        if rec.satisfied_by is None or by >= rec.satisfied_by:
            rec.satisfied, rec.satisfied_by = ev.satisfied, by
    if ev.compensation is not None:
        rec.compensation = max(rec.compensation, float(ev.compensation))
    if status == "opened":
        if rec.opened is None or t < rec.opened:
            rec.opened = t
            rec.channel, rec.category = ev.channel.value, ev.category.value
        _evidence(state, t, signals.complaint_opened_evidence(ev.category.value, ev.severity.value), rates)
        return
    rec.ack = t if rec.ack is None else min(rec.ack, t)
    if status == "escalated":
        _evidence(state, t, signals.escalation_evidence(), rates)
    elif status in ("resolved", "closed"):
        rec.resolved = t if rec.resolved is None else min(rec.resolved, t)
        if ev.satisfied is not None:  # the event's own category: independent of arrival order
            _evidence(state, t, signals.recovery_evidence(ev.category.value, ev.satisfied), rates)
            if not ev.satisfied:
                _factor(state, "failed_recovery", t, rates)
    elif status == "reopened":
        rec.reopened += 1
        _evidence(state, t, signals.recovery_evidence(ev.category.value, False), rates)
        _factor(state, "failed_recovery", t, rates)


# ----------------------------------------------------------------------------------
# complaints: deadlines and timing evidence (pure functions of the record)
# ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComplaintSla:
    ack_due: float
    resolve_due: float
    ack_breached: bool
    resolve_breached: bool
    ack_warn: float | None = None       # when the answer is at risk (None: warnings off)
    resolve_warn: float | None = None   # when the resolution is at risk
    ack_at_risk: bool = False           # past ack_warn, not answered, not yet breached
    resolve_at_risk: bool = False       # past resolve_warn, not resolved, not yet breached

    @property
    def breached(self) -> bool:
        return self.ack_breached or self.resolve_breached


@lru_cache(maxsize=65536)
def complaint_deadlines(start: float, severity: str, tier: str,
                        params: ScoringParams) -> tuple[float, float, float | None, float | None]:
    """(answer due, resolution due, answer at risk, resolution at risk) of a complaint
    opened at `start`: pure, so cached (the sweep re-views every open complaint)."""
    cal = params.calendar
    ack_due = sunset_deadline_ts(start, cal, params.sla_max_ack_seconds)
    resolve_due = resolve_deadline_ts(start, severity, tier, cal if params.resolve_in_business_hours else None)
    return (ack_due, resolve_due, at_risk_from(start, ack_due, params.sla_warning_share, cal),
            at_risk_from(start, resolve_due, params.sla_warning_share, cal))


def complaint_sla(rec: ComplaintRec, tier: str, as_of: float, params: ScoringParams) -> ComplaintSla:
    ack_due, resolve_due, ack_warn, resolve_warn = complaint_deadlines(rec.start, rec.severity, tier, params)
    ack_breached = (rec.ack > ack_due) if rec.ack is not None else as_of > ack_due
    resolve_breached = (rec.resolved > resolve_due) if rec.resolved is not None else as_of > resolve_due
    ack_at_risk = ack_warn is not None and rec.ack is None and not ack_breached and as_of >= ack_warn
    resolve_at_risk = (resolve_warn is not None and rec.resolved is None and not resolve_breached
                       and as_of >= resolve_warn)
    return ComplaintSla(ack_due, resolve_due, ack_breached, resolve_breached, ack_warn, resolve_warn,
                        ack_at_risk, resolve_at_risk)


def complaint_timing_evidence(rec: ComplaintRec, sla: ComplaintSla) -> list[tuple[float, list[signals.Evidence]]]:
    """(time, evidence) from how fast the complaint was answered and resolved."""
    out: list[tuple[float, list[signals.Evidence]]] = []
    start = rec.start
    if rec.ack is not None:
        out.append((rec.ack, signals.ack_time_evidence((rec.ack - start) / 3600.0)))
    elif sla.ack_breached:
        out.append((sla.ack_due, signals.breach_evidence()))
    if rec.resolved is not None:
        out.append((rec.resolved, signals.resolve_time_evidence((rec.resolved - start) / 3600.0)))
    return out


def _opens_one_too_many(state: CustomerState, ev: Complaint, params: ScoringParams) -> bool:
    """A complaint not yet known, open by this event, for a customer who already has
    `max_open_complaints` open: refused (open complaints are never folded, so this is the
    cap that keeps the state bounded)."""
    if ev.status.value in ("resolved", "closed") or any(c.id == ev.complaint_id for c in state.complaints):
        return False
    return sum(1 for c in state.complaints if c.is_open) >= params.max_open_complaints


def _prune_complaints(state: CustomerState, params: ScoringParams, rates: dict[str, float]) -> None:
    """Fold closed complaints older than the retention into the accumulators; beyond
    MAX_COMPLAINTS fold the oldest closed ones too. Open complaints are never folded: they
    still wait for their SLA alert and their answer (their number is capped in `apply`)."""
    horizon = state.wm - COMPLAINT_RETENTION - params.lateness_seconds
    keep: list[ComplaintRec] = []
    fold: list[ComplaintRec] = []
    for rec in state.complaints:
        (fold if (not rec.is_open and rec.status_t < horizon) else keep).append(rec)
    if len(keep) > MAX_COMPLAINTS:
        closed = sorted((r for r in keep if not r.is_open), key=lambda r: r.status_t)
        extra = closed[: len(keep) - MAX_COMPLAINTS]
        fold.extend(extra)
        keep = [r for r in keep if not any(r is x for x in extra)]
    if not fold:
        return
    tier = tier_of(revenue_365d(state, state.wm), params)
    for rec in fold:
        sla = complaint_sla(rec, tier, state.wm, params)
        if sla.breached and not rec.recovery_ever_failed:
            _factor(state, "sla_breaches_folded", rec.status_t, rates)
        for t, evidence in complaint_timing_evidence(rec, sla):
            _evidence(state, min(t, state.wm), evidence, rates)
    state.complaints = sorted(keep, key=lambda r: r.first_seen)


# ----------------------------------------------------------------------------------
# view
# ----------------------------------------------------------------------------------

def revenue_365d(state: CustomerState, as_of: float) -> float:
    """Net revenue of the trailing 12 calendar months (month granularity) as of `as_of`."""
    now = month_of(as_of)
    total = sum(v for k, v in state.revenue.items() if 0 <= now - month_of_key(k) < 12)
    return max(0.0, round(total, 2))


def tier_of(revenue: float, params: ScoringParams) -> str:
    """The tier whose revenue threshold (`tier_thresholds`: one per step up from the lowest
    tier) the customer's trailing revenue reaches."""
    return TIERS[bisect_right(params.tier_thresholds, revenue)]


@dataclass(frozen=True)
class Profile:
    """Everything the score record, the churn model and the alert rules need at one instant."""
    as_of: float
    dims: dict[str, float | None]
    cxi: float | None
    baseline_cxi: float | None
    csat: float | None
    nps: float | None
    tier: str
    revenue_365d: float
    open_complaints: int
    sla_breaches: int
    slas: dict[str, ComplaintSla]
    churn: ChurnAssessment
    baseline_dims: dict[str, float | None] = field(default_factory=dict)
    churn_units: dict[str, float] = field(default_factory=dict)   # factor units (pipeline.domain.churn.factor_units), for the learned model's features
    churn_hand_set: ChurnAssessment | None = None   # the hand-set model's assessment (= churn when no learned model serves)
    churn_features: list[float] | None = None       # the learned model's features of this profile, when one scored it
    early_warning: ChurnAssessment | None = None    # P(leaves within H | still here) and its drivers, when an early-warning model serves


def _cxi(dims: dict[str, float | None], weights: tuple[float, ...]) -> float | None:
    num = den = 0.0
    for dim, w in zip(DIMENSIONS, weights):
        score = dims[dim]
        if score is not None:
            num += w * score
            den += w
    return num / den if den > 0 else None


def profile(state: CustomerState, as_of: float, params: ScoringParams,
            population: PopulationParams, rates: dict[str, float] | None = None) -> Profile:
    """The customer as of `as_of`. With `churn_model` (a learned model, see
    pipeline/domain/churn_model.py) it scores churn_risk and its drivers; without, the
    hand-set model of pipeline/domain/churn.py does (cold start)."""
    rates = rates or params.rates
    as_of = max(as_of, state.wm)
    revenue = revenue_365d(state, as_of)
    tier = tier_of(revenue, params)
    slas = {rec.id: complaint_sla(rec, tier, as_of, params) for rec in state.complaints}
    virtual: list[tuple[float, list[signals.Evidence]]] = []
    for rec in state.complaints:
        virtual.extend(complaint_timing_evidence(rec, slas[rec.id]))
    acc = state.acc
    dims: dict[str, float | None] = {}
    base: dict[str, float | None] = {}
    for prefix, out in (("d", dims), ("b", base)):
        rate = rates[prefix]
        lag = math.exp(-rate * (as_of - state.wm))
        keys = _DIM_ACC_KEYS[prefix]
        for dim in DIMENSIONS:
            w_key, s_key = keys[dim]
            w = acc.get(w_key, 0.0) * lag
            s = acc.get(s_key, 0.0) * lag
            for t, evidence in virtual:
                f = math.exp(-rate * max(0.0, as_of - t))
                for d, score, weight in evidence:
                    if d == dim:
                        w += weight * f
                        s += weight * score * f
            out[dim] = min(100.0, max(0.0, s / w)) if w > 1e-12 else None
    k_lag = math.exp(-rates["k"] * (as_of - state.wm))
    csat_n = acc.get("k.csat_n", 0.0) * k_lag
    nps_n = acc.get("k.nps_n", 0.0) * k_lag
    csat = 100.0 * acc.get("k.csat_ok", 0.0) * k_lag / csat_n if csat_n > 1e-12 else None
    nps = 100.0 * (acc.get("k.nps_p", 0.0) - acc.get("k.nps_d", 0.0)) * k_lag / nps_n if nps_n > 1e-12 else None
    cxi = _cxi(dims, params.cxi_weights)
    baseline = _cxi(base, params.cxi_weights)
    open_complaints = sum(1 for rec in state.complaints if rec.is_open)
    breaches = sum(1 for sla in slas.values() if sla.breached)
    # For churn, each complaint counts once under the factor that names it best: a failed
    # recovery (reopened, or resolved to the customer's dissatisfaction) is counted by the
    # failed_recovery counter only; otherwise an open complaint past its resolution target
    # is an unresolved complaint (double weight), a missed sunset rule or a late resolution
    # is an SLA breach.
    judged = [rec for rec in state.complaints if not rec.recovery_ever_failed]
    churn_open = sum(1 for rec in judged if rec.is_open)
    churn_breaches = sum(1 for rec in judged if slas[rec.id].breached)
    overdue_open = sum(1 for rec in judged
                       if rec.is_open and slas[rec.id].resolve_breached and not slas[rec.id].ack_breached)
    f_lag = math.exp(-rates["f"] * (as_of - state.wm))
    factors = {name: acc.get(k, 0.0) * f_lag for k, name in FACTOR_OF_KEY.items()}
    chances = {name: acc.get(k, 0.0) * f_lag for name, k in OPPORTUNITY_KEY.items()}
    drop = experience_drop(state)
    units = factor_units(state, population, factors=factors, chances=chances, experience_drop=drop,
                         open_complaints=churn_open + overdue_open, sla_breaches=churn_breaches - overdue_open)
    churn = assess_churn(state, as_of, population, units=units, open_complaints=churn_open + overdue_open)
    return Profile(as_of, dims, cxi, baseline, csat, nps, tier, revenue, open_complaints, breaches, slas, churn,
                   base, units, churn)


PRIOR_WEIGHT = 1.0        # the recent mean is shrunk towards the long-run one by one rating's weight
MIN_BASELINE_WEIGHT = 3.0  # no experience_drop before about three ratings' worth of history


def experience_drop(state: CustomerState) -> float:
    """Points (0–100 scale) by which the customer's recent perceived experience is below
    their long-run one, both as of their latest event: silence does not erase what the
    last experiences were. The recent mean is shrunk towards the long-run mean by one
    rating's weight, so one poor answer moves it less than a run of them."""
    acc = state.acc
    pw = acc.get("p.w", 0.0)
    if pw < MIN_BASELINE_WEIGHT:
        return 0.0
    long_run = acc.get("p.s", 0.0) / pw
    recent = (acc.get("r.s", 0.0) + PRIOR_WEIGHT * long_run) / (acc.get("r.w", 0.0) + PRIOR_WEIGHT)
    return max(0.0, long_run - recent)


def nps_class(score: int | None) -> str | None:
    if score is None:
        return None
    return "promoter" if score >= 9 else "detractor" if score <= 6 else "passive"


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _driver_dicts(drivers: list[tuple[str, float]]) -> list[ChurnDriverDict]:
    """An assessment's drivers as the score record carries them (churn_drivers, early_warning_drivers)."""
    return [{"factor": f, "contribution": round(c, 4)} for f, c in drivers]


def score_record(state: CustomerState, p: Profile) -> ScoreDict:
    """The `cx.scores` record (JSON-ready dict, fields of schemas.outputs.ScoreRecord)."""
    revenue_at_risk = round(p.churn.risk * p.revenue_365d, 2)
    # cast: the five dimension fields are filled from the vocabulary in a loop, which a
    # TypedDict literal cannot check (tests/unit/test_records.py checks the shape).
    return cast(ScoreDict, {
        "schema_version": 1,
        "customer_id": state.customer_id,
        "as_of": iso(p.as_of),
        "version": state.version,
        "cxi": _r(p.cxi),
        **{dim: _r(p.dims[dim]) for dim in DIMENSIONS},
        "csat": _r(p.csat),
        "nps": _r(p.nps),
        "nps_class": nps_class(state.nps_last),
        "tier": p.tier,
        "stage": state.stage,
        "revenue_365d": p.revenue_365d,
        "open_complaints": p.open_complaints,
        "sla_breaches": p.sla_breaches,
        "churn_risk": round(p.churn.risk, 4),
        "churn_drivers": _driver_dicts(p.churn.drivers),
        "churn_model": p.churn.model_version,
        "early_warning": _r(p.early_warning.risk if p.early_warning is not None else None, 4),
        "early_warning_drivers": _driver_dicts(p.early_warning.drivers if p.early_warning is not None else []),
        "revenue_at_risk": revenue_at_risk,
        "events": state.n,
    })
