"""The business calendar of the settings: weekdays, hours and the public holidays of the
configured country/subdivision (the `holidays` package) plus extra dates, resolved once
into a `BusinessCalendar` value for the core.

Holidays are expanded for HOLIDAY_YEARS (a fixed span, so a replay of old data and the
live worker use the same dates); the core never calls the `holidays` package itself.
"""
from __future__ import annotations

from datetime import date

import holidays

from pipeline.config import Settings
from pipeline.domain.business_calendar import BusinessCalendar, parse_dates, parse_working_days

HOLIDAY_YEARS = range(2000, 2061)


def public_holidays(country: str, subdivision: str = "", years: range = HOLIDAY_YEARS) -> frozenset[date]:
    """The public holidays of `country` (and `subdivision`) over `years`; a clear error
    names the supported codes when one is unknown."""
    if not country:
        return frozenset()
    supported = holidays.list_supported_countries()
    code = country.upper()
    if code not in supported:
        raise ValueError(f"unknown holiday country {country!r}: use an ISO 3166 code the `holidays` package "
                         f"supports (e.g. DE, FR, GB, US)")
    subdivisions = supported[code]
    if subdivision and subdivision not in subdivisions and subdivision.upper() not in subdivisions:
        raise ValueError(f"unknown subdivision {subdivision!r} of {code}: one of {', '.join(subdivisions)}")
    sub = subdivision if subdivision in subdivisions else (subdivision.upper() or None)
    return frozenset(holidays.country_holidays(code, subdiv=sub, years=years).keys())


def calendar_from_settings(settings: Settings) -> BusinessCalendar:
    return BusinessCalendar(
        tz=settings.timezone,
        cutoff_hour=settings.cutoff_hour,
        open_hour=settings.open_hour,
        working_days=parse_working_days(settings.working_days),
        holidays=public_holidays(settings.holiday_country, settings.holiday_subdivision)
        | parse_dates(settings.extra_holidays),
    )
