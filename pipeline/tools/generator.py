"""Synthetic wire-format event streams with known ground truth (deterministic by seed).

The stream models a plausible service business (see docs/evaluation.md):

- customers with long-tailed value (tiers spread over standard/silver/gold/platinum),
  a personal purchase cadence (gamma-distributed rates, some single-purchase customers),
  a personal experience level, a preferred channel mix and a local UTC offset; some are
  acquired during the window and walk the journey awareness → consideration → purchase;
- orders placed → paid → shipped → delivered with promised_at / fulfilled_at (some late),
  some cancelled, refunded or returned; post-delivery surveys;
- touchpoints on every journey stage and channel: browsing, support contacts with waits,
  handle times, first-contact resolution and handoffs, store and app service, account
  manager visits for high-value customers, relational NPS surveys, renewals, referrals;
  staff are ids only and differ in quality (the service-profit chain);
- complaints with lifecycles: opened → acknowledged → (escalated) → resolved → closed,
  some reopened, some acknowledged late or never;
- planted churners: each has one driver from the churn-factor vocabulary whose signal
  appears 1-5 weeks before they leave, after which they have no events at all;
- stayers with the same noise (late orders, complaints, low ratings, pauses) and, for some,
  a "scare" episode that looks like a churn signal but after which they stay.

Nothing here knows how the pipeline scores; it must not be tuned to any scoring formula.

Records come in event-time order with a jitter of at most MAX_JITTER_SECONDS, so every
record's occurred_at is at least (latest occurred_at before it − 10 minutes). Within one
(topic, customer) the records keep their event-time order (one producer per topic).
A few exact duplicates of valid records model at-least-once producers, and a share of
planted invalid records (each with a `defect`) must end as dead letters.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from pipeline.tools.causal_stream import CausalTruth
    from pipeline.tools.hazard_model import HazardModel
    from pipeline.tools.operators import OperatorPolicy

from pipeline.domain.vocabulary import DIMENSIONS


# the drivers this generator can plant (a subset of the ChurnFactor vocabulary)
DRIVERS: tuple[str, ...] = ("inactivity", "declining_frequency", "unresolved_complaints", "sla_breaches",
                            "failed_recovery", "late_fulfilment", "detractor", "low_ratings", "refunds_returns",
                            "high_effort", "experience_drop")
DEFECTS: tuple[str, ...] = (
    "invalid_json", "missing_field", "unknown_enum", "naive_timestamp", "wrong_topic",
    "negative_amount", "unknown_field", "out_of_range", "wrong_type", "bad_version",
)
KINDS = ("touchpoint", "order", "complaint")
MAX_JITTER_SECONDS = 600
CURRENCY = "EUR"
_DAY = 86400.0


@dataclass(frozen=True)
class GeneratedRecord:
    kind: str             # 'touchpoint' | 'order' | 'complaint': the input topic it is sent to
    key: bytes | None     # customer_id utf-8 (None only for some invalid records)
    value: bytes          # the JSON bytes as produced
    valid: bool           # False for the planted invalid records
    defect: str | None = None  # for invalid records, one of DEFECTS


@dataclass(frozen=True)
class GroundTruth:
    customer_id: str
    churned: bool
    churn_at: datetime | None   # time of the churner's last event (causal mode: the departure instant)
    driver: str | None          # the planted churn driver (ChurnFactor vocabulary)


@dataclass
class GeneratedStream:
    records: list[GeneratedRecord]
    truth: dict[str, GroundTruth]
    start: datetime
    end: datetime
    n_duplicates: int = 0
    causal: "CausalTruth | None" = None   # causal mode only: departures, incidents, oracle

    @property
    def counts(self) -> dict[str, int]:
        """Valid records (duplicates included) by kind."""
        c = Counter(r.kind for r in self.records if r.valid)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def n_valid(self) -> int:
        return sum(1 for r in self.records if r.valid)

    @property
    def n_invalid(self) -> int:
        return sum(1 for r in self.records if not r.valid)

    @property
    def defects(self) -> dict[str, int]:
        return dict(Counter(r.defect or "" for r in self.records if not r.valid))

    @property
    def n_churners(self) -> int:
        return sum(1 for t in self.truth.values() if t.churned)

    def values(self) -> list[bytes]:
        return [r.value for r in self.records]

    def summary(self) -> dict:
        return {"customers": len(self.truth), "churners": self.n_churners,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "records": len(self.records), "valid": self.n_valid, "by_kind": self.counts,
                "duplicates": self.n_duplicates, "invalid": self.n_invalid, "defects": self.defects}


# ----------------------------------------------------------------------------- model


@dataclass
class _Plan:
    churn: bool = False
    driver: str | None = None
    s: float = math.inf      # signal onset (days since start)
    e: float = math.inf      # churners: planned departure; stayers: end of the scare episode

    def active(self, t: float) -> str | None:
        return self.driver if self.s <= t < self.e else None

    def frac(self, t: float) -> float:
        return min(1.0, max(0.0, (t - self.s) / max(self.e - self.s, 1e-9)))


@dataclass
class _Customer:
    idx: int
    id: str
    value: float          # revenue over the window (the window stands in for the trailing year)
    rate: float           # orders per day
    single: bool          # single-purchase customer
    q: float              # personal experience level around the population mean
    digital: float        # share of digital channels
    tz: int               # UTC offset, minutes
    t0: float             # first day active (0 for established customers)
    new: bool
    am_staff: str | None  # account manager for high-value customers
    aov: float = 0.0
    plan: _Plan = field(default_factory=_Plan)
    complaints: int = 0


@dataclass
class _Ev:
    ts: int               # seconds since start
    kind: str
    cust: str
    payload: dict
    tz: int
    ms: int = 0           # milliseconds (app and web producers stamp them)


class _Gen:
    def __init__(self, rng: random.Random, start: datetime, days: int):
        self.rng = rng
        self.start = start
        self.days = float(days)
        self.events: list[_Ev] = []
        self.staff_q = {f"S{i:04d}": rng.gauss(0.0, 0.3) for i in range(1, 161)}
        self.staff = sorted(self.staff_q)
        self.ams = [f"AM{i:03d}" for i in range(1, 21)]
        self.staff_q.update({a: rng.gauss(0.15, 0.2) for a in self.ams})
        self.seq = 0

    # -- ids and formatting --------------------------------------------------------
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def nid(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.seq:07d}"

    def fmt(self, ts: float, tz: int, ms: int | None = None) -> str:
        dt = (self.start + timedelta(seconds=round(ts))).astimezone(timezone(timedelta(minutes=tz)))
        if ms is not None:
            s = dt.replace(microsecond=ms * 1000).isoformat(timespec="milliseconds")
        else:
            s = dt.isoformat(timespec="seconds")
        return s[:-6] + "Z" if s.endswith("+00:00") else s

    def local_hour(self, t: float, c: _Customer) -> float:
        return ((t * 24.0) + c.tz / 60.0) % 24.0

    def business(self, t: float, c: _Customer) -> float:
        """Move t into local business hours (08:00-20:00) for staffed channels."""
        h = self.local_hour(t, c)
        if h < 8.0:
            return t + (8.0 - h + self.rng.uniform(0, 2)) / 24.0
        if h >= 20.0:
            return t + (24.0 - h + 8.0 + self.rng.uniform(0, 2)) / 24.0
        return t

    # -- emission ------------------------------------------------------------------
    def emit(self, c: _Customer, t: float, kind: str, channel: str, body: dict) -> bool:
        if t < 0 or t > self.days:
            return False
        if c.plan.churn and t > c.plan.e + 7.0:   # a churner's open flows end within a week
            return False
        ts = int(round(t * _DAY))
        if ts > int(self.days * _DAY):
            return False
        ms = None
        if channel in ("app", "web") and ts < int(self.days * _DAY):
            ms = self.rng.randrange(1000)
        payload = {"type": kind, "event_id": self.uid(), "customer_id": c.id,
                   "occurred_at": self.fmt(ts, 0 if channel in ("app", "web", "bot") else c.tz, ms),
                   "channel": channel, "schema_version": 1}
        payload.update(body)
        self.events.append(_Ev(ts, kind, c.id, payload, c.tz, ms or 0))
        return True

    # -- experience ----------------------------------------------------------------
    def mu(self, c: _Customer, t: float) -> float:
        """The customer's expected rating (1-5 scale) at time t."""
        m = 4.05 + c.q
        if c.plan.active(t) == "experience_drop":
            m -= 1.3 + 1.0 * c.plan.frac(t)
        return m

    def rating(self, m: float) -> int:
        return int(min(5, max(1, round(self.rng.gauss(m, 0.75)))))

    def nps(self, m: float) -> int:
        return int(min(10, max(0, round(2.3 * m - 1.9 + self.rng.gauss(0, 1.2)))))

    def sentiment(self, m: float) -> float:
        return round(min(1.0, max(-1.0, (m - 3.2) / 1.8 + self.rng.gauss(0, 0.25))), 3)

    def ratings(self, m: float, dims: Iterable[str], shift: dict[str, float] | None = None) -> dict:
        shift = shift or {}
        return {d: self.rating(m + shift.get(d, 0.0)) for d in dims}

    def pick_dims(self, must: tuple[str, ...], k: int) -> list[str]:
        rest = [d for d in DIMENSIONS if d not in must]
        return list(must) + self.rng.sample(rest, min(k, len(rest)))

    def staff_for(self, c: _Customer) -> str:
        # customers of one region meet a subset of staff
        base = (c.idx * 7) % len(self.staff)
        return self.staff[(base + self.rng.randrange(24)) % len(self.staff)]

    # -- orders --------------------------------------------------------------------
    def order_channel(self, c: _Customer) -> str:
        r = self.rng.random()
        if c.am_staff and r < 0.3:
            return "account_manager"
        if self.rng.random() < c.digital:
            return self.rng.choices(("web", "app", "mini_program"), (0.45, 0.45, 0.1))[0]
        return self.rng.choices(("store", "call_center", "partner", "other"), (0.7, 0.15, 0.12, 0.03))[0]

    def order(self, c: _Customer, t: float, force: str | None = None) -> None:
        """One order's lifecycle starting at t; force: 'late' | 'return' | None."""
        rng = self.rng
        drv = c.plan.active(t)
        ch = self.order_channel(c)
        if ch in ("store", "call_center", "account_manager"):
            t = self.business(t, c)
        oid = self.nid("O")
        amount = max(1.0, rng.lognormvariate(math.log(c.aov) - 0.125, 0.5))
        amt = f"{amount:.2f}"
        amount_json: object = amt if rng.random() < 0.85 else round(amount, 2)
        lead = rng.choice((2, 2, 3, 3, 4, 5))
        promised = math.floor(t + c.tz / 1440.0) + lead + (18.0 - c.tz / 60.0) / 24.0
        base = {"order_id": oid, "amount": amount_json, "currency": CURRENCY}
        if ch in ("web", "app", "mini_program") and rng.random() < 0.5:
            self.emit(c, t - rng.uniform(0.002, 0.2), "touchpoint", ch,
                      {"stage": "consideration", "kind": "browse"})
        self.emit(c, t, "order", ch, {**base, "status": "placed", "promised_at": self.fmt(promised * _DAY, c.tz)})
        r = rng.random()
        if force is None and r < 0.04:
            self.emit(c, t + rng.uniform(0.005, 1.0), "order", ch, {**base, "status": "cancelled"})
            return
        tp = t + rng.uniform(0.0005, 0.02)
        self.emit(c, tp, "order", ch, {**base, "status": "paid"})
        if force is None and r < 0.06:   # out of stock: refunded before shipping
            self.emit(c, tp + rng.uniform(0.3, 3), "order", ch, {**base, "status": "refunded"})
            return
        shipped = t + rng.uniform(0.3, 1.4)
        p_late = 0.07
        late_days = (0.3, 2.5)
        if force == "late" or drv == "late_fulfilment":
            p_late, late_days = 0.85, (1.0, 6.0)
        late = rng.random() < p_late
        if late:
            fulfilled = promised + rng.uniform(*late_days)
        else:
            fulfilled = max(shipped + 0.2, promised - rng.uniform(0.0, 1.5))
        self.emit(c, shipped, "order", ch, {**base, "status": "shipped", "promised_at": self.fmt(promised * _DAY, c.tz)})
        self.emit(c, fulfilled, "order", ch, {**base, "status": "delivered",
                                              "promised_at": self.fmt(promised * _DAY, c.tz),
                                              "fulfilled_at": self.fmt(fulfilled * _DAY, c.tz)})
        m = self.mu(c, fulfilled) - (1.2 if late else 0.0)
        p_return = 0.04
        if force == "return" or drv == "refunds_returns":
            p_return = 0.9
        if rng.random() < p_return:
            tr = fulfilled + rng.uniform(1.0, 12.0)
            self.emit(c, tr, "order", ch, {**base, "status": "returned"})
            if rng.random() < 0.75:
                self.emit(c, tr + rng.uniform(0.5, 5.0), "order", ch, {**base, "status": "refunded"})
            m -= 0.6
        if rng.random() < 0.3:   # post-delivery survey
            ts = fulfilled + rng.uniform(0.3, 3.0)
            body = {"stage": "usage", "kind": "survey", "csat": self.rating(m),
                    "ratings": self.ratings(m, self.pick_dims(("reliability",), rng.randint(0, 2)),
                                            {"reliability": -0.8 if late else 0.1})}
            if rng.random() < 0.5:
                body["nps"] = self.nps(m)
            if rng.random() < 0.4:
                body["sentiment"] = self.sentiment(m)
            self.emit(c, ts, "touchpoint", rng.choice(("email", "app", "web")), body)
        if late and rng.random() < 0.2:
            self.complaint(c, fulfilled + rng.uniform(0.05, 2.0), "reliability")

    # -- support and service touchpoints -------------------------------------------
    def support(self, c: _Customer, t: float, hard: bool = False, repeat: int = 0) -> None:
        rng = self.rng
        digital = rng.random() < c.digital
        ch = rng.choices(("call_center", "chat", "bot", "email"),
                         (0.25, 0.35, 0.3, 0.1) if digital else (0.6, 0.15, 0.1, 0.15))[0]
        if ch in ("call_center", "chat"):
            t = self.business(t, c)
        med_wait = {"call_center": 110, "chat": 35, "bot": 1, "email": 9000}[ch]
        med_handle = {"call_center": 320, "chat": 480, "bot": 70, "email": 420}[ch]
        wait = rng.lognormvariate(math.log(med_wait), 0.9)
        handle = rng.lognormvariate(math.log(med_handle), 0.6)
        p_res = 0.55 if ch == "bot" else 0.82
        handoffs = (1 if rng.random() < 0.35 else 0) if ch == "bot" else min(6, int(rng.expovariate(3.0)))
        if hard:
            wait *= rng.uniform(2.0, 6.0)
            handle *= rng.uniform(1.5, 3.0)
            p_res = 0.25
            handoffs += rng.randint(2, 4)
        resolved = rng.random() < p_res
        staff = None if ch == "bot" else self.staff_for(c)
        m = self.mu(c, t) + (self.staff_q[staff] if staff else 0.0)
        m -= (0.0 if resolved else 0.9) + 0.25 * handoffs + (0.5 if wait > 900 and ch != "email" else 0.0)
        stage = rng.choices(("usage", "purchase", "consideration"), (0.75, 0.15, 0.1))[0]
        body: dict = {"stage": stage, "kind": "support" if stage != "consideration" else "inquiry",
                      "wait_seconds": round(wait, 1), "handle_seconds": round(handle, 1),
                      "resolved": resolved, "handoffs": handoffs}
        if staff:
            body["staff_id"] = staff
        if rng.random() < 0.4:
            body["csat"] = self.rating(m)
            body["ratings"] = self.ratings(m, self.pick_dims(("responsiveness",), rng.randint(0, 2)))
        if rng.random() < 0.5:
            body["sentiment"] = self.sentiment(m)
        self.emit(c, t, "touchpoint", ch, body)
        if not resolved and repeat < 3 and rng.random() < (0.75 if hard else 0.45):
            self.support(c, t + rng.uniform(0.2, 3.0), hard, repeat + 1)
        elif not resolved and rng.random() < (0.08 if not hard else 0.2):
            self.complaint(c, t + rng.uniform(0.05, 1.5), rng.choice(("responsiveness", "assurance", "empathy")))

    def service(self, c: _Customer, t: float) -> None:
        """Store visits and app service use (usage stage), occasionally rated."""
        rng = self.rng
        if rng.random() < c.digital:
            ch, staff = rng.choice(("app", "app", "web", "mini_program")), None
            body: dict = {"stage": "usage", "kind": "service_delivery"}
            dims: tuple[str, ...] = ("reliability",)
        else:
            t = self.business(t, c)
            ch, staff = rng.choice(("store", "store", "partner")), self.staff_for(c)
            body = {"stage": "usage", "kind": rng.choice(("visit", "service_delivery")), "staff_id": staff,
                    "wait_seconds": round(rng.lognormvariate(math.log(180), 0.8), 1),
                    "handle_seconds": round(rng.lognormvariate(math.log(600), 0.5), 1)}
            dims = ("tangibles", "assurance")
        m = self.mu(c, t) + (self.staff_q[staff] if staff else 0.0)
        if rng.random() < 0.3:
            body["ratings"] = self.ratings(m, self.pick_dims(dims, rng.randint(0, 2)))
            if rng.random() < 0.5:
                body["csat"] = self.rating(m)
        self.emit(c, t, "touchpoint", ch, body)

    def am_visit(self, c: _Customer, t: float) -> None:
        t = self.business(t, c)
        assert c.am_staff is not None   # planned only for customers with an account manager
        m = self.mu(c, t) + self.staff_q[c.am_staff]
        body: dict = {"stage": self.rng.choice(("loyalty", "usage")), "kind": "service_delivery",
                      "staff_id": c.am_staff, "handle_seconds": round(self.rng.uniform(900, 3600), 0)}
        if self.rng.random() < 0.5:
            body["ratings"] = self.ratings(m, ("empathy", "assurance"))
        self.emit(c, t, "touchpoint", "account_manager", body)

    def loyalty(self, c: _Customer, t: float) -> None:
        rng = self.rng
        m = self.mu(c, t)
        r = rng.random()
        if r < 0.5:   # relational NPS survey
            body = {"stage": "loyalty", "kind": "survey", "nps": self.nps(m)}
            if rng.random() < 0.5:
                body["csat"] = self.rating(m)
            self.emit(c, t, "touchpoint", rng.choice(("email", "app")), body)
        elif r < 0.8:
            self.emit(c, t, "touchpoint", rng.choice(("app", "web", "store")), {"stage": "loyalty", "kind": "renewal"})
        elif m > 3.8:
            self.emit(c, t, "touchpoint", rng.choice(("app", "social")), {"stage": "loyalty", "kind": "referral"})

    def acquire(self, c: _Customer) -> float:
        """A new customer's path to the first purchase; returns the time of the first order."""
        rng = self.rng
        t = c.t0
        self.emit(c, t, "touchpoint", rng.choice(("social", "web", "partner", "app")),
                  {"stage": "awareness", "kind": rng.choice(("visit", "referral", "browse"))})
        for _ in range(rng.randint(1, 3)):
            t += rng.uniform(0.1, 2.5)
            if rng.random() < 0.3:
                self.emit(c, self.business(t, c), "touchpoint", rng.choice(("chat", "call_center", "store")),
                          {"stage": "consideration", "kind": "inquiry", "staff_id": self.staff_for(c),
                           "wait_seconds": round(rng.lognormvariate(math.log(60), 0.8), 1),
                           "handle_seconds": round(rng.lognormvariate(math.log(240), 0.5), 1),
                           "resolved": rng.random() < 0.9, "handoffs": 0})
            else:
                self.emit(c, t, "touchpoint", rng.choice(("web", "app")), {"stage": "consideration", "kind": "browse"})
        return t + rng.uniform(0.01, 1.0)

    # -- complaints ----------------------------------------------------------------
    def complaint(self, c: _Customer, t: float, category: str, mode: str = "normal",
                  severity: str | None = None) -> None:
        """mode: normal | never_ack | late_ack | unresolved | failed."""
        rng = self.rng
        c.complaints += 1
        cid = self.nid("K")
        sev = severity or rng.choices(("low", "medium", "high", "critical"), (0.35, 0.4, 0.2, 0.05))[0]
        ch = rng.choices(("call_center", "email", "chat", "store", "social", "account_manager" if c.am_staff else "web"),
                         (0.35, 0.2, 0.2, 0.1, 0.1, 0.05))[0]
        base = {"complaint_id": cid, "category": category, "severity": sev}
        if not self.emit(c, t, "complaint", ch, {**base, "status": "opened"}):
            return
        if mode == "normal":
            r = rng.random()
            mode = ("never_ack" if r < 0.025 else "late_ack" if r < 0.10 else
                    "failed" if r < 0.17 else "unresolved" if r < 0.20 else "ok")
        if mode == "never_ack":
            return
        h = self.local_hour(t, c)
        if mode == "late_ack":
            ta = t + rng.uniform(1.2, 4.0)
        elif 8.0 <= h < 17.0:
            ta = t + min(rng.uniform(0.05, 3.0), 17.9 - h) / 24.0
        else:   # outside business hours: the next business morning
            ta = t + ((24.0 - h if h >= 17.0 else -h) + 8.0 + rng.uniform(0.0, 2.5)) / 24.0
        self.emit(c, ta, "complaint", ch, {**base, "status": "acknowledged"})
        tl = ta
        if rng.random() < {"low": 0.04, "medium": 0.1, "high": 0.3, "critical": 0.6}[sev] or mode == "unresolved" and rng.random() < 0.5:
            tl = ta + rng.uniform(0.05, 1.5)
            self.emit(c, tl, "complaint", ch, {**base, "status": "escalated"})
        if mode == "unresolved":
            return
        tr = tl + rng.uniform(0.2, {"low": 3, "medium": 5, "high": 7, "critical": 4}[sev])
        res: dict[str, object] = {**base, "status": "resolved"}
        if rng.random() < 0.3 or sev in ("high", "critical") and rng.random() < 0.5:
            res["compensation"] = f"{rng.choice((5, 10, 15, 20, 25, 50, 100)):.2f}"
        if mode == "failed":
            if rng.random() < 0.55:
                res["satisfied"] = False
                self.emit(c, tr, "complaint", ch, res)
                if rng.random() < 0.5:
                    self.emit(c, tr + rng.uniform(1, 6), "complaint", ch, {**base, "status": "closed"})
            else:
                if rng.random() < 0.5:
                    res["satisfied"] = True
                self.emit(c, tr, "complaint", ch, res)
                to = tr + rng.uniform(0.5, 5)
                self.emit(c, to, "complaint", ch, {**base, "status": "reopened"})
                if rng.random() < 0.6:
                    t2 = to + rng.uniform(0.5, 4)
                    self.emit(c, t2, "complaint", ch, {**base, "status": "resolved", "satisfied": False})
            return
        if rng.random() < 0.75:
            res["satisfied"] = rng.random() < 0.88
        self.emit(c, tr, "complaint", ch, res)
        if rng.random() < 0.05:
            to = tr + rng.uniform(0.5, 5)
            self.emit(c, to, "complaint", ch, {**base, "status": "reopened"})
            tr = to + rng.uniform(0.5, 3)
            self.emit(c, tr, "complaint", ch, {**base, "status": "resolved", "satisfied": rng.random() < 0.7})
        if rng.random() < 0.7:
            self.emit(c, tr + rng.uniform(0.5, 7), "complaint", ch, {**base, "status": "closed"})

    # -- one customer --------------------------------------------------------------
    def mod(self, c: _Customer, t: float, what: str) -> float:
        """Activity multiplier at t for a process ('order' or 'contact')."""
        p = c.plan
        if p.churn and t >= p.e:
            return 0.0
        d = p.active(t)
        if d is None:
            return 1.0
        f = p.frac(t)
        if d == "inactivity":
            return 0.05 if not p.churn else max(0.02, 0.6 * (1.0 - f))
        if d == "declining_frequency":
            return 0.0 if what == "order" else max(0.1, 1.0 - 0.8 * f)
        return 0.6 if p.churn else 0.9

    def poisson(self, c: _Customer, rate: float, t0: float, t1: float, what: str) -> list[float]:
        out: list[float] = []
        if rate <= 0:
            return out
        t = t0
        while True:
            t += self.rng.expovariate(rate)
            if t >= t1:
                return out
            if self.rng.random() < self.mod(c, t, what):
                out.append(t)

    def customer(self, c: _Customer) -> None:
        rng = self.rng
        p = c.plan
        stop = min(self.days, p.e) if p.churn else self.days
        n0 = len(self.events)
        first = self.acquire(c) if c.new else None
        # orders
        if c.single:
            times = [first if first is not None else rng.uniform(c.t0, stop)]
        else:
            times = self.poisson(c, c.rate, first if first is not None else c.t0, stop, "order")
            if first is not None:
                times.insert(0, first)
        forced: dict[float, str] = {}
        d = p.driver
        if d == "declining_frequency":
            g = min(max(1.0 / c.rate, 2.5), 6.0)
            r = rng.uniform(1.5, 1.9)
            t = p.s
            while t + g < p.e:
                t += g
                times.append(t)
                g *= r
        elif d in ("late_fulfilment", "refunds_returns"):
            inside = [t for t in times if p.s <= t < p.e - 7]
            need = rng.randint(2, 3) - len(inside)
            for _ in range(max(0, need)):
                t = rng.uniform(p.s, max(p.s + 0.5, p.e - 7))
                times.append(t)
            for t in times:
                if p.s <= t < p.e:
                    forced[t] = "late" if d == "late_fulfilment" else ("return" if rng.random() < 0.8 else "")
        for t in sorted(times):
            self.order(c, t, forced.get(t) or None)
        # contacts
        act = 1 / 25.0 if c.single else c.rate
        for t in self.poisson(c, 0.25 * act + 1 / 60.0, c.t0, stop, "contact"):
            self.support(c, t)
        for t in self.poisson(c, 0.6 * act + 1 / 30.0, c.t0, stop, "contact"):
            self.service(c, t)
        for t in self.poisson(c, 1 / 40.0, c.t0, stop, "contact"):
            self.loyalty(c, t)
        if c.am_staff:
            for t in self.poisson(c, 1 / 12.0, c.t0, stop, "contact"):
                self.am_visit(c, t)
        for t in self.poisson(c, 1 / 200.0, c.t0, stop, "contact"):   # unprompted complaints
            self.complaint(c, t, rng.choice((*DIMENSIONS, "other")))
        if d is not None:
            self.signal(c)
        if not any(ev.cust == c.id for ev in self.events[n0:]):
            # every customer of the stream is seen at least once in the window
            self.order(c, rng.uniform(c.t0, min(stop, self.days - 5.0)))

    def signal(self, c: _Customer) -> None:
        """Driver-specific evidence inside the plan's window (orders are handled above)."""
        rng = self.rng
        p = c.plan
        d = p.driver
        lo, hi = p.s, max(p.s + 0.5, p.e - (3.0 if p.churn else 0.0))

        def when() -> float:
            return rng.uniform(lo, hi)

        if d == "unresolved_complaints":
            for _ in range(rng.randint(1, 3) if p.churn else 1):
                t = when()
                self.complaint(c, t, rng.choice(("reliability", "responsiveness", "assurance", "other")), "unresolved",
                               rng.choice(("medium", "high", "high", "critical")))
                for _ in range(rng.randint(0, 2)):
                    self.support(c, t + rng.uniform(1, 6), hard=rng.random() < 0.5)
        elif d == "sla_breaches":
            for _ in range(rng.randint(1, 3) if p.churn else 1):
                t = when()
                self.complaint(c, t, rng.choice(("responsiveness", "reliability", "empathy")),
                               "never_ack" if rng.random() < 0.75 else "late_ack")
        elif d == "failed_recovery":
            for _ in range(rng.randint(1, 2) if p.churn else 1):
                self.complaint(c, when(), rng.choice(("reliability", "assurance", "empathy", "tangibles")), "failed",
                               rng.choice(("medium", "high", "critical")))
        elif d == "detractor":
            for _ in range(rng.randint(1, 3) if p.churn else 1):
                t = when()
                body: dict[str, object] = {"stage": rng.choice(("loyalty", "usage")), "kind": "survey",
                        "nps": rng.choice((0, 1, 2, 3, 4, 5, 6, 3, 4, 5)),
                        "csat": rng.choice((1, 2, 2, 3, 3, 4))}
                if rng.random() < 0.5:
                    body["sentiment"] = round(rng.uniform(-0.9, -0.1), 3)
                self.emit(c, t, "touchpoint", rng.choice(("email", "app", "web")), body)
        elif d == "low_ratings":
            for _ in range(rng.randint(2, 4) if p.churn else rng.randint(1, 2)):
                t = self.business(when(), c)
                ch = rng.choice(("store", "call_center", "chat", "partner"))
                body = {"stage": rng.choice(("usage", "purchase")), "kind": rng.choice(("service_delivery", "visit", "survey")),
                        "staff_id": self.staff_for(c),
                        "ratings": {dim: rng.choice((1, 1, 2, 2, 3)) for dim in self.pick_dims((), rng.randint(2, 4))}}
                if rng.random() < 0.6:
                    body["csat"] = rng.choice((1, 2, 2, 3))
                self.emit(c, t, "touchpoint", ch, body)
        elif d == "high_effort":
            for _ in range(rng.randint(2, 3) if p.churn else 1):
                self.support(c, when(), hard=True)
        elif d == "experience_drop":
            for _ in range(rng.randint(2, 4) if p.churn else rng.randint(1, 2)):
                t = when()
                self.service(c, t) if rng.random() < 0.4 else self.support(c, t)
                m = self.mu(c, t)
                self.emit(c, t + rng.uniform(0.05, 1.0), "touchpoint", rng.choice(("email", "app")),
                          {"stage": "usage", "kind": "survey", "csat": self.rating(m),
                           "ratings": self.ratings(m, self.pick_dims((), 2)), "sentiment": self.sentiment(m)})
        # inactivity / declining_frequency / late_fulfilment / refunds_returns: handled by rates and orders


