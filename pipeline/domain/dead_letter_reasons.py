"""The dead-letter reasons: the one list of why a record can be rejected (the `reason` of a
`cx.deadletter` record, the `reason` label of `cxpulse_events_deadlettered_total`).

schemas/outputs.py (the wire contract and its JSON Schema), pipeline/metrics.py and the
tests take the list from here; README's contract section explains each one.
"""
from __future__ import annotations

from enum import Enum


class DeadLetterReason(str, Enum):
    invalid_json = "invalid_json"                 # not JSON, or not an object
    invalid_record = "invalid_record"             # JSON that breaks the input schema
    wrong_topic = "wrong_topic"                   # a record of another type than its topic carries
    wrong_key = "wrong_key"                       # Kafka key missing (null), empty or not the customer_id
    too_late = "too_late"                         # older than the lateness bound behind the customer's latest event
    too_large = "too_large"                       # over MAX_RECORD_BYTES
    processing_error = "processing_error"         # valid, but applying or emitting it failed (a bug or a data limit)
    implausible_time = "implausible_time"         # a timestamp outside the plausible window (floor .. clock + skew)
    personal_data = "personal_data"               # an id shaped like an e-mail address or a phone number
    invalid_id = "invalid_id"                     # an id outside the id pattern (whitespace, control/bidi, non-ASCII, ...)
    unsupported_currency = "unsupported_currency"  # an ISO 4217 currency other than the business currency
    too_many_open_complaints = "too_many_open_complaints"  # a customer already has MAX_OPEN_COMPLAINTS open
    unstorable = "unstorable"                     # ClickHouse refused the row as data (not transport): kept here


REASONS: tuple[str, ...] = tuple(r.value for r in DeadLetterReason)
