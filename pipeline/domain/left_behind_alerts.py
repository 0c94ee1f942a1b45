"""Alerts a crash left behind: numbered alert episodes (churn risk, a failed recovery) that the
store of alerts (ClickHouse `cx_alerts`) holds firing and the customer's state does not hold.

A micro-batch sends its outputs and writes its rows before it stores its states, so a crash in
between leaves its alerts out and its states unstored. The redelivery starts from the stored
states and, its micro-batches cut anew, evaluates the customers at other points: an episode it
fires again gets the same id (numbered: pipeline/domain/alerts.py), one it does not fire again
would stay firing for good. At each assignment the worker reads the never-resolved numbered
alerts and holds those its states do not know (`LeftBehindAlerts.hold`); once a batch has
evaluated such a customer as of the alert's instant or later without firing it again, the
alert is withdrawn in that batch (`LeftBehindAlerts.withdraw_due`): a `resolved` record saying
so, and the episode count moves past its number (docs/fault-tolerance.md, "Alert ids after a
crash"). Pure: the worker (pipeline/service/worker_loop.py) does the reading and the emitting.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

from pipeline.domain.alerts import numbered_alert_id
from pipeline.domain.scoring import iso
from pipeline.domain.state import ComplaintRec, CustomerState
from pipeline.domain.vocabulary import CHURN_RISK, FAILED_RECOVERY, TIERS
from schemas.records import AlertDict


class StoredAlert(NamedTuple):
    """A numbered alert episode (churn risk, a failed recovery) as the store of alerts
    (ClickHouse `cx_alerts`) holds it, never resolved there."""
    customer_id: str
    alert_id: str
    severity: str
    tier: str
    as_of: float     # of its latest firing record
    type: str = CHURN_RISK
    complaint_id: str | None = None   # a failed recovery's complaint


# The alert types whose episodes are numbered (by the customer for churn risk, by the complaint
# for a failed recovery), so a redelivery that sees them elsewhere gives them the same id, and
# one it does not fire again can be recognised as left behind by a crash.
NUMBERED_TYPES = (CHURN_RISK, FAILED_RECOVERY)
# How far past the holder's stored episode count a left-behind episode's number is looked for:
# the batches a crash undoes (one in flight, the queued ones) fire at most a few episodes each.
LEFT_BEHIND_LOOKAHEAD = 16
WITHDRAWN_ACTION = "none — withdrawn"


def _episodes(state: CustomerState, stored: StoredAlert) -> tuple[str, ComplaintRec | None, int]:
    """The alert's key in `state.alerts`, the complaint that numbers it (None for churn risk, and
    for a complaint the state does not hold) and the episodes counted so far."""
    if stored.type == CHURN_RISK:
        return "churn", None, state.churn_episodes
    rec = next((r for r in state.complaints if r.id == stored.complaint_id), None)
    return f"rec:{stored.complaint_id}", rec, rec.recovery_episodes if rec is not None else 0


def _left_behind(state: CustomerState, stored: StoredAlert) -> tuple[bool, int | None, ComplaintRec | None]:
    """`is_left_behind`, the alert's episode number when the state does not hold it (None: an
    id of another form) and the complaint numbering it, from one scan of the ids."""
    key, rec, count = _episodes(state, stored)
    active = state.alerts.get(key)
    if active is not None and active[0] == stored.alert_id:
        return False, None, rec
    n = next((n for n in range(1, count + 1 + LEFT_BEHIND_LOOKAHEAD)
              if numbered_alert_id(state.customer_id, key, n) == stored.alert_id), None)
    return n is None or n > count, n, rec


def is_left_behind(state: CustomerState, stored: StoredAlert) -> bool:
    """Whether the state knows nothing of this alert: it does not hold it, and did not number it
    itself (fire it again and resolve it since, or withdraw it before)."""
    return _left_behind(state, stored)[0]


def withdraw_left_behind(state: CustomerState, stored: StoredAlert) -> AlertDict | None:
    """A numbered alert (churn risk, a failed recovery) the store holds firing that the
    customer's state does not hold: a micro-batch fired it, its outputs and rows went out, and
    a crash undid the batch before its states were stored; the redelivery evaluates the
    customer at other points and need not fire it again (docs/fault-tolerance.md, "Alert ids
    after a crash"). Returns its resolution, a `resolved` record saying it was withdrawn, and
    moves the episode count (the customer's, the complaint's) past its number, so the next
    episode gets a new id (a withdrawn id stays resolved). None when the state numbered it
    itself: it fired it again (and holds it, or resolved it since) or withdrew it before. An
    id of another form (named by an instant, before episodes were numbered) is withdrawn
    unless the state holds it; so is a failed recovery of a complaint the state does not hold
    (folded away, or erased: an episode it held was resolved with a record then)."""
    left_behind, n, rec = _left_behind(state, stored)
    if not left_behind:
        return None
    if n is not None:
        if stored.type == CHURN_RISK:
            state.churn_episodes = n
        elif rec is not None:
            rec.recovery_episodes = n
    risk = state.pub[0] if state.pub else 0.0
    return {
        "schema_version": 1,
        "alert_id": stored.alert_id,
        "type": FAILED_RECOVERY if stored.type == FAILED_RECOVERY else CHURN_RISK,
        "status": "resolved",
        "severity": stored.severity if stored.severity in ("warning", "critical") else "warning",
        "customer_id": state.customer_id,
        "tier": stored.tier if stored.tier in TIERS else "standard",
        "as_of": iso(max(stored.as_of, state.wm)),
        "churn_risk": round(min(max(risk, 0.0), 1.0), 4),
        "revenue_at_risk": 0.0,
        "reasons": ["withdrawn: fired by a micro-batch that a worker crash undid; the customer's state "
                    "as stored does not hold it"],
        "recommended_action": WITHDRAWN_ACTION,
        "complaint_id": stored.complaint_id if stored.type == FAILED_RECOVERY else None,
    }


class LeftBehindAlerts:
    """The alerts a crash left behind of the customers this worker judges, waiting for their
    customers' evaluations (one assignment's: the worker starts a new one at each)."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[StoredAlert]] = {}

    def hold(self, alert: StoredAlert, state: CustomerState | None, owned: set[tuple[int, int]]) -> bool:
        """Keep one never-resolved alert if its customer's `state` does not know it; returns
        whether it is kept. Of the customers with a state, only those fed from the `owned`
        partitions are judged here (another worker's, in a shared store, are its own to judge).
        A customer with no state (its first batch was the one the crash undid) is judged by the
        state its records make here, if any come (another worker's never do); its alerts are
        held until the next assignment (about 200 bytes an alert). The worker calls it for each
        alert the store holds, a slice at a time (a state is decoded for each: about 70 µs)."""
        if state is not None and not state.fed_from(owned):
            return False
        if state is None or is_left_behind(state, alert):
            self.waiting.setdefault(alert.customer_id, []).append(alert)
            return True
        return False

    def withdraw_due(self, states: Mapping[str, CustomerState], evaluated: Callable[[str], float]) -> list[AlertDict]:
        """The withdrawals due in a batch that made these `states`: the alerts waiting of its
        customers evaluated (`evaluated(customer)`, the instant of the customer's latest
        evaluation) as of the alert's instant or later without firing it again. One fired again
        (the same episode, the same id) is forgotten."""
        out: list[AlertDict] = []
        for cid in [c for c in states if c in self.waiting]:
            state, at = states[cid], evaluated(cid)
            waiting = []
            for alert in self.waiting[cid]:
                if at >= alert.as_of:
                    if (record := withdraw_left_behind(state, alert)) is not None:
                        out.append(record)
                elif is_left_behind(state, alert):
                    waiting.append(alert)
            if waiting:
                self.waiting[cid] = waiting
            else:
                del self.waiting[cid]
        return out