# ----------------------------------------------------------------------------- invalid records

_BAD_ENUMS = {"channel": ("fax", "whatsapp", "Store"), "stage": ("retention", "onboarding"),
              "kind": ("complaint", "call"), "status": ("dispatched", "pending", "in_progress"),
              "severity": ("urgent", "blocker"), "category": ("price", "billing")}
_REQUIRED = {"touchpoint": ("type", "event_id", "customer_id", "occurred_at", "channel", "schema_version", "stage", "kind"),
             "order": ("type", "event_id", "customer_id", "occurred_at", "channel", "schema_version", "order_id",
                       "status", "amount", "currency"),
             "complaint": ("type", "event_id", "customer_id", "occurred_at", "channel", "schema_version",
                           "complaint_id", "status", "category", "severity")}


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _corrupt(rng: random.Random, ev: _Ev, defect: str, gen: _Gen) -> tuple[str, bytes | None, bytes]:
    """An invalid record derived from a valid event: (topic kind, key, value)."""
    p = dict(ev.payload)
    p["event_id"] = gen.uid()   # a fresh id: never a duplicate of a valid record
    key: bytes | None = ev.cust.encode()
    kind = ev.kind
    if defect == "invalid_json":
        raw = _dumps(p)
        choice = rng.randrange(5)
        if choice == 0:
            value = raw[: rng.randrange(1, len(raw) - 1)]
        elif choice == 1:
            value = raw[:-1] + b",}"
        elif choice == 2:
            value = raw.replace(b'":', b"'=", 1)
        elif choice == 3:
            value = b"\xff\xfe" + raw[2:]
        else:
            # (no empty value: a JSON Lines file cannot carry one)
            value = rng.choice((b"{", b"null", b"[]", b'"event"', b"{}"))
        if rng.random() < 0.3:
            key = None
        return kind, key, value
    if defect == "missing_field":
        f = rng.choice(_REQUIRED[ev.kind])
        del p[f]
    elif defect == "unknown_enum":
        opts = [f for f in _BAD_ENUMS if f in p]
        f = rng.choice(opts)
        p[f] = rng.choice(_BAD_ENUMS[f])
    elif defect == "naive_timestamp":
        dt = datetime.fromisoformat(p["occurred_at"].replace("Z", "+00:00"))
        p["occurred_at"] = dt.replace(tzinfo=None).isoformat(timespec="seconds")
    elif defect == "wrong_topic":
        kind = rng.choice([k for k in KINDS if k != ev.kind])
    elif defect == "negative_amount":
        if "amount" in p:
            p["amount"] = "-" + str(p["amount"]).lstrip("-")
        elif ev.kind == "complaint":
            p["compensation"] = f"-{rng.choice((5, 10, 20))}.00"
        else:
            p, kind = _neg_order(gen, ev), "order"
    elif defect == "unknown_field":
        f = rng.choice(("email", "phone", "customer_name", "loyalty_card"))
        p[f] = {"email": f"{ev.cust.lower()}@example.invalid", "phone": "+00 000 000 000",
                "customer_name": "REDACTED", "loyalty_card": "LC-0000"}[f]
    elif defect == "out_of_range":
        if ev.kind == "touchpoint":
            f = rng.choice(("csat", "nps", "wait_seconds", "sentiment", "ratings"))
            p[f] = {"csat": 7, "nps": 11, "wait_seconds": -30, "sentiment": 1.7, "ratings": {"empathy": 0}}[f]
        elif ev.kind == "order":
            p["currency"] = rng.choice(("eur", "EURO", "€"))
        else:
            p["complaint_id"] = ""
    elif defect == "wrong_type":
        f = rng.choice(("schema_version", "customer_id", "occurred_at"))
        p[f] = {"schema_version": "1", "customer_id": 12345, "occurred_at": 1714557600}[f]
    elif defect == "bad_version":
        p["schema_version"] = rng.choice((0, 2))
    return kind, key, _dumps(p)


