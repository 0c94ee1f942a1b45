"""Wire contracts: strict validation, and exported JSON Schema files kept in sync."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.events import parse_event
from schemas.export import JSON_DIR, render
from tests.factories import complaint, order, raw, touchpoint


def test_json_schema_files_are_current():
    stale = [name for name, text in render().items()
             if not (JSON_DIR / name).exists() or (JSON_DIR / name).read_text() != text]
    assert not stale, f"run `make schemas` to refresh {stale}"


def test_valid_records_of_each_type_parse():
    assert parse_event(raw(touchpoint(ratings={"empathy": 5}, csat=4, nps=9))).type == "touchpoint"
    assert str(parse_event(raw(order(amount=12.5))).amount) == "12.5"
    assert parse_event(raw(complaint(compensation="10.00", satisfied=True))).type == "complaint"


@pytest.mark.parametrize("bad", [
    touchpoint(channel="telegram"),                                 # unknown enum value
    touchpoint(when="2026-03-02T09:00:00"),                         # no offset
    dict(touchpoint(), occurred_at=1767600000),                     # a number, not RFC 3339
    dict(touchpoint(), occurred_at="1767600000"),                   # Unix time in a string
    dict(touchpoint(), occurred_at="2026-03-02"),                   # a date only
    order(promised_at="2026-03-02T09:00:00"),                       # promise without an offset
    dict(touchpoint(), schema_version=True),
    dict(touchpoint(), schema_version=1.0),
    touchpoint(ratings={"reliability": 6}),
    touchpoint(nps=11),
    touchpoint(email="someone@example.com"),                        # unknown field (personal data)
    order(amount="-1"),
    order(currency="euro"),
    complaint(severity="urgent"),
    dict(touchpoint(), schema_version=2),
    dict(touchpoint(), type="visit"),
    {k: v for k, v in touchpoint().items() if k != "customer_id"},
    dict(touchpoint(), customer_id="x" * 129),
    dict(touchpoint(), resolved="yes"),
])
def test_invalid_records_are_rejected(bad):
    with pytest.raises(ValidationError):
        parse_event(raw(bad))
