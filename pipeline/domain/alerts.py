"""Alert rules and their lifecycle (firing → resolved), pure functions of the profile.

Each alert episode has a stable `alert_id`, so a replay or a redelivery reproduces the same
id: a hash of customer, alert key and the event time the episode started where a rule knows
that instant from the state (a deadline), and of the episode's number for churn risk
(`CustomerState.churn_episodes`) and a failed recovery (the complaint's `recovery_episodes`).
A churn alert fires when an evaluation sees the risk above its threshold, a failed recovery
when one sees the complaint's failure, and a customer is evaluated once per micro-batch,
after the batch's events: a redelivery after a crash cuts its batches anew and can see the
crossing at another event. Numbered, the episode keeps its id wherever it is seen
(docs/fault-tolerance.md, "Alert ids after a crash"). The
active episodes live in the customer's state; a record is emitted only on a change
(fire, severity change, resolve), and churn alerts resolve only once the risk falls
`HYSTERESIS` below the threshold, so a risk hovering at a threshold does not flap.
"""
from __future__ import annotations

import hashlib
from functools import partial
from typing import Callable

from pipeline.domain.case import Case, needs_escalation
from pipeline.domain.scoring import ComplaintSla, Profile, iso
from pipeline.domain.state import ComplaintRec, CustomerState
from pipeline.domain.uplift import is_control
from schemas.records import AlertDict
from pipeline.domain.vocabulary import CHURN_FACTORS, CHURN_RISK, FAILED_RECOVERY, SLA_BREACH, TIERS

# (warning, critical) churn-risk thresholds per tier: high tiers are warned earlier.
CHURN_THRESHOLDS = {
    "standard": (0.30, 0.60),
    "silver": (0.27, 0.55),
    "gold": (0.24, 0.50),
    "platinum": (0.20, 0.45),
}
HYSTERESIS = 0.10
# A churn alert needs a reason: the named drivers must explain at least this share of the
# risk. A customer seen once, or one who always comes rarely, carries their baseline
# dropout risk in the score, but nobody can act on "we barely know them".
EXPLAINED_SHARE = 0.5
HIGH_TIERS = ("gold", "platinum")
assert set(CHURN_THRESHOLDS) == set(TIERS) and set(HIGH_TIERS) <= set(TIERS)

# The recovery playbook: one recommended action per situation (README.md, "Playbook").
PLAYBOOK = {
    "sla_unanswered": "call back before today's cut-off — sunset rule",
    "sla_at_risk_unanswered": "answer the customer now: the sunset-rule deadline is near",
    "sla_at_risk_unresolved": "give the case to someone who can resolve it before the target, and tell the customer when",
    "sla_unresolved": "escalate to a senior agent and give the customer a resolution date today",
    "failed_recovery": "compensate and follow up within 24 hours",
    "high_tier_critical": "assign an account manager and call within 24 hours",
    "inactivity": "send a personal win-back offer",
    "declining_frequency": "reach out with a relevant offer before the next expected purchase",
    "declining_spend": "ask what changed and offer what fits the customer's usual basket",
    "unresolved_complaints": "close the open complaints today and confirm with the customer",
    "sla_breaches": "apologise for the slow response and assign one owner for the case",
    "late_fulfilment": "apologise and upgrade delivery on the next order",
    "detractor": "service-recovery call: listen, empathise, fix, follow up",
    "low_ratings": "service-recovery call: listen, empathise, fix, follow up",
    "experience_drop": "review the recent touchpoints and call the customer",
    "refunds_returns": "review product fit with the customer",
    "high_effort": "give the customer a single point of contact",
    "escalation": "team lead: assign an owner now and acknowledge the case",
    "control": "none: control group (no contact; measures whether the actions work, cxpulse evaluate --uplift)",
}
assert set(CHURN_FACTORS) <= set(PLAYBOOK)   # every driver has an action


def alert_id(customer_id: str, key: str, started: float) -> str:
    return hashlib.blake2b(f"{customer_id}|{key}|{started:.3f}".encode(), digest_size=10).hexdigest()


def numbered_alert_id(customer_id: str, key: str, episode: int) -> str:
    """The id of the customer's `episode`-th episode of `key` (never equal to a time-named one)."""
    return hashlib.blake2b(f"{customer_id}|{key}|#{episode}".encode(), digest_size=10).hexdigest()


def _record(state: CustomerState, p: Profile, key: str, kind: str, status: str, severity: str,
            reasons: list[str], action: str, complaint_id: str | None = None) -> AlertDict:
    return {
        "schema_version": 1,
        "alert_id": state.alerts[key][0],
        "type": kind,
        "status": status,
        "severity": severity,
        "customer_id": state.customer_id,
        "tier": p.tier,
        "as_of": iso(p.as_of),
        "churn_risk": round(p.churn.risk, 4),
        "revenue_at_risk": round(p.churn.risk * p.revenue_365d, 2),
        "reasons": reasons,
        "recommended_action": action,
        "complaint_id": complaint_id,
    }