def _neg_order(gen: _Gen, ev: _Ev) -> dict:
    return {"type": "order", "event_id": gen.uid(), "customer_id": ev.cust, "occurred_at": ev.payload["occurred_at"],
            "channel": "web", "schema_version": 1, "order_id": gen.nid("O"), "status": "refunded",
            "amount": f"-{gen.rng.randint(5, 200)}.00", "currency": CURRENCY}


# ----------------------------------------------------------------------------- public API


def _default_end() -> datetime:
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)


def _weighted_sample(rng: random.Random, items: list, weights: list[float], k: int) -> list:
    keyed = sorted(((rng.random() ** (1.0 / w), i) for i, w in enumerate(weights)), reverse=True)
    return [items[i] for _, i in keyed[:k]]


def _customers(rng: random.Random, gen: _Gen, customers: int, D: float) -> list[_Customer]:
    """The customer population (value, cadence, experience level, channels, time zone, ...)."""
    custs: list[_Customer] = []
    for i in range(customers):
        value = rng.lognormvariate(math.log(420.0), 1.45)
        single = rng.random() < 0.12
        rate = 1.0 if single else max(1 / 90, rng.gammavariate(1.6, 1 / (1.6 * 11.0)))   # mean gap ≈ 11 days
        new = rng.random() < 0.12
        t0 = rng.uniform(0.0, D - 7.0) if new else 0.0
        expected_orders = 1.0 if single else max(1.0, rate * (D - t0))
        c = _Customer(idx=i, id=f"C{i + 1:06d}", value=value, rate=rate, single=single,
                      q=rng.gauss(0.0, 0.45), digital=rng.betavariate(2.0, 1.5),
                      tz=rng.choice((0, 0, 60, 60, 120, -300, 330)), t0=t0, new=new,
                      am_staff=None)
        c.aov = max(5.0, value / expected_orders)
        if value > 2500 and rng.random() < 0.8:
            c.am_staff = rng.choice(gen.ams)
        custs.append(c)
    return custs



