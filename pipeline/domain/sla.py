"""Complaint deadlines: the sunset rule, and resolution targets by severity and tier.

Sunset rule: a complaint is acknowledged and answered before the end of the business day
on which it arrived (the cut-off hour in the business time zone); one that arrives after
the cut-off is due by the next day's cut-off.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from pipeline.domain.vocabulary import TIERS

# Hours to resolve, by severity; tiers with account managers get tighter targets.
RESOLVE_HOURS = {"critical": 24.0, "high": 48.0, "medium": 72.0, "low": 120.0}
TIER_FACTOR = {"standard": 1.0, "silver": 1.0, "gold": 0.75, "platinum": 0.5}
assert set(TIER_FACTOR) == set(TIERS)


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def sunset_deadline(opened: datetime, tz: str, cutoff_hour: float) -> datetime:
    """End of the business day on which `opened` falls (local cut-off), or the next day's
    cut-off when the complaint arrived at or after the cut-off. Returned in UTC."""
    zone = _zone(tz)
    local = opened.astimezone(zone)
    hours, minutes = int(cutoff_hour), int(round((cutoff_hour - int(cutoff_hour)) * 60))
    cutoff = datetime.combine(local.date(), time(hours, minutes), tzinfo=zone)
    if local >= cutoff:
        next_day = local.date() + timedelta(days=1)
        cutoff = datetime.combine(next_day, time(hours, minutes), tzinfo=zone)
    return cutoff.astimezone(timezone.utc)


def sunset_deadline_ts(opened_ts: float, tz: str, cutoff_hour: float, max_ack_seconds: float = 0.0) -> float:
    due = sunset_deadline(datetime.fromtimestamp(opened_ts, timezone.utc), tz, cutoff_hour).timestamp()
    if max_ack_seconds > 0:
        due = min(due, opened_ts + max_ack_seconds)
    return due


def resolve_deadline_ts(opened_ts: float, severity: str, tier: str) -> float:
    return opened_ts + RESOLVE_HOURS[severity] * TIER_FACTOR[tier] * 3600.0
