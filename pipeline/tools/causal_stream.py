"""The causal mode of the generator: experiences cause departures (docs/evaluation.md §5).

Each customer buys, contacts support, uses the service and answers surveys at personal
rates. Some of these experiences go wrong — a late delivery, a return, an effortful
contact, a detractor answer, low ratings, a complaint acknowledged too late, left
unresolved or resolved to the customer's dissatisfaction — each with a probability that
depends on the customer's personal experience level. Every customer has a daily hazard
of leaving (pipeline.tools.hazard_model): a baseline, multiplied by the hazard ratio of
every incident in force. Departures are drawn day by day, so customers leave all year
round; after leaving a customer starts nothing (no orders, contacts, answers, complaints,
returns), while the company finishes what is under way (deliveries, complaint handling).

Ground truth (`CausalTruth`): for every customer the departure day (or none), the planted
driver (the incident factor adding the most log-hazard on the departure day, None for a
departure at the baseline rate) and every incident with the moment it was revealed, from
which `oracle(cut_day)` gives the best achievable 30-day probability at any cut.

What the business does right (on-time deliveries, resolved contacts, satisfied complaint
handling inside the sunset rule and the resolution targets of pipeline/domain/sla.py) is
generated so that it is not an incident for anyone; what goes wrong is. Nothing here
knows how the pipeline scores; do not tune it to a scoring formula.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Protocol
from datetime import datetime, timedelta

from pipeline.domain.uplift import is_control
from pipeline.tools.hazard_model import (
    HazardModel, Incident, daily_hazard, dominant_factor, oracle_probability,
)
from pipeline.tools.operators import OperatorCase, OperatorPolicy, call_offset, case_id, treated_on

_DAY = 86400.0


@dataclass(frozen=True)
class CustomerTruth:
    customer_id: str
    departed_day: int | None            # whole day index of the departure (None: stayed)
    departed_at: datetime | None        # the instant after which the customer started nothing
    driver: str | None                  # planted driver: dominant incident factor on that day
    incidents: tuple[Incident, ...]     # (reveal time in days since start, factor), before departure

    def present_at(self, cut_day: int) -> bool:
        return self.departed_day is None or self.departed_day >= cut_day

    def leaves_within(self, cut_day: int, window_days: int = 30) -> bool:
        return self.departed_day is not None and cut_day <= self.departed_day < cut_day + window_days


@dataclass
class CausalTruth:
    model: HazardModel
    start: datetime
    days: int
    customers: dict[str, CustomerTruth] = field(default_factory=dict)
    operators: OperatorPolicy | None = None
    cases: list[OperatorCase] = field(default_factory=list)           # operators only
    orders: dict[str, list[tuple[float, float]]] = field(default_factory=dict)   # paid (day, amount)
    # called cases: the day the customer would have left without the call (common random numbers:
    # the same daily draws against the hazard without the call's cut; None: would have stayed)
    no_call_departure: dict[str, int | None] = field(default_factory=dict)

    def oracle(self, customer_id: str, cut_day: int, window_days: int = 30) -> float | None:
        """Best achievable P(leave within window_days) at the cut; None if already gone."""
        t = self.customers[customer_id]
        if not t.present_at(cut_day):
            return None
        return oracle_probability(t.incidents, cut_day, self.model, window_days)

    def to_json_lines(self, oracle_every_days: int = 7, window_days: int = 30) -> list[dict]:
        """A header line (the hazard model) and one line per customer with its departure,
        driver, incidents and the oracle at every `oracle_every_days`-th whole day."""
        lines: list[dict] = [{"kind": "hazard_model", **self.model.to_json(), "start": self.start.isoformat(),
                              "days": self.days, "oracle_window_days": window_days,
                              "future_incidents": "ignored"}]
        for cid in sorted(self.customers):
            t = self.customers[cid]
            oracle = {str(d): round(p, 6) for d in range(oracle_every_days, self.days + 1, oracle_every_days)
                      if (p := self.oracle(cid, d, window_days)) is not None}
            lines.append({"kind": "customer", "customer_id": cid, "churned": t.departed_day is not None,
                          "departed_day": t.departed_day,
                          "departed_at": t.departed_at.isoformat() if t.departed_at else None,
                          "driver": t.driver,
                          "incidents": [{"at": (self.start + timedelta(days=r)).isoformat(), "day": round(r, 5),
                                         "factor": f} for r, f in t.incidents],
                          "oracle_30d": oracle})
        if self.operators is not None:
            lines.append({"kind": "operators", **self.operators.to_json()})
            for k in self.cases:
                lines.append({"kind": "case", "case_id": k.case_id, "customer_id": k.customer_id,
                              "trigger_day": k.trigger_day, "control": k.control, "call_at_day": k.call_at})
        return lines


class SimulatedCustomer(Protocol):
    """What the simulation reads of a generator._Customer (declared here: the generator
    imports this module, so importing it back would close a cycle)."""
    id: str
    single: bool     # single-purchase customer
    digital: float   # share of digital channels
    tz: int          # UTC offset, minutes
    t0: float        # first day active
    new: bool        # acquired during the window
    aov: float       # average order value


@dataclass
class _Person:
    c: SimulatedCustomer         # generator._Customer (ids, tz, value, channel mix, ...)
    rate: float                  # orders per day
    q: float                     # experience level: > 0 fewer incidents, < 0 more
    leave_at: float = math.inf   # days since start
    incidents: list[Incident] = field(default_factory=list)
    orders: list[tuple[float, float]] = field(default_factory=list)   # paid orders (day, amount)
    case: OperatorCase | None = None
    no_call_day: int | None = None   # called cases: the departure day without the call (same draws)

    def p(self, base: float) -> float:
        """An incident probability scaled by the customer's experience level."""
        return min(0.9, base * math.exp(-0.6 * self.q))


