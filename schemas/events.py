"""Input records: touchpoints, orders and complaints (DESIGN.md section 2).

Validation is strict where the contract is: unknown enum values, timestamps without
an offset, unknown fields (which could carry personal data) and wrong types are errors.
Numbers and integers are JSON numbers (no strings, no booleans: `"95"` and `true` are
errors). Amounts (`amount`, `compensation`) are decimals given as a JSON number or as a
JSON string in plain ASCII decimal notation (`"19.90"`; not `"1_000"`, `"1e3"` or
non-ASCII digits). Ids follow schemas/id_policy.py (no e-mail or phone shapes,
no whitespace, control, bidi or non-ASCII characters). `ratings` must rate something.
Currencies are ISO 4217 codes. Whether a timestamp is plausible (not before the floor,
not after the processing clock) depends on the clock and is checked when records are
decoded (pipeline/service/processor.py), not here.
"""
from __future__ import annotations

import re
from decimal import Decimal
from enum import Enum
from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.currencies import ISO_4217
from schemas.id_policy import ID_PATTERN, PHONE_GROUPS, id_problem

# RFC 3339 date-time with an offset (a space for "T" is tolerated, as RFC 3339 allows).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(v: object) -> object:
    # pydantic alone would also read numbers, and numeric strings, as Unix times.
    if not isinstance(v, str) or not RFC3339.match(v):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-03-02T09:00:00+01:00")
    return v


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
SchemaVersion = Annotated[int, Field(strict=True, ge=1, le=1, description="1 (this build reads version 1)")]



def _id(v: str) -> str:
    problem = id_problem(v)
    if problem is not None:   # the type names the dead-letter reason (personal_data / invalid_id)
        raise PydanticCustomError(problem[0], problem[1])
    return v


Id = Annotated[str, Field(min_length=1, max_length=128, strict=True,
                          json_schema_extra={"pattern": ID_PATTERN, "not": {"pattern": PHONE_GROUPS}}),
               AfterValidator(_id)]
Rating = Annotated[int, Field(ge=1, le=5, strict=True)]
Seconds = Annotated[float, Field(ge=0, le=31_536_000, allow_inf_nan=False, strict=True)]


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
    """At least one dimension: `{}` (or all null) is no answer and is rejected."""
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})
    tangibles: Rating | None = None
    reliability: Rating | None = None
    responsiveness: Rating | None = None
    assurance: Rating | None = None
    empathy: Rating | None = None

    @model_validator(mode="after")
    def _rates_something(self) -> "Ratings":
        if all(getattr(self, d) is None for d in type(self).model_fields):
            raise ValueError("ratings must rate at least one dimension ({} is no answer)")
        return self


DECIMAL_STRING = r"^[0-9]{1,14}(\.[0-9]{1,4})?$"
_DECIMAL_STRING = re.compile(DECIMAL_STRING)


def _json_decimal(v: object) -> object:
    # A JSON number, or a string in plain ASCII decimal notation: Decimal() alone would also
    # read "1_000", "1e3", " 3", "٣" (Arabic-Indic three) and booleans (as 0 / 1).
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise PydanticCustomError("decimal_type", "must be a JSON number or a decimal string like \"19.90\"")
    if isinstance(v, str) and not _DECIMAL_STRING.match(v):
        raise PydanticCustomError("decimal_parsing",
                                  "a decimal string must be plain ASCII digits with at most 4 decimals, e.g. \"19.90\"")
    return v


NonNegDecimal = Annotated[Decimal, BeforeValidator(_json_decimal),
                          Field(ge=0, max_digits=18, decimal_places=4, allow_inf_nan=False),
                          WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 99_999_999_999_999},
                                                    {"type": "string", "pattern": DECIMAL_STRING}],
                                          "description": "a decimal >= 0 with at most 4 decimals and 18 digits: "
                                                         "a JSON number or a string like \"19.90\""})]


def _iso_4217(v: str) -> str:
    if v not in ISO_4217:
        raise PydanticCustomError("currency", "must be an ISO 4217 currency code")
    return v


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", strict=True,
                                json_schema_extra={"enum": sorted(ISO_4217)}), AfterValidator(_iso_4217)]


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
    wait_seconds: Seconds | None = None
    handle_seconds: Seconds | None = None
    resolved: Annotated[bool, Field(strict=True)] | None = None
    handoffs: Annotated[int, Field(ge=0, le=1000, strict=True)] | None = None
    ratings: Ratings | None = None
    csat: Rating | None = None
    nps: Annotated[int, Field(ge=0, le=10, strict=True)] | None = None
    sentiment: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False, strict=True)] | None = None


class Order(_EventBase):
    type: Literal["order"]
    order_id: Id
    status: OrderStatus
    amount: NonNegDecimal
    currency: Currency
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
