"""`cxpulse bench`'s live latency phase: an event re-timed to its send time is still a valid
event, with the order's promised/fulfilled times kept at their distance from it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson

from pipeline.tools.bench import live_value
from schemas.events import parse_event


def test_a_live_event_happens_at_its_send_time_and_keeps_its_order_times_spacing():
    event = {"type": "order", "event_id": "or-1", "customer_id": "C1", "occurred_at": "2026-10-01T10:00:00+02:00",
             "channel": "web", "schema_version": 1, "order_id": "O-1", "status": "delivered", "amount": "10.00",
             "currency": "EUR", "promised_at": "2026-10-03T10:00:00Z", "fulfilled_at": "2026-10-04T08:00:00Z"}
    sent_at = 1_800_000_000.0
    live = orjson.loads(live_value(orjson.dumps(event), sent_at))
    occurred = datetime.fromisoformat(live["occurred_at"])
    assert occurred == datetime.fromtimestamp(sent_at, timezone.utc)
    assert datetime.fromisoformat(live["promised_at"]) - occurred == timedelta(days=2, hours=2)
    assert datetime.fromisoformat(live["fulfilled_at"]) - occurred == timedelta(days=2, hours=24)
    assert {k: v for k, v in live.items() if not k.endswith("_at")} == {
        k: v for k, v in event.items() if not k.endswith("_at")}
    parse_event(orjson.dumps(live))   # still valid under the contract
