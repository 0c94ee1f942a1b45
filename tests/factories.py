"""Tiny builders of wire records for unit tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count

import orjson

from schemas.events import parse_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
RECEIVED_AT = T0.timestamp() + 365 * 86400.0   # the wall-clock time a test hands the core as "now received"
_ids = count()


def at(hours: float = 0.0, days: float = 0.0) -> str:
    return (T0 + timedelta(hours=hours, days=days)).isoformat()


def _base(kind: str, customer: str, when: str, channel: str, event_id: str | None) -> dict:
    return {"type": kind, "event_id": event_id or f"ev-{next(_ids)}", "customer_id": customer,
            "occurred_at": when, "channel": channel, "schema_version": 1}


def touchpoint(customer: str = "c1", when: str | None = None, event_id: str | None = None, **fields) -> dict:
    d = _base("touchpoint", customer, when or at(), fields.pop("channel", "store"), event_id)
    d.update({"stage": "usage", "kind": "service_delivery"})
    d.update(fields)
    return d


def order(customer: str = "c1", when: str | None = None, event_id: str | None = None, **fields) -> dict:
    d = _base("order", customer, when or at(), fields.pop("channel", "web"), event_id)
    d.update({"order_id": f"o-{next(_ids)}", "status": "paid", "amount": "100.00", "currency": "EUR"})
    d.update(fields)
    return d


def complaint(customer: str = "c1", when: str | None = None, event_id: str | None = None, **fields) -> dict:
    d = _base("complaint", customer, when or at(), fields.pop("channel", "call_center"), event_id)
    d.update({"complaint_id": "k1", "status": "opened", "category": "reliability", "severity": "medium"})
    d.update(fields)
    return d


def raw(d: dict) -> bytes:
    return orjson.dumps(d)


def ev(d: dict):
    return parse_event(raw(d))
