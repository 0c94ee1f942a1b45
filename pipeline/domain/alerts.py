"""Alert rules and their lifecycle (firing → resolved), pure functions of the profile.

Each alert episode has a stable `alert_id` (a hash of customer, alert key and the event
time the episode started), so a replay or a redelivery reproduces the same id. The
active episodes live in the customer's state; a record is emitted only on a change
(fire, severity change, resolve), and churn alerts resolve only once the risk falls
`HYSTERESIS` below the threshold, so a risk hovering at a threshold does not flap.
"""
from __future__ import annotations

import hashlib

from pipeline.domain.scoring import Profile, iso
from pipeline.domain.state import CustomerState
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
}
assert set(CHURN_FACTORS) <= set(PLAYBOOK)   # every driver has an action


def alert_id(customer_id: str, key: str, started: float) -> str:
    return hashlib.blake2b(f"{customer_id}|{key}|{started:.3f}".encode(), digest_size=10).hexdigest()


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
                reasons: list[str], action: str, complaint_id: str | None = None) -> list[AlertDict]:
    active = state.alerts.get(key)
    if firing and active is None:
        state.alerts[key] = [alert_id(state.customer_id, key, p.as_of), severity, p.as_of]
        return [_record(state, p, key, kind, "firing", severity, reasons, action, complaint_id)]
    if firing and active is not None and active[1] != severity:
        active[1] = severity
        return [_record(state, p, key, kind, "firing", severity, reasons, action, complaint_id)]
    if not firing and active is not None:
        out = [_record(state, p, key, kind, "resolved", active[1], reasons, action, complaint_id)]
        del state.alerts[key]
        return out
    return []


def churn_action(p: Profile, severity: str) -> str:
    if severity == "critical" and p.tier in HIGH_TIERS:
        return PLAYBOOK["high_tier_critical"]
    top = p.churn.drivers[0][0] if p.churn.drivers else "inactivity"
    return PLAYBOOK.get(top, PLAYBOOK["inactivity"])


def update_alerts(state: CustomerState, p: Profile) -> list[AlertDict]:
    """Evaluate every rule for this customer at `p.as_of`; return the alert records to publish."""
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
    out += _transition(state, p, "churn", CHURN_RISK, firing, severity, reasons, churn_action(p, severity))

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
        out += _transition(state, p, f"sla:{rec.id}", SLA_BREACH, unanswered or unresolved, severity,
                           reasons, action, rec.id)
        failed = rec.recovery_failure_stands
        reasons = [f"complaint {rec.id} " + ("reopened" if rec.is_open else "resolved but the customer is not satisfied")
                   if failed else f"complaint {rec.id} recovered"]
        out += _transition(state, p, f"rec:{rec.id}", FAILED_RECOVERY, failed,
                           "critical" if p.tier in HIGH_TIERS else "warning", reasons,
                           PLAYBOOK["failed_recovery"] if failed else "none — recovered", rec.id)
    for key in [k for k in state.alerts if ":" in k and k.split(":", 1)[1] not in complaints]:
        kind = SLA_BREACH if key.startswith("sla:") else FAILED_RECOVERY
        cid = key.split(":", 1)[1]
        out += _transition(state, p, key, kind, False, state.alerts[key][1],
                           [f"complaint {cid} closed and archived"], "none — closed", cid)
    return out