def _assemble(rng: random.Random, gen: _Gen, invalid_ratio: float,
              duplicate_ratio: float) -> tuple[list[GeneratedRecord], int]:
    """The generated events as records: event-time order with bounded jitter, exact
    duplicates and planted invalid records; (records, number of duplicates)."""
    # valid records in event-time order with bounded jitter
    events = gen.events
    jit = [ev.ts + rng.randrange(MAX_JITTER_SECONDS) for ev in events]
    order = sorted(range(len(events)), key=lambda i: (jit[i], i))
    # duplicates: exact re-sends close to the original
    n_dup = int(round(duplicate_ratio * len(events)))
    dup_src = rng.sample(range(len(events)), n_dup) if n_dup else []
    entries: list[tuple[int, int, GeneratedRecord, int | None]] = []   # (sort key, tiebreak, record, event idx)
    values = [_dumps(ev.payload) for ev in events]
    for pos, i in enumerate(order):
        ev = events[i]
        entries.append((jit[i], pos, GeneratedRecord(ev.kind, ev.cust.encode(), values[i], True, None), i))
    for i in dup_src:
        ev = events[i]
        entries.append((ev.ts + rng.randrange(MAX_JITTER_SECONDS), len(entries),
                        GeneratedRecord(ev.kind, ev.cust.encode(), values[i], True, None), i))
    n_valid = len(entries)
    n_inv = int(round(invalid_ratio * n_valid / (1.0 - invalid_ratio))) if invalid_ratio > 0 else 0
    for j in range(n_inv):
        defect = DEFECTS[j % len(DEFECTS)]
        src = rng.randrange(len(events))
        if defect == "negative_amount":
            for _ in range(50):
                if events[src].kind == "order":
                    break
                src = rng.randrange(len(events))
        kind, key, raw_value = _corrupt(rng, events[src], defect, gen)
        entries.append((events[src].ts + rng.randrange(MAX_JITTER_SECONDS), len(entries),
                        GeneratedRecord(kind, key, raw_value, False, defect), None))
    entries.sort(key=lambda x: (x[0], x[1]))
    # keep event-time order within one (topic, customer): reassign records to the group's slots
    groups: dict[tuple[str, str], list[int]] = {}
    for pos, (_, _, rec, src_i) in enumerate(entries):
        if src_i is not None:
            groups.setdefault((rec.kind, events[src_i].cust), []).append(pos)
    records = [e[2] for e in entries]
    for slots in groups.values():
        items = sorted((entries[p] for p in slots), key=lambda x: (events[x[3] or 0].ts, events[x[3] or 0].ms, x[1]))
        for p, entry in zip(slots, items):
            records[p] = entry[2]

    return records, n_dup