def _transition(state: CustomerState, p: Profile, key: str, kind: str, firing: bool, severity: str,
                reasons: list[str], action: str, complaint_id: str | None = None,
                started: float | None = None, next_episode: Callable[[], int] | None = None) -> list[AlertDict]:
    """`started` (default: as of the evaluation) names the episode in its alert id; rules
    whose episode starts at a known instant (a deadline's risk point) pass it, so the id
    does not depend on when the sweep happened to look. `next_episode` (churn risk and a
    failed recovery, whose start has no such instant) counts the episode and returns its
    number, which names it instead."""
    active = state.alerts.get(key)
    if firing and active is None:
        at = p.as_of if started is None else started
        if next_episode is not None:
            aid = numbered_alert_id(state.customer_id, key, next_episode())
        else:
            aid = alert_id(state.customer_id, key, at)
        state.alerts[key] = [aid, severity, at]
        return [_record(state, p, key, kind, "firing", severity, reasons, action, complaint_id)]
    if firing and active is not None and active[1] != severity:
        active[1] = severity
        return [_record(state, p, key, kind, "firing", severity, reasons, action, complaint_id)]
    if not firing and active is not None:
        out = [_record(state, p, key, kind, "resolved", active[1], reasons, action, complaint_id)]
        del state.alerts[key]
        return out
    return []


def _next_churn_episode(state: CustomerState) -> int:
    state.churn_episodes += 1
    return state.churn_episodes


def _next_recovery_episode(rec: ComplaintRec) -> int:
    """The complaint's next failed-recovery episode (per complaint: two complaints failing in
    one redelivered batch number the same whatever order the evaluations saw them in)."""
    rec.recovery_episodes += 1
    return rec.recovery_episodes


def churn_action(p: Profile, severity: str) -> str:
    if severity == "critical" and p.tier in HIGH_TIERS:
        return PLAYBOOK["high_tier_critical"]
    top = p.churn.drivers[0][0] if p.churn.drivers else "inactivity"
    return PLAYBOOK.get(top, PLAYBOOK["inactivity"])


def update_alerts(state: CustomerState, p: Profile, control_share: float = 0.0) -> list[AlertDict]:
    """Evaluate every rule for this customer at `p.as_of`; return the alert records to publish.
    A churn_risk episode whose id falls in the control share (pipeline.domain.uplift) is
    published with `control: true`, no recommended action and the withheld one."""
    out: list[AlertDict] = []
    warn, crit = CHURN_THRESHOLDS[p.tier]
    risk = p.churn.risk
    active = state.alerts.get("churn")
    explained = sum(c for _, c in p.churn.drivers)
    if active is None:
        firing = risk >= warn and explained >= EXPLAINED_SHARE * risk
        severity = "critical" if risk >= crit else "warning"
    else:
        firing = risk >= warn - HYSTERESIS
        severity = active[1]
        if severity == "warning" and risk >= crit:
            severity = "critical"
        elif severity == "critical" and risk < crit - HYSTERESIS:
            severity = "warning"
    threshold = crit if severity == "critical" else warn
    reasons = [f"churn risk {risk:.2f} vs {severity} threshold {threshold:.2f} for {p.tier}"]
    reasons += [f"{factor} +{contribution:.2f}" for factor, contribution in p.churn.drivers[:3]]
    churn = _transition(state, p, "churn", CHURN_RISK, firing, severity, reasons, churn_action(p, severity),
                        next_episode=partial(_next_churn_episode, state))
    for alert in churn:
        if is_control(alert["alert_id"], control_share):
            alert["control"] = True
            alert["withheld_action"] = alert["recommended_action"]
            alert["recommended_action"] = PLAYBOOK["control"]
    out += churn

    complaints = {rec.id: rec for rec in state.complaints}
    for rec in state.complaints:
        sla = p.slas[rec.id]
        unanswered = sla.ack_breached and rec.ack is None
        unresolved = sla.resolve_breached and rec.resolved is None
        severity = "critical" if rec.severity in ("high", "critical") or p.tier in HIGH_TIERS else "warning"
        if unanswered:
            reasons = [f"complaint {rec.id} ({rec.severity}, {rec.category}) not answered by {iso(sla.ack_due)} — sunset rule"]
            action = PLAYBOOK["sla_unanswered"]
        elif unresolved:
            reasons = [f"complaint {rec.id} ({rec.severity}, {rec.category}) not resolved by {iso(sla.resolve_due)}"]
            action = PLAYBOOK["sla_unresolved"]
        else:
            reasons = [f"complaint {rec.id} answered" + (" and resolved" if rec.resolved is not None else "")]
            action = "none — resolved"
        # the episode starts at the deadline it missed (the answer's, else the resolution's):
        # its id names the complaint and the deadline, whichever tick of the sweep saw it
        breach = _transition(state, p, f"sla:{rec.id}", SLA_BREACH, unanswered or unresolved, severity,
                             reasons, action, rec.id, sla.ack_due if unanswered else sla.resolve_due)
        out += breach
        out += _at_risk(state, p, rec, sla, breached=unanswered or unresolved, breach=breach)
        failed = rec.recovery_failure_stands
        reasons = [f"complaint {rec.id} " + ("reopened" if rec.is_open else "resolved but the customer is not satisfied")
                   if failed else f"complaint {rec.id} recovered"]
        out += _transition(state, p, f"rec:{rec.id}", FAILED_RECOVERY, failed,
                           "critical" if p.tier in HIGH_TIERS else "warning", reasons,
                           PLAYBOOK["failed_recovery"] if failed else "none — recovered", rec.id,
                           next_episode=partial(_next_recovery_episode, rec))
    for key in [k for k in state.alerts
                if k.split(":", 1)[0] in KIND_OF_PREFIX and k.split(":", 1)[1] not in complaints]:
        kind = KIND_OF_PREFIX[key.split(":", 1)[0]]
        cid = key.split(":", 1)[1]
        out += _transition(state, p, key, kind, False, state.alerts[key][1],
                           [f"complaint {cid} closed and archived"], "none — closed", cid)
    return out


