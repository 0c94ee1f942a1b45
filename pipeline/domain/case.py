"""Alert cases: what operators did about an alert — acknowledged, assigned, contacted,
closed with an outcome and the playbook action used (records of `cx.actions`).

Pure: a case is opened when an alert episode starts firing (the worker's alert rules), lives
in the customer's state (`CustomerState.cases`, alert id → stored dict) and changes only by
`apply_action`. Every action after the first is applied in any arrival order with the same
result (earliest acknowledgement and contact win; the close is final). Any action (assigned,
contacted, closed too) counts as the acknowledgement: someone owns the case.

Escalation: a critical alert still firing and its case unacknowledged `escalate_after` seconds
after it fired raises an `escalation` alert (pipeline/domain/alerts.py), resolved when the case is
acknowledged (or the alert resolves).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from schemas.actions import ActionRecord
from schemas.records import AlertDict

MAX_CASE_IDS = 16                 # action-id fingerprints kept per case (duplicates)
MAX_CASES = 24                    # cases kept per customer (closed and oldest dropped first)
CLOSED_RETENTION = 7 * 86400.0    # a closed case is kept this long (late duplicates stay duplicates)
OPEN_RETENTION = 30 * 86400.0     # an open case whose alert resolved is dropped after this long


@dataclass(slots=True)
class Case:
    alert_id: str
    kind: str                       # the alert type
    severity: str                   # the alert's latest severity
    tier: str
    opened: float                   # the alert episode started
    alert_active: bool = True       # the alert is still firing
    acked: float | None = None      # first action of any kind
    acked_by: str | None = None
    assignee: str | None = None
    assigned: float | None = None   # latest assignment
    contacted: float | None = None  # first contact
    channel: str | None = None      # channel of the first contact
    closed: float | None = None
    closed_by: str | None = None
    outcome: str | None = None
    action: str | None = None       # playbook action code of the close
    ids: list[int] = field(default_factory=list)

    @property
    def is_closed(self) -> bool:
        return self.closed is not None

    def stored(self) -> dict:
        return {_SHORT[f]: v for f in _FIELDS if (v := getattr(self, f)) is not None and f != "alert_id"
                and not (f == "ids" and not v) and not (f == "alert_active" and v)}

    @classmethod
    def from_stored(cls, alert_id: str, d: dict) -> "Case":
        return cls(alert_id=alert_id, **{_LONG[k]: v for k, v in d.items()})


_FIELDS = tuple(f.name for f in fields(Case))
_SHORT = {"alert_id": "id", "kind": "k", "severity": "sv", "tier": "t", "opened": "o", "alert_active": "a",
          "acked": "ak", "acked_by": "ab", "assignee": "as", "assigned": "at", "contacted": "c", "channel": "ch",
          "closed": "cl", "closed_by": "cb", "outcome": "oc", "action": "pa", "ids": "ids"}
_LONG = {v: k for k, v in _SHORT.items()}
assert set(_SHORT) == set(_FIELDS)


def open_case(cases: dict[str, dict], alert: AlertDict, started: float) -> None:
    """A firing alert record: open its case, or update the severity/tier of an open one."""
    if alert["type"] == "escalation":
        return
    stored = cases.get(alert["alert_id"])
    if stored is None:
        cases[alert["alert_id"]] = Case(alert["alert_id"], alert["type"], alert["severity"], alert["tier"],
                                        started).stored()
    else:
        case = Case.from_stored(alert["alert_id"], stored)
        case.severity, case.tier, case.alert_active = alert["severity"], alert["tier"], True
        cases[alert["alert_id"]] = case.stored()


def alert_resolved(cases: dict[str, dict], alert_id: str) -> None:
    if alert_id in cases:
        case = Case.from_stored(alert_id, cases[alert_id])
        case.alert_active = False
        cases[alert_id] = case.stored()


# what apply_action did with an action; the two refusals are dead-letter reasons (schemas.outputs)
ActionOutcome = Literal["applied", "duplicate", "unknown_alert", "case_closed"]


def apply_action(cases: dict[str, dict], a: ActionRecord, fingerprint: int) -> tuple[ActionOutcome, Case | None, str]:
    """Apply one action. Returns (outcome, the case after it, why): outcome "applied",
    "duplicate" (this action id was applied before), "unknown_alert" or "case_closed"."""
    stored = cases.get(a.alert_id)
    if stored is None:
        return "unknown_alert", None, f"no case for alert {a.alert_id} of this customer (never fired here, or expired)"
    case = Case.from_stored(a.alert_id, stored)
    if fingerprint in case.ids:
        return "duplicate", case, ""
    t = a.occurred_at.timestamp()
    if case.closed is not None and t >= case.closed:
        return "case_closed", case, f"case of alert {a.alert_id} was closed ({case.outcome}); no action after the close"
    if t < case.opened - 3600.0:
        return "unknown_alert", case, f"action at {a.occurred_at.isoformat()} is before the alert fired"
    case.ids = (case.ids + [fingerprint])[-MAX_CASE_IDS:]
    if case.acked is None or t < case.acked:
        case.acked, case.acked_by = t, a.staff_id
    kind = a.action.value
    if kind == "assigned" and (case.assigned is None or t >= case.assigned):
        case.assignee, case.assigned = a.staff_id, t
    elif kind == "contacted" and a.channel is not None and (case.contacted is None or t < case.contacted):
        case.contacted, case.channel = t, a.channel.value    # the schema requires the channel here
    elif kind == "closed" and a.outcome is not None and a.playbook_action is not None:   # required by the schema
        # an earlier close arriving late replaces a later one: the earliest close stands
        if case.closed is None or t < case.closed:
            case.closed, case.closed_by, case.outcome, case.action = t, a.staff_id, a.outcome.value, a.playbook_action.value
    cases[a.alert_id] = case.stored()
    return "applied", case, ""


def needs_escalation(case: Case, now: float, escalate_after: float) -> bool:
    """A critical alert, still firing, whose case nobody acknowledged within `escalate_after`
    seconds of firing (an alert that resolved by itself needs no team lead)."""
    return (escalate_after > 0 and case.alert_active and case.severity == "critical" and case.acked is None
            and not case.is_closed and now >= case.opened + escalate_after)


def prune_cases(cases: dict[str, dict], now: float) -> None:
    """Drop closed cases after CLOSED_RETENTION and open ones whose alert resolved more than
    OPEN_RETENTION after firing; keep at most MAX_CASES (closed, then oldest, first out)."""
    keep = {}
    for aid, d in cases.items():
        case = Case.from_stored(aid, d)
        if case.closed is not None and now - case.closed > CLOSED_RETENTION:
            continue
        if not case.is_closed and not case.alert_active and now - case.opened > OPEN_RETENTION:
            continue
        keep[aid] = (case, d)
    if len(keep) > MAX_CASES:
        ranked = sorted(keep.items(), key=lambda kv: (not kv[1][0].is_closed, kv[1][0].opened))
        keep = dict(ranked[len(keep) - MAX_CASES:])
    cases.clear()
    cases.update({aid: d for aid, (_, d) in keep.items()})
