"""Pipeline records -> ClickHouse rows (functional core; no I/O, no clickhouse_connect).

Each function returns a dict column -> value whose keys are exactly the columns of
one table in deploy/clickhouse/*.sql. Conventions:

- datetimes are tz-aware UTC (columns are DateTime64(3, 'UTC'));
- absent identifiers / enum values are '' (ClickHouse key columns cannot be NULL);
- absent measures are None (Nullable columns), so averages skip them;
- decimals (amount, compensation) become float: ClickHouse aggregates, not ledgers;
- no personal data: only pseudonymous ids and derived measures are copied.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pipeline.adapters.clickhouse import tables
from pipeline.domain.vocabulary import DIMENSIONS
from schemas.events import Complaint, Order, Touchpoint

if TYPE_CHECKING:
    from pipeline.service.processor import BatchResult


# Journey stage an event belongs to when it does not say so itself: an order is the
# purchase stage by definition; a complaint's stage is unknown ('').
ORDER_STAGE = "purchase"

EVENT_COLUMNS = (
    "event_id", "event_type", "customer_id", "occurred_at", "channel", "tier", "stage",
    "kind", "staff_id", "wait_seconds", "handle_seconds", "resolved", "handoffs",
    *(f"rating_{d}" for d in DIMENSIONS), "csat", "nps", "sentiment",
    "order_id", "status", "amount", "currency", "promised_at", "fulfilled_at", "lateness_seconds",
    "complaint_id", "category", "severity", "compensation", "satisfied",
)
SCORE_COLUMNS = (
    "customer_id", "as_of", "version", "cxi", *DIMENSIONS, "csat", "nps", "nps_class", "tier",
    "stage", "revenue_365d", "open_complaints", "sla_breaches", "churn_risk",
    "driver_factors", "driver_contributions", "revenue_at_risk", "events",
    "churn_model", "early_warning", "early_warning_factors", "early_warning_contributions",
)
ALERT_COLUMNS = (
    "alert_id", "type", "status", "severity", "customer_id", "tier", "as_of", "churn_risk",
    "revenue_at_risk", "reasons", "recommended_action", "complaint_id", "control", "withheld_action",
)
COMPLAINT_COLUMNS = (
    "customer_id", "complaint_id", "channel", "category", "severity", "tier", "status",
    "opened_at", "due_at", "acknowledged_at", "resolved_at", "breached", "satisfied",
    "compensation", "updated_at", "version",
)
ERASURE_COLUMNS = ("customer_id", "requested_at", "rows_deleted")


def _s(v: Any) -> str:
    """Enum or str or None -> str ('' for None)."""
    if v is None:
        return ""
    if isinstance(v, Enum):  # before str: the schema enums are str subclasses
        return v.value
    return v if type(v) is str else str(v)


def _utc(v: datetime | str | None) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):  # JSON-ready records carry RFC 3339 strings
        v = datetime.fromisoformat(v.replace("Z", "+00:00"))
    if v.tzinfo is None:
        raise ValueError(f"naive datetime {v!r}: all times must be tz-aware")
    return v.astimezone(timezone.utc)


def _f(v: Decimal | float | int | None) -> float | None:
    return None if v is None else float(v)


def _blank_event(event: Touchpoint | Order | Complaint, tier: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(EVENT_COLUMNS)
    row.update(
        event_id=event.event_id, event_type=event.type, customer_id=event.customer_id,
        occurred_at=_utc(event.occurred_at), channel=_s(event.channel), tier=_s(tier),
        stage="", kind="", staff_id="", order_id="", status="", currency="",
        complaint_id="", category="", severity="",
    )
    return row


def event_row(event: Touchpoint | Order | Complaint, tier: str) -> dict[str, Any]:
    """One accepted input event -> a `cx_events` row (ids and derived measures only).

    `tier` is the customer's tier when the event was applied. Derived measures:
    `lateness_seconds` = fulfilled_at - promised_at (positive = late) when both are given.
    """
    row = _blank_event(event, tier)
    if isinstance(event, Touchpoint):
        ratings = event.ratings
        row.update(
            stage=_s(event.stage), kind=_s(event.kind), staff_id=event.staff_id or "",
            wait_seconds=event.wait_seconds, handle_seconds=event.handle_seconds,
            resolved=event.resolved, handoffs=event.handoffs,
            csat=event.csat, nps=event.nps, sentiment=event.sentiment,
            **{f"rating_{d}": (getattr(ratings, d) if ratings else None) for d in DIMENSIONS},
        )
    elif isinstance(event, Order):
        promised, fulfilled = _utc(event.promised_at), _utc(event.fulfilled_at)
        lateness = (fulfilled - promised).total_seconds() if promised and fulfilled else None
        row.update(
            stage=ORDER_STAGE, order_id=event.order_id, status=_s(event.status),
            amount=_f(event.amount), currency=event.currency, promised_at=promised,
            fulfilled_at=fulfilled, lateness_seconds=lateness,
        )
    elif isinstance(event, Complaint):
        row.update(
            complaint_id=event.complaint_id, status=_s(event.status), category=_s(event.category),
            severity=_s(event.severity), compensation=_f(event.compensation),
            satisfied=event.satisfied,
        )
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"not an input event: {type(event).__name__}")
    return row


def _driver_columns(drivers: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[float]]:
    """A score's drivers (largest first) as two parallel arrays: factors, contributions."""
    return [_s(d["factor"]) for d in drivers], [float(d["contribution"]) for d in drivers]