def generate(customers: int = 2000, days: int = 60, seed: int = 7, invalid_ratio: float = 0.03,
             duplicate_ratio: float = 0.01, churn_share: float = 0.2, end: datetime | None = None,
             model: "HazardModel | None" = None, operators: "OperatorPolicy | None" = None) -> GeneratedStream:
    """A deterministic (by seed, for a given `end`) synthetic stream over [end - days, end].

    With `model` (a pipeline.tools.hazard_model.HazardModel) the stream is in *causal mode*:
    instead of planted churners with planted signals, experiences cause departures at the
    model's hazard ratios (pipeline.tools.causal_stream); `churn_share` is then unused and
    the stream's `causal` carries the departure days, drivers, incidents and the oracle.
    `operators` (causal mode only, pipeline.tools.operators) act on churn risk with a stated
    policy and effect; `causal.cases` lists their cases (called or control)."""
    if operators is not None and model is None:
        raise ValueError("operators act in causal mode only (pass a hazard model)")
    if customers < 1 or days < 7:
        raise ValueError("need at least 1 customer and 7 days")
    if not (0 <= invalid_ratio < 1 and 0 <= duplicate_ratio < 1 and 0 <= churn_share <= 1):
        raise ValueError("ratios must be in [0, 1)")
    end = end or _default_end()
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware")
    end = end.astimezone(timezone.utc)
    start = end - timedelta(days=days)
    rng = random.Random(seed)
    gen = _Gen(rng, start, days)
    D = float(days)

    custs = _customers(rng, gen, customers, D)
    if model is not None:   # causal mode: experiences cause departures
        from pipeline.tools.causal_stream import simulate

        causal = simulate(gen, custs, model, operators)
        records, n_dup = _assemble(rng, gen, invalid_ratio, duplicate_ratio)
        outcomes = {cid: GroundTruth(cid, t.departed_day is not None, t.departed_at, t.driver)
                    for cid, t in causal.customers.items()}
        return GeneratedStream(records, outcomes, start, end, n_duplicates=n_dup, causal=causal)

    # planted churners: lower experience and lower value churn a little more often
    n_churn = int(round(churn_share * customers))
    eligible = [c for c in custs if c.t0 <= D - 24.0]   # churners need a history before leaving
    weights = [math.exp(-0.8 * c.q) * (1.4 if c.single or c.value < 300 else 1.0) for c in eligible]
    churners = set(id(c) for c in _weighted_sample(rng, eligible, weights, min(n_churn, len(eligible))))
    # departures fall in the last six weeks (at least 7 days before the end), after at
    # least a third of the window of history
    lo_c = max(0.35 * D, D - 42.0)
    hi_c = D - 7.0
    for c in custs:
        if id(c) in churners:
            e = min(rng.uniform(max(lo_c, c.t0 + 10.0), max(hi_c, c.t0 + 11.0)), D - 3.0)
            s = max(c.t0 + 3.0, e - rng.uniform(7.0, 35.0))
            drivers = list(DRIVERS)
            if c.single or c.rate < 1 / 20:
                drivers.remove("declining_frequency")
            if e - c.t0 < 17:
                drivers.remove("experience_drop")
            driver = rng.choice(drivers)
            if driver == "experience_drop":   # needs a good baseline before the drop
                s = max(s, c.t0 + 10.0)
                c.q = max(c.q, 0.2)
            c.plan = _Plan(True, driver, s, e)
        elif rng.random() < 0.12:   # a scare: a churn-like episode, after which the customer stays
            s = rng.uniform(c.t0 + 3.0, max(c.t0 + 4.0, D - 10.0))
            c.plan = _Plan(False, rng.choice(DRIVERS), s, min(D, s + rng.uniform(7.0, 25.0)))
    for c in custs:
        gen.customer(c)

    records, n_dup = _assemble(rng, gen, invalid_ratio, duplicate_ratio)
    last: dict[str, int] = {}   # milliseconds since start
    for ev in gen.events:
        if ev.ts * 1000 + ev.ms > last.get(ev.cust, -1):
            last[ev.cust] = ev.ts * 1000 + ev.ms
    truth: dict[str, GroundTruth] = {}
    for c in custs:
        if c.plan.churn:
            at = start + timedelta(milliseconds=last[c.id]) if c.id in last else start
            truth[c.id] = GroundTruth(c.id, True, at, c.plan.driver)
        else:
            truth[c.id] = GroundTruth(c.id, False, None, None)
    return GeneratedStream(records, truth, start, end, n_duplicates=n_dup)


