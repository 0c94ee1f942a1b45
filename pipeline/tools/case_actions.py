"""`cxpulse ack | assign | contact | close ALERT_ID`: an operator's action on an alert's case,
written to the actions topic (`cx.actions`, key = the alert's customer id).

The record is validated by the same model the worker uses (schemas/actions.py) before it is
sent, so a typo in a code is an error here, not a dead letter later. The customer id comes
from `--customer`, or else from the alert itself on the alerts topic (read from the start:
give `--customer` on a long-lived topic).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
from pydantic import ValidationError

from pipeline.config import Settings
from schemas.actions import ActionRecord


class ActionError(ValueError):
    pass


def build_action(alert_id: str, customer_id: str, action: str, staff_id: str, *, channel: str | None = None,
                 outcome: str | None = None, playbook_action: str | None = None,
                 now: datetime | None = None, action_id: str | None = None) -> ActionRecord:
    record = {"type": "action", "schema_version": 1, "action_id": action_id or uuid.uuid4().hex,
              "alert_id": alert_id, "customer_id": customer_id,
              "occurred_at": (now or datetime.now(timezone.utc)).isoformat(), "action": action,
              "staff_id": staff_id, "channel": channel, "outcome": outcome, "playbook_action": playbook_action}
    try:
        return ActionRecord.model_validate_json(orjson.dumps({k: v for k, v in record.items() if v is not None}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ActionError(problems) from None


def customer_of_alert(settings: Settings, alert_id: str, timeout: float = 30.0) -> str:
    """The customer id of `alert_id`, from the alerts topic."""
    from pipeline.adapters.kafka import kafka_io

    for message in kafka_io.read_topic(settings, settings.topic_alerts, timeout=timeout):
        if message.value is None:
            continue
        alert = orjson.loads(message.value)
        if alert.get("alert_id") == alert_id:
            return alert["customer_id"]
    raise ActionError(f"alert {alert_id} is not on {settings.topic_alerts}; give --customer")


def send_action(settings: Settings, record: ActionRecord) -> None:
    from pipeline.adapters.kafka import kafka_io

    value = record.model_dump_json(exclude_none=True).encode()
    kafka_io.produce(settings, [(settings.topic_actions, record.customer_id.encode(), value)])
