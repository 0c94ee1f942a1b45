"""Input records: touchpoints, orders and complaints (DESIGN.md section 2).

Validation is strict where the contract is: unknown enum values, timestamps without
an offset, unknown fields (which could carry personal data) and wrong types are errors.
Amounts are decimals given as a JSON string or number.
"""
from __future__ import annotations

import re
from decimal import Decimal
from enum import Enum
from typing import Annotated, Literal, Union

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

# RFC 3339 date-time with an offset (a space for "T" is tolerated, as RFC 3339 allows).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(v: object) -> object:
    # pydantic alone would also read numbers, and numeric strings, as Unix times.
    if not isinstance(v, str) or not RFC3339.match(v):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-03-02T09:00:00+01:00")
    return v


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
SchemaVersion = Annotated[int, Field(strict=True, ge=1, le=1, description="1 (this build reads version 1)")]

Id = Annotated[str, Field(min_length=1, max_length=128)]
Rating = Annotated[int, Field(ge=1, le=5, strict=True)]


class Channel(str, Enum):
    store = "store"
    web = "web"
    app = "app"
    mini_program = "mini_program"
    call_center = "call_center"
    chat = "chat"
    social = "social"
    bot = "bot"
    email = "email"
    account_manager = "account_manager"
    partner = "partner"
    other = "other"


class Stage(str, Enum):
    awareness = "awareness"
    consideration = "consideration"
    purchase = "purchase"
    usage = "usage"
    loyalty = "loyalty"


class TouchpointKind(str, Enum):
    visit = "visit"
    browse = "browse"
    inquiry = "inquiry"
    support = "support"
    service_delivery = "service_delivery"
    survey = "survey"
    referral = "referral"
    renewal = "renewal"
    other = "other"


class OrderStatus(str, Enum):
    placed = "placed"
    paid = "paid"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"
    refunded = "refunded"
    returned = "returned"


class ComplaintStatus(str, Enum):
    opened = "opened"
    acknowledged = "acknowledged"
    escalated = "escalated"
    resolved = "resolved"
    reopened = "reopened"
    closed = "closed"


class Dimension(str, Enum):
    tangibles = "tangibles"
    reliability = "reliability"
    responsiveness = "responsiveness"
    assurance = "assurance"
    empathy = "empathy"


class ComplaintCategory(str, Enum):
    tangibles = "tangibles"
    reliability = "reliability"
    responsiveness = "responsiveness"
    assurance = "assurance"
    empathy = "empathy"
    other = "other"


class Severity(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Ratings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tangibles: Rating | None = None
    reliability: Rating | None = None
    responsiveness: Rating | None = None
    assurance: Rating | None = None
    empathy: Rating | None = None


NonNegDecimal = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4, allow_inf_nan=False)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=128)
    event_id: Id
    customer_id: Id
    occurred_at: Timestamp
    channel: Channel
    schema_version: SchemaVersion


class Touchpoint(_EventBase):
    type: Literal["touchpoint"]
    stage: Stage
    kind: TouchpointKind
    staff_id: Id | None = None
    wait_seconds: Annotated[float, Field(ge=0, le=31_536_000, allow_inf_nan=False)] | None = None
    handle_seconds: Annotated[float, Field(ge=0, le=31_536_000, allow_inf_nan=False)] | None = None
    resolved: Annotated[bool, Field(strict=True)] | None = None
    handoffs: Annotated[int, Field(ge=0, le=1000, strict=True)] | None = None
    ratings: Ratings | None = None
    csat: Rating | None = None
    nps: Annotated[int, Field(ge=0, le=10, strict=True)] | None = None
    sentiment: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] | None = None


class Order(_EventBase):
    type: Literal["order"]
    order_id: Id
    status: OrderStatus
    amount: NonNegDecimal
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    promised_at: Timestamp | None = None
    fulfilled_at: Timestamp | None = None


class Complaint(_EventBase):
    type: Literal["complaint"]
    complaint_id: Id
    status: ComplaintStatus
    category: ComplaintCategory
    severity: Severity
    compensation: NonNegDecimal | None = None
    satisfied: Annotated[bool, Field(strict=True)] | None = None


InputEvent = Annotated[Union[Touchpoint, Order, Complaint], Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Touchpoint | Order | Complaint] = TypeAdapter(InputEvent)

def parse_event(raw: bytes | str) -> Touchpoint | Order | Complaint:
    """Parse one wire record (JSON bytes). Raises pydantic.ValidationError."""
    return EVENT_ADAPTER.validate_json(raw)