def write_jsonl(stream: GeneratedStream, path: str | Path) -> int:
    """Write every record (valid, duplicate and invalid) one per line exactly as produced.

    Records containing a raw newline cannot be represented in JSON Lines; our JSON has none
    (json.dumps escapes control characters), and an empty invalid record becomes an empty line.
    Returns the number of lines written.
    """
    n = 0
    with open(path, "wb") as f:
        for r in stream.records:
            f.write(r.value.replace(b"\n", b" ") + b"\n")
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.tools.generator", description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--invalid-ratio", type=float, default=0.03)
    ap.add_argument("--duplicate-ratio", type=float, default=0.01)
    ap.add_argument("--churn-share", type=float, default=0.2)
    ap.add_argument("--end", type=datetime.fromisoformat, default=None, help="RFC 3339 end of the window (default now)")
    ap.add_argument("--out", type=Path, required=True, help="JSON Lines file to write")
    ap.add_argument("--truth", type=Path, help="also write ground truth as JSON Lines")
    ap.add_argument("--mode", choices=("planted", "causal"), default="planted",
                    help="planted: churners with planted signals (default); causal: experiences raise a daily "
                         "hazard of leaving (docs/evaluation.md)")
    ap.add_argument("--hazard", default="strong", help="causal mode: hazard-ratio setting (strong, weak)")
    ap.add_argument("--hazard-ratios", default=None, metavar="FACTOR=HR,...",
                    help="causal mode: override hazard ratios, e.g. failed_recovery=6,detractor=2")
    ap.add_argument("--baseline-hazard", type=float, default=None, help="causal mode: daily hazard with no incident")
    ap.add_argument("--decay-days", type=float, default=None, help="causal mode: days an incident stays in force")
    ap.add_argument("--oracle-every", type=int, default=7, metavar="DAYS",
                    help="causal mode: the truth file carries the oracle at every DAYS-th day (default 7)")
    ap.add_argument("--operators", action="store_true",
                    help="causal mode: operators call customers whose risk crosses --operator-threshold "
                         "(pipeline.tools.operators; the truth file lists the cases)")
    ap.add_argument("--operator-threshold", type=float, default=0.10,
                    help="causal mode: generator-view 30-day leaving probability that opens a case (default 0.10)")
    ap.add_argument("--operator-effect", type=float, default=0.5,
                    help="causal mode: share of the daily leaving hazard a call removes (default 0.5)")
    ap.add_argument("--operator-effect-days", type=int, default=30, help="causal mode: days the effect lasts (default 30)")
    ap.add_argument("--control-share", type=float, default=0.0,
                    help="causal mode: share of cases nobody calls (default 0)")
    a = ap.parse_args(argv)
    model = None
    operators = None
    if a.mode == "causal":
        from pipeline.tools.hazard_model import hazard_model, parse_ratios

        try:
            model = hazard_model(a.hazard, parse_ratios(a.hazard_ratios) if a.hazard_ratios else None,
                                 a.baseline_hazard, a.decay_days)
            if a.operators:
                from pipeline.tools.operators import OperatorPolicy

                operators = OperatorPolicy(a.operator_threshold, a.operator_effect, a.operator_effect_days,
                                           a.control_share)
        except ValueError as exc:
            ap.error(str(exc))
    elif a.operators:
        ap.error("--operators needs --mode causal")
    s = generate(a.customers, a.days, a.seed, a.invalid_ratio, a.duplicate_ratio, a.churn_share, a.end, model=model,
                 operators=operators)
    write_jsonl(s, a.out)
    if a.truth and s.causal is not None:
        with open(a.truth, "w") as f:
            for line in s.causal.to_json_lines(a.oracle_every):
                f.write(json.dumps(line) + "\n")
    elif a.truth:
        with open(a.truth, "w") as f:
            for t in s.truth.values():
                f.write(json.dumps({"customer_id": t.customer_id, "churned": t.churned,
                                    "churn_at": t.churn_at.isoformat() if t.churn_at else None,
                                    "driver": t.driver}) + "\n")
    print(json.dumps(s.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