def score_row(score: Mapping[str, Any]) -> dict[str, Any]:
    """`ScoreRecord.model_dump()` -> a `cx_scores_history` row.

    churn_drivers (largest first) is flattened into two parallel arrays
    driver_factors / driver_contributions, order preserved; early_warning_drivers the same into
    early_warning_factors / early_warning_contributions. churn_model None (the hand-set model)
    is ''.
    """
    factors, contributions = _driver_columns(score.get("churn_drivers") or [])
    warning_factors, warning_contributions = _driver_columns(score.get("early_warning_drivers") or [])
    return {
        "customer_id": score["customer_id"],
        "as_of": _utc(score["as_of"]),
        "version": int(score["version"]),
        "cxi": _f(score.get("cxi")),
        **{d: _f(score.get(d)) for d in DIMENSIONS},
        "csat": _f(score.get("csat")),
        "nps": _f(score.get("nps")),
        "nps_class": _s(score.get("nps_class")),
        "tier": _s(score["tier"]),
        "stage": _s(score.get("stage")),
        "revenue_365d": float(score.get("revenue_365d") or 0.0),
        "open_complaints": int(score.get("open_complaints") or 0),
        "sla_breaches": int(score.get("sla_breaches") or 0),
        "churn_risk": float(score["churn_risk"]),
        "driver_factors": factors,
        "driver_contributions": contributions,
        "revenue_at_risk": float(score.get("revenue_at_risk") or 0.0),
        "events": int(score.get("events") or 0),
        "churn_model": _s(score.get("churn_model")),
        "early_warning": _f(score.get("early_warning")),
        "early_warning_factors": warning_factors,
        "early_warning_contributions": warning_contributions,
    }


def alert_row(alert: Mapping[str, Any]) -> dict[str, Any]:
    """`AlertRecord.model_dump()` -> a `cx_alerts` row (one per state change)."""
    return {
        "alert_id": alert["alert_id"],
        "type": _s(alert["type"]),
        "status": _s(alert["status"]),
        "severity": _s(alert["severity"]),
        "customer_id": alert["customer_id"],
        "tier": _s(alert["tier"]),
        "as_of": _utc(alert["as_of"]),
        "churn_risk": float(alert["churn_risk"]),
        "revenue_at_risk": float(alert["revenue_at_risk"]),
        "reasons": [_s(r) for r in alert.get("reasons") or []],
        "recommended_action": alert.get("recommended_action") or "",
        "complaint_id": alert.get("complaint_id") or "",
        "control": bool(alert.get("control")),
        "withheld_action": alert.get("withheld_action") or "",
    }


ALERT_FACT_COLUMNS = ("alert_id", "type", "status", "tier", "as_of")


def with_alert_facts(batch: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Sequence[Mapping[str, Any]]]:
    """The batch plus a `cx_alert_facts` row for each `cx_alerts` row (its columns without
    customer data; migration 006), inserted by the sink as a table of its own."""
    out: dict[str, Sequence[Mapping[str, Any]]] = dict(batch)
    alerts = batch.get(tables.ALERTS) or []
    if alerts and tables.ALERT_FACTS not in out:
        out[tables.ALERT_FACTS] = [{k: r[k] for k in ALERT_FACT_COLUMNS} for r in alerts]
    return out


def complaint_row(c: Mapping[str, Any]) -> dict[str, Any]:
    """A complaint lifecycle state -> a `cx_complaints` row (latest `version` wins)."""
    return {
        "customer_id": c["customer_id"],
        "complaint_id": c["complaint_id"],
        "channel": _s(c["channel"]),
        "category": _s(c["category"]),
        "severity": _s(c["severity"]),
        "tier": _s(c["tier"]),
        "status": _s(c["status"]),
        "opened_at": _utc(c["opened_at"]),
        "due_at": _utc(c.get("due_at")),
        "acknowledged_at": _utc(c.get("acknowledged_at")),
        "resolved_at": _utc(c.get("resolved_at")),
        "breached": bool(c.get("breached")),
        "satisfied": c.get("satisfied"),
        "compensation": float(c.get("compensation") or 0.0),
        "updated_at": _utc(c["updated_at"]),
        "version": int(c["version"]),
    }


def case_event_row(c: Mapping[str, Any]) -> dict[str, Any]:
    """An applied operator action with its case's times so far -> a `cx_case_events` row."""
    return {
        "customer_id": c["customer_id"],
        "alert_id": c["alert_id"],
        "action_id": c["action_id"],
        "action": _s(c["action"]),
        "occurred_at": _utc(c["occurred_at"]),
        "staff_id": c["staff_id"],
        "channel": _s(c.get("channel") or ""),
        "outcome": _s(c.get("outcome") or ""),
        "playbook_action": _s(c.get("playbook_action") or ""),
        "alert_type": _s(c["alert_type"]),
        "severity": _s(c["severity"]),
        "tier": _s(c["tier"]),
        "alert_fired_at": _utc(c["alert_fired_at"]),
        "acknowledged_at": _utc(c.get("acknowledged_at")),
        "first_contact_at": _utc(c.get("first_contact_at")),
        "closed_at": _utc(c.get("closed_at")),
    }


def erasure_row(customer_id: str, requested_at: datetime, rows_deleted: int) -> dict[str, Any]:
    """An erasure request's record -> a `cx_erasures` row."""
    return {"customer_id": customer_id, "requested_at": _utc(requested_at), "rows_deleted": int(rows_deleted)}


def batch_rows(result: "BatchResult") -> dict[str, list[dict[str, Any]]]:
    """Everything one processed micro-batch adds to ClickHouse, by table."""
    return {
        tables.EVENTS: [event_row(ev, tier) for ev, tier in result.events],
        tables.SCORES_HISTORY: [score_row(s) for s in result.scores],
        tables.ALERTS: [alert_row(a) for a in result.alerts],
        tables.COMPLAINTS: [complaint_row(c) for c in result.complaints],
        tables.CASE_EVENTS: [case_event_row(c) for c in result.case_events],
    }
