"""The UTC calendar month of an instant: its index (year × 12 + month − 1), its span, and
its key ("YYYY-MM", how a state's revenue is bucketed).

The hot path asks for the month of nearly the same instant over and over (a customer's
trailing-12-month revenue, the next month's start as a sweep deadline), so the span last
computed is kept and an instant inside it is answered without `time.gmtime`. The answers
are those of `time.gmtime` for every instant: a month's span runs from its first second
to the next month's first second, and gmtime reads an instant by its whole second.
"""
from __future__ import annotations

import calendar
import time
from functools import lru_cache

_last: tuple[float, float, int] = (0.0, 0.0, 0)   # start, end, index of the month last computed (empty at first)


def month_span(t: float) -> tuple[int, float, float]:
    """(index, first instant, first instant of the next month) of the UTC month of `t`."""
    global _last
    start, end, index = _last
    if start <= t < end:
        return index, start, end
    tm = time.gmtime(t)   # raises for what it raised before (NaN, out of range)
    year, month = tm.tm_year, tm.tm_mon
    index = year * 12 + month - 1
    start = float(calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)))
    end = float(calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0, 0, 0, 0)))
    _last = (start, end, index)
    return index, start, end


def month_of(t: float) -> int:
    """The month index of `t`: year × 12 + month − 1."""
    return month_span(t)[0]


def next_month(t: float) -> float:
    """The first instant of the UTC calendar month after `t`."""
    return month_span(t)[2]


def month_key(t: float) -> str:
    """The "YYYY-MM" key of the month of `t` (a state's revenue bucket)."""
    index = month_of(t)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@lru_cache(maxsize=4096)
def month_of_key(key: str) -> int:
    """The month index of a "YYYY-MM" key."""
    return int(key[:4]) * 12 + int(key[5:7]) - 1
