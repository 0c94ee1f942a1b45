"""The output records as the core builds them: plain dicts with a declared shape.

`schemas/outputs.py` is the contract (pydantic models, exported as JSON Schema); these
TypedDicts are the same records as the core hands them to the adapters (Kafka, ClickHouse,
metrics) on the hot path: dicts cost nothing to build and serialize straight to JSON, where
a pydantic model per record would be validated again on every update: about 100 µs more
per score, against about 2–10 µs to serialize the dict (docs/lab/record_cost.py).
tests/unit/test_records.py checks them field by field against the models. Timestamps are
RFC 3339 strings here.
"""
from __future__ import annotations

from typing import TypedDict

from schemas.outputs import DeadLetterReason


class ChurnDriverDict(TypedDict):
    factor: str
    contribution: float


class ScoreDict(TypedDict):
    """A `cx.scores` record (schemas.outputs.ScoreRecord)."""
    schema_version: int
    customer_id: str
    as_of: str
    version: int
    cxi: float | None
    tangibles: float | None
    reliability: float | None
    responsiveness: float | None
    assurance: float | None
    empathy: float | None
    csat: float | None
    nps: float | None
    nps_class: str | None
    tier: str
    stage: str | None
    revenue_365d: float
    open_complaints: int
    sla_breaches: int
    churn_risk: float
    churn_drivers: list[ChurnDriverDict]
    revenue_at_risk: float
    events: int
    churn_model: str | None   # version of the learned model that scored churn_risk; None: hand-set
    early_warning: float | None   # P(leaves within H | still here); None: no early-warning model yet
    early_warning_drivers: list[ChurnDriverDict]   # why early_warning is above its baseline; [] while it is None


class _AlertFields(TypedDict):
    """The keys every `cx.alerts` record has."""
    schema_version: int
    alert_id: str
    type: str
    status: str
    severity: str
    customer_id: str
    tier: str
    as_of: str
    churn_risk: float
    revenue_at_risk: float
    reasons: list[str]
    recommended_action: str
    complaint_id: str | None


class AlertDict(_AlertFields, total=False):
    """A `cx.alerts` record (schemas.outputs.AlertRecord); the optional keys only on
    churn_risk alerts of the control group (pipeline.domain.uplift). Declared by inheritance,
    not NotRequired[], so that `__required_keys__` is right under postponed annotations."""
    control: bool            # the alert is in the control group
    withheld_action: str     # the playbook action it did not recommend


class DeadLetterDict(TypedDict):
    """A `cx.deadletter` record (schemas.outputs.DeadLetter)."""
    schema_version: int
    reason: DeadLetterReason
    error: str
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    original_b64: str
    received_at: str