KIND_OF_PREFIX = {"sla": "sla_breach", "risk": "sla_at_risk", "riskr": "sla_at_risk", "rec": "failed_recovery"}


def at_risk_severity(rec_severity: str, tier: str) -> str:
    """A warning, one step below the breach it announces: critical only when both the
    complaint (high/critical) and the customer (gold/platinum) make the breach costly."""
    return "critical" if rec_severity in ("high", "critical") and tier in HIGH_TIERS else "warning"


def _at_risk(state: CustomerState, p: Profile, rec: ComplaintRec, sla: ComplaintSla, *, breached: bool,
             breach: list[AlertDict]) -> list[AlertDict]:
    """`sla_at_risk`: the share of the time to a deadline has passed without the answer
    (or resolution) it waits for. One episode per deadline (`risk:` the answer, `riskr:`
    the resolution, which waits while the answer is at risk). Resolved when the answer
    comes; superseded by `sla_breach` when a deadline passes first (resolved, naming the
    breach's alert id)."""
    out: list[AlertDict] = []
    severity = at_risk_severity(rec.severity, p.tier)
    what = f"complaint {rec.id} ({rec.severity}, {rec.category})"
    phases = (
        (f"risk:{rec.id}", sla.ack_at_risk, sla.ack_warn, "answered",
         f"{what} not answered; due {iso(sla.ack_due)} — sunset rule", PLAYBOOK["sla_at_risk_unanswered"]),
        (f"riskr:{rec.id}", sla.resolve_at_risk and not sla.ack_at_risk, sla.resolve_warn, "resolved",
         f"{what} not resolved; due {iso(sla.resolve_due)}", PLAYBOOK["sla_at_risk_unresolved"]),
    )
    for key, at_risk, started, done, reason, action in phases:
        firing = at_risk and not breached
        if firing:
            out += _transition(state, p, key, "sla_at_risk", True, severity, [reason], action, rec.id, started)
        elif key in state.alerts:
            if breached:
                ids = [a["alert_id"] for a in breach if a["status"] == "firing"] or [state.alerts[f"sla:{rec.id}"][0]]
                reasons, end = [f"complaint {rec.id} missed its deadline: superseded by sla_breach {ids[0]}"], \
                    "none — superseded by sla_breach"
            else:
                reasons, end = [f"complaint {rec.id} {done} in time"], f"none — {done}"
            out += _transition(state, p, key, "sla_at_risk", False, state.alerts[key][1], reasons, end, rec.id)
    return out


def update_escalations(state: CustomerState, p: Profile, escalate_after: float) -> list[AlertDict]:
    """`escalation`: a critical alert still firing whose case is unacknowledged `escalate_after`
    seconds after it fired (pipeline/domain/case.py). Resolved once anyone acts on the case,
    or the alert resolves. The episode starts at the escalation instant, so its id is stable
    across sweeps."""
    out: list[AlertDict] = []
    hours = escalate_after / 3600.0
    for aid, stored in state.cases.items():
        case = Case.from_stored(aid, stored)
        key = f"esc:{aid}"
        firing = needs_escalation(case, p.as_of, escalate_after)
        if not firing and key not in state.alerts:
            continue
        if firing:
            reasons = [f"critical {case.kind} alert {aid} not acknowledged within {hours:g} h"]
            action = PLAYBOOK["escalation"]
        else:
            by = ("closed" if case.is_closed else f"acknowledged by {case.acked_by}" if case.acked_by
                  else "no longer needed: the alert resolved")
            reasons, action = [f"case of alert {aid} {by}"], "none — acknowledged" if case.acked else "none — resolved"
        out += _transition(state, p, key, "escalation", firing, "critical", reasons, action,
                           started=case.opened + escalate_after)
    for key in [k for k in state.alerts if k.startswith("esc:") and k[4:] not in state.cases]:
        out += _transition(state, p, key, "escalation", False, "critical", [f"case of alert {key[4:]} expired"],
                           "none — expired")
    return out
