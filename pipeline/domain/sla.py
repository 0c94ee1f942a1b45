"""Complaint deadlines: the sunset rule, resolution targets by severity and tier, and the
point at which a deadline is at risk. All counted on the business calendar it is given
(pipeline/domain/business_calendar.py; README.md, "Business calendar").

Sunset rule: a complaint is acknowledged and answered by the cut-off of the working day on
which it arrived; one that arrives at or after the cut-off, or on a non-working day
(weekend, holiday), is due by the next working day's cut-off.
"""
from __future__ import annotations

from pipeline.domain.business_calendar import BusinessCalendar

from pipeline.domain.vocabulary import TIERS

# Hours to resolve, by severity; tiers with account managers get tighter targets.
RESOLVE_HOURS = {"critical": 24.0, "high": 48.0, "medium": 72.0, "low": 120.0}
TIER_FACTOR = {"standard": 1.0, "silver": 1.0, "gold": 0.75, "platinum": 0.5}
assert set(TIER_FACTOR) == set(TIERS)


def sunset_deadline_ts(opened_ts: float, calendar: BusinessCalendar, max_ack_seconds: float = 0.0) -> float:
    """The sunset-rule deadline (epoch seconds), capped at `opened + max_ack_seconds` when set."""
    due = calendar.sunset_deadline(opened_ts)
    if max_ack_seconds > 0:
        due = min(due, opened_ts + max_ack_seconds)
    return due


def resolve_hours(severity: str, tier: str) -> float:
    return RESOLVE_HOURS[severity] * TIER_FACTOR[tier]


def resolve_deadline_ts(opened_ts: float, severity: str, tier: str,
                        calendar: BusinessCalendar | None = None) -> float:
    """The resolution target: the hours of RESOLVE_HOURS × TIER_FACTOR after the opening,
    counted in business hours of `calendar` when one is given, in calendar hours otherwise."""
    seconds = resolve_hours(severity, tier) * 3600.0
    if calendar is None:
        return opened_ts + seconds
    return calendar.add_business_seconds(opened_ts, seconds)


def at_risk_from(opened_ts: float, due_ts: float, share: float, calendar: BusinessCalendar) -> float | None:
    """When a deadline is at risk: `share` of the time from opening to the deadline has
    passed (on the business clock when that stretch holds business hours). None when
    warnings are off (share 0)."""
    if share <= 0:
        return None
    return calendar.share_point(opened_ts, due_ts, share)
