"""The business calendar: working days, business hours and holidays in the business time
zone, and the deadlines counted on it (the sunset rule, business-hour targets).

A value: the shell builds it from settings (pipeline/adapters/holiday_calendar.py turns the
configured country/subdivision into dates with the `holidays` package) and hands it to the
core. Nothing here reads the clock, a file or the environment.

Rules (README.md, "Business calendar"):
- A working day is a configured weekday (default Monday–Friday) that is not a holiday.
- Business hours are [open, cut-off) in local time on working days (default 09:00–18:00).
- Sunset rule: a complaint is due by the cut-off of the working day it arrives on, or of
  the next working day when it arrives at or after the cut-off or on a non-working day.
  That is: the first working-day cut-off strictly after the arrival.
- `add_business_seconds` counts only business hours (resolution targets in business hours).

Local wall times that do not exist (a spring-forward gap) resolve as zoneinfo does with
fold=0: 02:30 on the night clocks go from 02:00 to 03:00 is 03:30 local. Cut-offs and
opening hours in such gaps are unusual; the property tests cover DST days with ordinary ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DAYS_SCANNED = 366 * 2   # a calendar with no working day within two years is refused


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _hm(hour: float) -> time:
    minutes = int(round(hour * 60))
    return time(minutes // 60, minutes % 60)


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days, business hours [open_hour, cutoff_hour) and holidays in `tz`."""
    tz: str = "UTC"
    cutoff_hour: float = 18.0
    open_hour: float = 9.0
    working_days: frozenset[int] = frozenset(range(5))   # date.weekday(): 0 = Monday
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        _zone(self.tz)   # an unknown zone fails here, not at the first complaint
        if not 0 <= self.open_hour < self.cutoff_hour < 24:
            raise ValueError(f"business hours must satisfy 0 <= open ({self.open_hour}) < cut-off "
                             f"({self.cutoff_hour}) < 24")
        if not self.working_days or not set(self.working_days) <= set(range(7)):
            raise ValueError(f"working days must be a non-empty subset of 0..6 (Monday = 0), got {sorted(self.working_days)}")

    # --- days -------------------------------------------------------------------------
    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_days and day not in self.holidays

    def _local(self, day: date, hour: float) -> datetime:
        return datetime.combine(day, _hm(hour), tzinfo=_zone(self.tz))

    def cutoff_on(self, day: date) -> datetime:
        """The cut-off instant of `day` (local wall time, aware)."""
        return self._local(day, self.cutoff_hour)

    def opening_on(self, day: date) -> datetime:
        return self._local(day, self.open_hour)

    def local_date(self, ts: float) -> date:
        return datetime.fromtimestamp(ts, timezone.utc).astimezone(_zone(self.tz)).date()

    def _working_days_from(self, day: date):
        for i in range(MAX_DAYS_SCANNED):
            d = day + timedelta(days=i)
            if self.is_working_day(d):
                yield d
        raise ValueError(f"no working day within {MAX_DAYS_SCANNED} days of {day} (holidays cover everything?)")

    # --- the sunset rule --------------------------------------------------------------
    def sunset_deadline(self, opened: float) -> float:
        """The first working-day cut-off strictly after `opened` (epoch seconds)."""
        for day in self._working_days_from(self.local_date(opened)):
            due = self.cutoff_on(day).timestamp()
            if due > opened:
                return due
        raise AssertionError("unreachable")

    # --- business hours ---------------------------------------------------------------
    def _windows_from(self, ts: float):
        """Business-hour windows (start, end) in epoch seconds, from the day of `ts` on,
        clipped to start no earlier than `ts`."""
        for day in self._working_days_from(self.local_date(ts)):
            start, end = self.opening_on(day).timestamp(), self.cutoff_on(day).timestamp()
            if end <= ts:
                continue
            yield max(start, ts), end

    def add_business_seconds(self, start: float, seconds: float) -> float:
        """The instant at which `seconds` of business time have passed since `start`."""
        if seconds <= 0:
            return start
        left = seconds
        windows = self._windows_from(start)
        while True:
            a, b = next(windows)
            if b - a >= left:
                return a + left
            left -= b - a

    def business_seconds_between(self, a: float, b: float) -> float:
        """Business time in [a, b) (0 when b <= a)."""
        if b <= a:
            return 0.0
        total = 0.0
        day = self.local_date(a) - timedelta(days=1)
        last = self.local_date(b) + timedelta(days=1)
        while day <= last:
            if self.is_working_day(day):
                start, end = self.opening_on(day).timestamp(), self.cutoff_on(day).timestamp()
                total += max(0.0, min(end, b) - max(start, a))
            day += timedelta(days=1)
        return total

    def share_point(self, start: float, due: float, share: float) -> float:
        """The instant at which `share` of the time from `start` to `due` has passed,
        counted on the business clock when that stretch holds business hours (a complaint
        of Friday evening due Monday at the cut-off is at risk on Monday afternoon, not on
        Sunday), on the wall clock otherwise (e.g. a short acknowledgement cap at night)."""
        business = self.business_seconds_between(start, due)
        if business > 0:
            return min(due, self.add_business_seconds(start, share * business))
        return start + share * (due - start)


def parse_working_days(text: str) -> frozenset[int]:
    """'mon,tue,wed,thu,fri' or ranges 'mon-fri', 'sun-thu' → weekday numbers (Monday = 0)."""
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        ends = [e.strip()[:3] for e in part.split("-")]
        if len(ends) > 2 or any(e not in WEEKDAYS for e in ends):
            raise ValueError(f"unknown working day {part!r}: use mon..sun, comma-separated, or a range like mon-fri")
        a, b = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    if not days:
        raise ValueError("no working days given")
    return frozenset(days)


def parse_dates(text: str) -> frozenset[date]:
    """'2026-12-24, 2026-12-31' → dates (extra non-working days)."""
    out = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.add(date.fromisoformat(part))
        except ValueError:
            raise ValueError(f"extra holiday {part!r} is not an ISO date (YYYY-MM-DD)") from None
    return frozenset(out)
