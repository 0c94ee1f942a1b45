"""Output records: cx.scores, cx.alerts and cx.deadletter (DESIGN.md section 2)."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import Stage

Score100 = Annotated[float, Field(ge=0, le=100)]


class ChurnFactor(str, Enum):
    """The fixed churn-driver vocabulary. Meanings are documented in README.md."""
    inactivity = "inactivity"
    declining_frequency = "declining_frequency"
    declining_spend = "declining_spend"
    unresolved_complaints = "unresolved_complaints"
    sla_breaches = "sla_breaches"
    failed_recovery = "failed_recovery"
    late_fulfilment = "late_fulfilment"
    detractor = "detractor"
    low_ratings = "low_ratings"
    refunds_returns = "refunds_returns"
    high_effort = "high_effort"
    experience_drop = "experience_drop"


class Tier(str, Enum):
    standard = "standard"
    silver = "silver"
    gold = "gold"
    platinum = "platinum"


class ChurnDriver(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: ChurnFactor
    contribution: Annotated[float, Field(ge=0, le=1)]


class ScoreRecord(BaseModel):
    """One customer's experience profile after an update; the latest per key is the state."""
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    customer_id: str
    as_of: AwareDatetime
    version: Annotated[int, Field(ge=1)]
    cxi: Score100 | None
    tangibles: Score100 | None
    reliability: Score100 | None
    responsiveness: Score100 | None
    assurance: Score100 | None
    empathy: Score100 | None
    csat: Score100 | None = Field(description="share of 4-5 answers, percent")
    nps: Annotated[float, Field(ge=-100, le=100)] | None = Field(description="rolling NPS of this customer's answers")
    nps_class: Literal["promoter", "passive", "detractor"] | None
    tier: Tier
    stage: Stage | None
    revenue_365d: Annotated[float, Field(ge=0)]
    open_complaints: Annotated[int, Field(ge=0)]
    sla_breaches: Annotated[int, Field(ge=0)]
    churn_risk: Annotated[float, Field(ge=0, le=1)]
    churn_drivers: list[ChurnDriver]
    revenue_at_risk: Annotated[float, Field(ge=0)]
    events: Annotated[int, Field(ge=0)] = Field(description="events applied to this profile")
    churn_model: str | None = Field(None, description="version of the learned churn model that scored churn_risk; "
                                                      "null: the hand-set model (cold start)")
    early_warning: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="learned early warning: the probability that the customer, if still a customer now, "
                          "leaves within the churn horizon (no activity after the next horizon); null until "
                          "the learning loop has trained an early-warning model (CXPULSE_LEARN_CHURN)")
    early_warning_drivers: list[ChurnDriver] = Field(
        default_factory=list, description="why early_warning is above the early-warning model's baseline: the "
                                          "factors that raise it, largest first, as churn_drivers explain churn_risk; "
                                          "empty while early_warning is null")


class AlertType(str, Enum):
    churn_risk = "churn_risk"
    sla_breach = "sla_breach"
    sla_at_risk = "sla_at_risk"
    escalation = "escalation"
    failed_recovery = "failed_recovery"


class AlertRecord(BaseModel):
    """An alert state change. `alert_id` is stable across one episode (firing → resolved)."""
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    alert_id: str
    type: AlertType
    status: Literal["firing", "resolved"]
    severity: Literal["warning", "critical"]
    customer_id: str
    tier: Tier
    as_of: AwareDatetime
    churn_risk: Annotated[float, Field(ge=0, le=1)]
    revenue_at_risk: Annotated[float, Field(ge=0)]
    reasons: list[str]
    recommended_action: str
    complaint_id: str | None = None
    control: bool | None = Field(None, description="churn_risk only: true when the alert is in the control "
                                 "group (CXPULSE_CHURN_CONTROL_SHARE): no action is recommended, to measure uplift")
    withheld_action: str | None = Field(None, description="control alerts: the playbook action that was withheld")


DeadLetterReason = Literal[
    "invalid_json",              # not JSON, or not an object
    "invalid_record",            # JSON that breaks the input schema
    "wrong_topic",               # a record of another type than its topic carries
    "wrong_key",                 # Kafka key missing (null), empty or not the customer_id
    "too_late",                  # older than the lateness bound behind the customer's latest event
    "too_large",                 # over MAX_RECORD_BYTES
    "processing_error",          # valid, but applying or emitting it failed (a bug or a data limit)
    "unknown_alert",             # an action on cx.actions for an alert/case that does not exist
    "case_closed",               # an action on a case that is already closed
    "implausible_time",          # a timestamp outside the plausible window (floor .. received_at + skew)
    "personal_data",             # an id shaped like an e-mail address or a phone number
    "invalid_id",                # an id outside the id pattern (whitespace, control/bidi, non-ASCII, ...)
    "unsupported_currency",      # an ISO 4217 currency other than the business currency
    "too_many_open_complaints",  # a customer already has MAX_OPEN_COMPLAINTS open complaints
    "unstorable",                # ClickHouse refused the row as data (not transport): kept here
]


class DeadLetter(BaseModel):
    """A record that could not be parsed, validated or applied, with why and where from."""
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    reason: DeadLetterReason
    error: str
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    original_b64: str
    received_at: AwareDatetime