class CausalSimulation:
    """Runs every customer through the hazard model, emitting through a generator._Gen."""

    def __init__(self, gen, model: HazardModel, operators: OperatorPolicy | None = None):
        self.gen = gen
        self.operators = operators
        self.rng: random.Random = gen.rng
        self.model = model
        self.queue: list[tuple[float, int, str, dict]] = []
        self.seq = 0
        self.limit = 0.0   # actions at or after this instant wait in the queue (end of day, departure)

    # -- scheduling ------------------------------------------------------------------
    def later(self, t: float, what: str, **data) -> None:
        """A customer-side action at t (dropped if the customer has left by then)."""
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, what, data))

    def deferred(self, t: float, what: str, **data) -> bool:
        """An action moved into business hours past the current day (or the departure) goes
        back to the queue: True when it did (the caller stops)."""
        if t >= self.limit:
            self.later(t, what, **data)
            return True
        return False

    def incident(self, p: _Person, reveal: float, factor: str) -> None:
        if reveal < p.leave_at and reveal <= self.gen.days:
            p.incidents.append((reveal, factor))

    # -- one customer ----------------------------------------------------------------
    def run(self, p: _Person) -> tuple[int | None, str | None]:
        rng, c, D = self.rng, p.c, self.gen.days
        self.queue = []
        act = 1 / 25.0 if c.single else p.rate
        processes = (("order", p.rate if not c.single else 0.0), ("contact", 0.25 * act + 1 / 60.0),
                     ("service", 0.6 * act + 1 / 30.0), ("relational", 1 / 40.0), ("complaint", 1 / 150.0))
        for what, rate in processes:
            t = c.t0
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= D:
                    break
                self.later(t, what)
        first = c.t0
        if c.new:   # an acquired customer walks awareness -> consideration -> first purchase
            first = self.gen.acquire(c)
            self.later(first, "order")
        elif c.single:
            self.later(c.t0 + rng.uniform(0.01, 1.0), "order")
        departed: int | None = None
        known = 0   # incidents revealed before the current day (operators' trigger)
        for day in range(int(math.floor(c.t0)), int(D)):
            if day > first:   # a customer (first purchase made) for the whole day: may leave during it
                if self.operators is not None and p.case is None:
                    n = sum(1 for r, _ in p.incidents if r < day)
                    if n > known:   # the risk only rises when an incident is revealed
                        known = n
                        self.trigger(p, day)
                h = daily_hazard(p.incidents, day, self.model)
                h0 = h
                if self.operators is not None and treated_on(p.case, day, self.operators):
                    h *= 1.0 - self.operators.effect
                u = rng.random()
                if (p.case is not None and p.case.call_at is not None and p.no_call_day is None
                        and day >= p.case.trigger_day and u < 1.0 - math.exp(-h0)):
                    p.no_call_day = day   # the counterfactual: the same draw against the hazard without the call
                if u < 1.0 - math.exp(-h):
                    departed = day
                    p.leave_at = day + rng.random()
            self.limit = min(day + 1.0, p.leave_at)
            while self.queue and self.queue[0][0] < self.limit:
                t, _, what, data = heapq.heappop(self.queue)
                getattr(self, what)(p, t, **data)
            if departed is not None:
                break
        driver = dominant_factor(p.incidents, departed, self.model) if departed is not None else None
        p.incidents = [(r, f) for r, f in p.incidents if r < p.leave_at]
        return departed, driver

    def trigger(self, p: _Person, day: int) -> None:
        """Open the customer's case when the generator-view risk crosses the threshold."""
        pol = self.operators
        assert pol is not None, "trigger is called only with operators"
        if oracle_probability(p.incidents, day, self.model, 30) < pol.threshold:
            return
        cid = case_id(p.c.id, day)
        control = is_control(cid, pol.control_share)
        p.case = OperatorCase(p.c.id, cid, day, control, None if control else day + call_offset(cid))

    # -- experiences -----------------------------------------------------------------
    def _emit(self, p: _Person, t: float, kind: str, channel: str, body: dict) -> bool:
        return self.gen.emit(p.c, t, kind, channel, body)

    def _ratings(self, dims, good: bool) -> dict:
        pool = (4, 4, 5, 5, 5) if good else (1, 1, 2, 2)
        return {d: self.rng.choice(pool) for d in dims}

    def order(self, p: _Person, t: float) -> None:
        rng, gen, c = self.rng, self.gen, p.c
        ch = gen.order_channel(c)
        if ch in ("store", "call_center", "account_manager"):
            t = gen.business(t, c)
            if self.deferred(t, "order"):
                return
        oid = gen.nid("O")
        amount = f"{max(1.0, rng.lognormvariate(math.log(c.aov) - 0.125, 0.5)):.2f}"
        base = {"order_id": oid, "amount": amount, "currency": "EUR"}
        lead = rng.choice((2, 3, 3, 4, 5))
        promised = math.floor(t + c.tz / 1440.0) + lead + (18.0 - c.tz / 60.0) / 24.0
        promised_s = gen.fmt(promised * _DAY, c.tz)
        self._emit(p, t, "order", ch, {**base, "status": "placed", "promised_at": promised_s})
        if self._emit(p, t + rng.uniform(0.0005, 0.02), "order", ch, {**base, "status": "paid"}):
            p.orders.append((t, float(amount)))
        shipped = t + rng.uniform(0.3, 1.2)
        late = rng.random() < p.p(0.08)
        fulfilled = promised + rng.uniform(1.0, 5.0) if late else max(shipped + 0.2, promised - rng.uniform(0.2, 1.5))
        self._emit(p, shipped, "order", ch, {**base, "status": "shipped", "promised_at": promised_s})
        delivered = self._emit(p, fulfilled, "order", ch, {**base, "status": "delivered", "promised_at": promised_s,
                                                           "fulfilled_at": gen.fmt(fulfilled * _DAY, c.tz)})
        if late and delivered:
            self.incident(p, fulfilled, "late_fulfilment")
            if rng.random() < 0.3:
                self.later(fulfilled + rng.uniform(0.05, 2.0), "complaint", category="reliability")
        if rng.random() < p.p(0.05):
            self.later(fulfilled + rng.uniform(1.0, 10.0), "give_back", base=base, channel=ch)
        if rng.random() < 0.3:
            self.later(fulfilled + rng.uniform(0.3, 3.0), "survey", late=late)

    def give_back(self, p: _Person, t: float, base: dict, channel: str) -> None:
        if self._emit(p, t, "order", channel, {**base, "status": "returned"}):
            self._emit(p, t + self.rng.uniform(0.5, 4.0), "order", channel, {**base, "status": "refunded"})
            self.incident(p, t, "refunds_returns")

    def survey(self, p: _Person, t: float, late: bool = False) -> None:
        """A post-delivery survey: a detractor answer (an incident) or a satisfied one."""
        rng = self.rng
        bad = rng.random() < p.p(0.35 if late else 0.12)
        body: dict = {"stage": "usage", "kind": "survey", "nps": rng.randint(0, 6) if bad else rng.randint(7, 10),
                      "csat": rng.choice((1, 2, 3)) if bad else rng.choice((4, 4, 5))}
        if rng.random() < 0.4:
            body["sentiment"] = round(rng.uniform(-0.9, -0.2) if bad else rng.uniform(0.1, 0.9), 3)
        if self._emit(p, t, "touchpoint", rng.choice(("email", "app", "web")), body) and bad:
            self.incident(p, t, "detractor")

    def relational(self, p: _Person, t: float) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            self.survey(p, t)
        elif r < 0.8:
            self._emit(p, t, "touchpoint", rng.choice(("app", "web", "store")), {"stage": "loyalty", "kind": "renewal"})
        else:
            self._emit(p, t, "touchpoint", rng.choice(("app", "social")), {"stage": "loyalty", "kind": "referral"})

    def service(self, p: _Person, t: float) -> None:
        """Store visit or app use; 40 % rated: low ratings (an incident) or good ones."""
        rng, gen, c = self.rng, self.gen, p.c
        if rng.random() < c.digital:
            ch = rng.choice(("app", "app", "web", "mini_program"))
            body: dict = {"stage": "usage", "kind": "service_delivery"}
            dims: tuple[str, ...] = ("reliability", "tangibles")
        else:
            t = gen.business(t, c)
            if self.deferred(t, "service"):
                return
            ch = rng.choice(("store", "store", "partner"))
            body = {"stage": "usage", "kind": rng.choice(("visit", "service_delivery")), "staff_id": gen.staff_for(c),
                    "wait_seconds": round(rng.uniform(30, 400), 1), "handle_seconds": round(rng.uniform(200, 900), 1)}
            dims = ("tangibles", "assurance", "empathy")
        bad = False
        if rng.random() < 0.4:
            bad = rng.random() < p.p(0.10)
            body["ratings"] = self._ratings(rng.sample(dims, rng.randint(1, len(dims))), not bad)
            body["csat"] = rng.choice((1, 2)) if bad else rng.choice((4, 5))
        if self._emit(p, t, "touchpoint", ch, body) and bad:
            self.incident(p, t, "low_ratings")

    def contact(self, p: _Person, t: float, repeat: int = 0) -> None:
        """A support contact: effortful (long wait, hand-offs, unresolved: an incident) or easy."""
        rng, gen, c = self.rng, self.gen, p.c
        ch = rng.choice(("call_center", "chat", "email") if rng.random() > c.digital else ("chat", "bot", "email"))
        if ch in ("call_center", "chat"):
            t = gen.business(t, c)
            if self.deferred(t, "contact", repeat=repeat):
                return
        hard = rng.random() < p.p(0.12 if repeat == 0 else 0.5)
        body: dict = {"stage": "usage", "kind": "support",
                      "wait_seconds": round(rng.uniform(1200, 3600) if hard else rng.uniform(5, 120), 1),
                      "handle_seconds": round(rng.uniform(600, 1800) if hard else rng.uniform(60, 400), 1),
                      "resolved": not hard, "handoffs": rng.randint(2, 4) if hard else 0}
        if ch != "bot":
            body["staff_id"] = gen.staff_for(c)
        if not self._emit(p, t, "touchpoint", ch, body):
            return
        if hard:
            self.incident(p, t, "high_effort")
            if repeat < 2 and rng.random() < 0.5:
                self.later(t + rng.uniform(0.2, 2.0), "contact", repeat=repeat + 1)
            elif rng.random() < 0.25:
                self.later(t + rng.uniform(0.05, 1.0), "complaint", category="responsiveness")

    def complaint(self, p: _Person, t: float, category: str | None = None) -> None:
        """A complaint and the company's handling of it. Outcomes: handled inside the
        sunset rule and the resolution target, customer satisfied (no incident); an SLA
        breach (never acknowledged, or acknowledged days late; revealed at the sunset
        deadline); left unresolved (revealed when the resolution target passes); or a
        failed recovery (resolved to the customer's dissatisfaction, revealed then)."""
        rng, gen, c = self.rng, self.gen, p.c
        category = category or rng.choice(("tangibles", "reliability", "responsiveness", "assurance", "empathy", "other"))
        sev = rng.choices(("low", "medium", "high", "critical"), (0.35, 0.4, 0.2, 0.05))[0]
        # opened in business hours (UTC 08:00-15:00) so the same-day sunset deadline is clear
        hour = (t - math.floor(t)) * 24.0
        if not 8.0 <= hour < 15.0:
            t = math.floor(t) + (1.0 if hour >= 15.0 else 0.0) + rng.uniform(8.0, 10.0) / 24.0
            if self.deferred(t, "complaint", category=category):
                return
        ch = rng.choice(("call_center", "email", "chat", "store", "web"))
        base = {"complaint_id": gen.nid("K"), "category": category, "severity": sev}
        if not self._emit(p, t, "complaint", ch, {**base, "status": "opened"}):
            return
        sunset = math.floor(t) + 18.0 / 24.0          # CXPULSE_CUTOFF_HOUR 18, UTC
        target = {"critical": 1.0, "high": 2.0, "medium": 3.0, "low": 5.0}[sev] * 0.4   # inside every tier's target
        r = rng.random()
        outcome = ("sla" if r < p.p(0.10) else "unresolved" if r < p.p(0.10) + p.p(0.07)
                   else "failed" if r < p.p(0.10) + p.p(0.07) + p.p(0.12) else "ok")
        if outcome == "sla":
            self.incident(p, sunset, "sla_breaches")
            if rng.random() < 0.4:
                return                                          # never acknowledged, never answered
            ta = t + rng.uniform(1.5, 4.0)
            self._emit(p, ta, "complaint", ch, {**base, "status": "acknowledged"})
            self._emit(p, ta + rng.uniform(0.1, 1.0), "complaint", ch, {**base, "status": "resolved", "satisfied": True})
            return
        ta = t + rng.uniform(0.01, min(0.1, sunset - t - 0.01))
        self._emit(p, ta, "complaint", ch, {**base, "status": "acknowledged"})
        if outcome == "unresolved":
            self.incident(p, t + {"critical": 1.0, "high": 2.0, "medium": 3.0, "low": 5.0}[sev], "unresolved_complaints")
            return
        tr = ta + rng.uniform(0.05, target)
        if outcome == "failed":
            if self._emit(p, tr, "complaint", ch, {**base, "status": "resolved", "satisfied": False}):
                self.incident(p, tr, "failed_recovery")
            return
        res = {**base, "status": "resolved", "satisfied": True}
        if rng.random() < 0.3:
            res["compensation"] = f"{rng.choice((5, 10, 20, 50)):.2f}"
        self._emit(p, tr, "complaint", ch, res)
        if rng.random() < 0.7:
            self._emit(p, tr + rng.uniform(0.5, 5.0), "complaint", ch, {**base, "status": "closed"})


def simulate(gen, customers: list, model: HazardModel, operators: OperatorPolicy | None = None) -> CausalTruth:
    """Run every customer (generator._Customer) through the hazard model; events go to gen.events.
    With `operators`, churn-risk cases are opened, called or kept as control (pipeline.tools.operators)."""
    truth = CausalTruth(model, gen.start, int(gen.days), operators=operators)
    sim = CausalSimulation(gen, model, operators)
    for c in customers:
        p = _Person(c, rate=c.rate, q=c.q / 0.45)
        departed, driver = sim.run(p)
        at = gen.start + timedelta(days=p.leave_at) if departed is not None else None
        truth.customers[c.id] = CustomerTruth(c.id, departed, at, driver, tuple(sorted(p.incidents)))
        truth.orders[c.id] = p.orders
        if p.case is not None:
            truth.cases.append(p.case)
            if p.case.call_at is not None:
                truth.no_call_departure[c.id] = p.no_call_day
    return truth
