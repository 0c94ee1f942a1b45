"""The business calendar: working days, business hours, holidays, the sunset rule and
business-hour targets — examples (Friday evening, Saturday, a holiday, DST) and
properties over time zones with DST changes, weekends and holidays."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.holiday_calendar import calendar_from_settings, public_holidays
from pipeline.config import load
from pipeline.domain.business_calendar import BusinessCalendar, parse_dates, parse_working_days
from pipeline.domain.sla import resolve_deadline_ts, sunset_deadline_ts

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ts(*args, tz=BERLIN) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def local(t: float, tz=BERLIN) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc).astimezone(tz)


CAL = BusinessCalendar(tz="Europe/Berlin")   # Mon–Fri, 09:00–18:00, no holidays


# --- the sunset rule: examples ------------------------------------------------------------

def test_before_the_cutoff_on_a_working_day_is_due_that_day():
    assert local(CAL.sunset_deadline(ts(2026, 3, 2, 16, 55))) == datetime(2026, 3, 2, 18, 0, tzinfo=BERLIN)


def test_after_the_cutoff_is_due_the_next_working_day():
    assert local(CAL.sunset_deadline(ts(2026, 3, 2, 18, 5))) == datetime(2026, 3, 3, 18, 0, tzinfo=BERLIN)
    # exactly at the cut-off counts as after it
    assert local(CAL.sunset_deadline(ts(2026, 3, 2, 18, 0))) == datetime(2026, 3, 3, 18, 0, tzinfo=BERLIN)


def test_friday_evening_is_due_monday_not_saturday():
    # Friday 2026-03-06 18:05 → Monday 2026-03-09 18:00 (a calendar-day rule said Saturday)
    assert local(CAL.sunset_deadline(ts(2026, 3, 6, 18, 5))) == datetime(2026, 3, 9, 18, 0, tzinfo=BERLIN)


def test_saturday_and_sunday_are_due_monday():
    assert local(CAL.sunset_deadline(ts(2026, 3, 7, 10, 0))) == datetime(2026, 3, 9, 18, 0, tzinfo=BERLIN)
    assert local(CAL.sunset_deadline(ts(2026, 3, 8, 23, 59))) == datetime(2026, 3, 9, 18, 0, tzinfo=BERLIN)


def test_a_holiday_moves_the_deadline_to_the_next_working_day():
    # German public holidays: Good Friday 2026-04-03 and Easter Monday 2026-04-06
    cal = BusinessCalendar(tz="Europe/Berlin", holidays=public_holidays("DE"))
    assert {date(2026, 4, 3), date(2026, 4, 6)} <= cal.holidays
    # Thursday evening before Easter: Friday, the weekend and Monday are off → Tuesday
    assert local(cal.sunset_deadline(ts(2026, 4, 2, 19, 0))) == datetime(2026, 4, 7, 18, 0, tzinfo=BERLIN)
    # on the holiday itself, at noon
    assert local(cal.sunset_deadline(ts(2026, 4, 6, 12, 0))) == datetime(2026, 4, 7, 18, 0, tzinfo=BERLIN)


def test_regional_holidays_and_extra_dates():
    # Epiphany (6 Jan) is a holiday in Bavaria, not in Berlin; 2026-01-06 is a Tuesday
    assert date(2026, 1, 6) in public_holidays("DE", "BY")
    assert date(2026, 1, 6) not in public_holidays("DE", "BE")
    s = load(timezone="Europe/Berlin", holiday_country="DE", holiday_subdivision="BY",
             extra_holidays="2026-12-24, 2026-12-31")
    cal = calendar_from_settings(s)
    assert local(cal.sunset_deadline(ts(2026, 1, 5, 18, 30))) == datetime(2026, 1, 7, 18, 0, tzinfo=BERLIN)
    # Thursday 24 Dec (extra), Friday 25 and Saturday 26 (public), Sunday → Monday 28 Dec
    assert local(cal.sunset_deadline(ts(2026, 12, 23, 18, 30))) == datetime(2026, 12, 28, 18, 0, tzinfo=BERLIN)


def test_across_dst_the_cutoff_stays_at_local_18_00():
    # Berlin switches to summer time on Sunday 2026-03-29: Friday 27 evening → Monday 30,
    # 18:00 CEST = 16:00 UTC (it was 17:00 UTC the week before)
    due = CAL.sunset_deadline(ts(2026, 3, 27, 19, 0))
    assert local(due) == datetime(2026, 3, 30, 18, 0, tzinfo=BERLIN)
    assert datetime.fromtimestamp(due, timezone.utc).hour == 16
    # New York falls back on Sunday 2026-11-01: Saturday → Monday 18:00 EST = 23:00 UTC
    ny = BusinessCalendar(tz="America/New_York")
    assert datetime.fromtimestamp(ny.sunset_deadline(ts(2026, 10, 31, 12, 0, tz=NEW_YORK)), timezone.utc) == \
        datetime(2026, 11, 2, 23, 0, tzinfo=timezone.utc)


def test_a_week_working_sunday_to_thursday():
    cal = BusinessCalendar(tz="Asia/Dubai", working_days=parse_working_days("sun-thu"))
    dubai = ZoneInfo("Asia/Dubai")
    # Thursday evening → Sunday
    assert local(cal.sunset_deadline(ts(2026, 3, 5, 19, 0, tz=dubai)), dubai) == datetime(2026, 3, 8, 18, 0, tzinfo=dubai)


def test_the_acknowledgement_cap_still_applies():
    opened = ts(2026, 3, 6, 18, 5)
    assert sunset_deadline_ts(opened, CAL, max_ack_seconds=3600) == opened + 3600


# --- business hours -----------------------------------------------------------------------

def test_business_hours_skip_nights_weekends_and_holidays():
    # 24 business hours from Friday 17:00: 1 h Friday, 9 h Monday, 9 h Tuesday, 5 h Wednesday
    assert local(CAL.add_business_seconds(ts(2026, 3, 6, 17, 0), 24 * 3600)) == datetime(2026, 3, 11, 14, 0, tzinfo=BERLIN)
    # from Saturday: starts Monday 09:00
    assert local(CAL.add_business_seconds(ts(2026, 3, 7, 11, 0), 3600)) == datetime(2026, 3, 9, 10, 0, tzinfo=BERLIN)
    cal = BusinessCalendar(tz="Europe/Berlin", holidays=frozenset({date(2026, 3, 9)}))
    assert local(cal.add_business_seconds(ts(2026, 3, 7, 11, 0), 3600)) == datetime(2026, 3, 10, 10, 0, tzinfo=BERLIN)


def test_resolution_targets_in_calendar_or_business_hours():
    opened = ts(2026, 3, 6, 17, 0)   # Friday 17:00, critical standard: 24 h
    assert resolve_deadline_ts(opened, "critical", "standard") == opened + 24 * 3600
    assert local(resolve_deadline_ts(opened, "critical", "standard", CAL)) == datetime(2026, 3, 11, 14, 0, tzinfo=BERLIN)
    # platinum halves it: 12 business hours = 1 h Friday, 9 h Monday, 2 h Tuesday
    assert local(resolve_deadline_ts(opened, "critical", "platinum", CAL)) == datetime(2026, 3, 10, 11, 0, tzinfo=BERLIN)


def test_share_point_counts_business_time_when_there_is_some():
    # Friday 19:00 → due Monday 18:00: 9 business hours; 75 % → Monday 15:45, not Sunday
    opened = ts(2026, 3, 6, 19, 0)
    due = CAL.sunset_deadline(opened)
    assert local(CAL.share_point(opened, due, 0.75)) == datetime(2026, 3, 9, 15, 45, tzinfo=BERLIN)
    # a one-hour cap at night holds no business time: wall-clock share
    assert CAL.share_point(opened, opened + 3600, 0.75) == opened + 2700


def test_settings_errors_are_clear():
    with pytest.raises(ValueError, match="unknown working day"):
        parse_working_days("mon-fry")
    with pytest.raises(ValueError, match="unknown holiday country"):
        public_holidays("XX")
    with pytest.raises(ValueError, match="unknown subdivision"):
        public_holidays("DE", "ZZ")
    with pytest.raises(ValueError, match="ISO date"):
        parse_dates("2026-13-01")
    with pytest.raises(ValueError, match="business hours"):
        BusinessCalendar(open_hour=18, cutoff_hour=9)
    # and in the settings, which name the variable at load time
    for bad in ({"working_days": "weekdays"}, {"extra_holidays": "24.12.2026"}, {"timezone": "Mars/Olympus"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load(**bad)
    assert parse_working_days("mon-fri") == frozenset(range(5))
    assert parse_working_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_working_days("mon,wed,sat") == frozenset({0, 2, 5})


# --- properties ---------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC", "America/Sao_Paulo"]
# instants from 2024 to 2028, which hold DST changes in every zone above that has them
instants = st.floats(min_value=datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp(),
                     max_value=datetime(2028, 1, 1, tzinfo=timezone.utc).timestamp(), allow_nan=False)


@st.composite
def calendars(draw) -> BusinessCalendar:
    tz = draw(st.sampled_from(ZONES))
    cutoff = draw(st.sampled_from([16.0, 17.5, 18.0, 20.0, 23.5]))
    opening = draw(st.sampled_from([0.0, 7.0, 9.0, 12.25]).filter(lambda h: h < cutoff))
    days = draw(st.sets(st.integers(0, 6), min_size=1))
    hol = draw(st.sets(st.dates(date(2024, 1, 1), date(2028, 2, 1)), max_size=40))
    return BusinessCalendar(tz=tz, cutoff_hour=cutoff, open_hour=opening, working_days=frozenset(days),
                            holidays=frozenset(hol))


@settings(max_examples=300, deadline=None)
@given(calendars(), instants)
def test_sunset_deadline_is_the_first_working_day_cutoff_after_arrival(cal, opened):
    due = cal.sunset_deadline(opened)
    zone = ZoneInfo(cal.tz)
    due_local = local(due, zone)
    assert due > opened
    assert cal.is_working_day(due_local.date())
    assert (due_local.hour, due_local.minute) == (int(cal.cutoff_hour), round(cal.cutoff_hour % 1 * 60))
    # no working day's cut-off lies in between
    day = local(opened, zone).date()
    while day < due_local.date():
        if cal.is_working_day(day):
            assert cal.cutoff_on(day).timestamp() <= opened
        day += timedelta(days=1)


@settings(max_examples=200, deadline=None)
@given(calendars(), instants, st.integers(min_value=0, max_value=200 * 3600))
def test_business_seconds_add_up_and_fall_in_business_hours(cal, start, seconds):
    end = cal.add_business_seconds(start, seconds)
    assert end >= start
    assert cal.business_seconds_between(start, end) == pytest.approx(seconds, abs=1e-3)
    if seconds > 0:   # the end lies within (or at the close of) business hours of a working day
        zone = ZoneInfo(cal.tz)
        end_local = local(end, zone)
        day = end_local.date()
        assert cal.is_working_day(day)
        assert cal.opening_on(day).timestamp() < end <= cal.cutoff_on(day).timestamp()


@settings(max_examples=200, deadline=None)
@given(calendars(), instants, st.floats(min_value=0.05, max_value=0.95))
def test_the_risk_point_lies_between_arrival_and_deadline(cal, opened, share):
    due = cal.sunset_deadline(opened)
    warn = cal.share_point(opened, due, share)
    assert opened <= warn <= due
    business = cal.business_seconds_between(opened, due)
    assert business > 0   # a sunset deadline always has the business hours of its own day before it
    assert cal.business_seconds_between(opened, warn) == pytest.approx(share * business, abs=1e-3)
