"""The sunset rule and complaint deadlines."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from pipeline.domain.churn import PopulationParams
from pipeline.domain.scoring import ScoringParams, apply, profile
from pipeline.domain.business_calendar import BusinessCalendar
from pipeline.domain.sla import resolve_deadline_ts, sunset_deadline_ts
from pipeline.domain.state import CustomerState
from tests.factories import complaint, ev

BERLIN = ZoneInfo("Europe/Berlin")


def sunset_deadline(opened: datetime, tz: str, cutoff_hour: float) -> datetime:
    """The sunset deadline on the default Monday–Friday calendar of `tz`, in UTC."""
    due = sunset_deadline_ts(opened.timestamp(), BusinessCalendar(tz=tz, cutoff_hour=cutoff_hour))
    return datetime.fromtimestamp(due, timezone.utc)


def test_before_cutoff_is_due_the_same_day():
    due = sunset_deadline(datetime(2026, 3, 2, 16, 55, tzinfo=BERLIN), "Europe/Berlin", 18)
    assert due == datetime(2026, 3, 2, 18, 0, tzinfo=BERLIN)


def test_after_cutoff_is_due_the_next_day():
    due = sunset_deadline(datetime(2026, 3, 2, 18, 5, tzinfo=BERLIN), "Europe/Berlin", 18)
    assert due == datetime(2026, 3, 3, 18, 0, tzinfo=BERLIN)


def test_time_zone_is_respected():
    # 16:30 UTC is 17:30 in Berlin (before the cut-off) but 11:30 in New York
    opened = datetime(2026, 3, 2, 16, 30, tzinfo=timezone.utc)
    assert sunset_deadline(opened, "Europe/Berlin", 18) == datetime(2026, 3, 2, 17, 0, tzinfo=timezone.utc)
    assert sunset_deadline(opened, "America/New_York", 18) == datetime(2026, 3, 2, 23, 0, tzinfo=timezone.utc)
    # across a DST change: Berlin switches on Sunday 2026-03-29; a Sunday complaint is due
    # on Monday (working days Monday–Friday), 18:00 summer time = 16:00 UTC
    due = sunset_deadline(datetime(2026, 3, 29, 10, 0, tzinfo=BERLIN), "Europe/Berlin", 18)
    assert due == datetime(2026, 3, 30, 16, 0, tzinfo=timezone.utc)


def test_resolution_deadline_by_severity_and_tier():
    assert resolve_deadline_ts(0, "critical", "standard") == 24 * 3600
    assert resolve_deadline_ts(0, "critical", "platinum") == 12 * 3600
    assert resolve_deadline_ts(0, "low", "gold") == 90 * 3600


def test_breach_is_detected_by_time_alone_and_answer_in_time_is_not():
    params = ScoringParams(calendar=BusinessCalendar(tz="Europe/Berlin", cutoff_hour=18))
    s = CustomerState(customer_id="c1")
    apply(s, ev(complaint(when="2026-03-02T16:55:00+01:00")), params)
    due = datetime(2026, 3, 2, 18, 0, tzinfo=BERLIN).timestamp()
    assert profile(s, due - 60, params, PopulationParams()).sla_breaches == 0
    assert profile(s, due + 60, params, PopulationParams()).sla_breaches == 1
    s2 = CustomerState(customer_id="c2")
    apply(s2, ev(complaint(customer="c2", when="2026-03-02T16:55:00+01:00")), params)
    apply(s2, ev(complaint(customer="c2", status="acknowledged", when="2026-03-02T17:30:00+01:00")), params)
    assert profile(s2, due + 60, params, PopulationParams()).sla_breaches == 0
