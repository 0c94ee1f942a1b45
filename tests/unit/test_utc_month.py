import calendar
import random
import time

import pytest

from pipeline.domain.utc_month import month_key, month_of, month_of_key, month_span, next_month


def _by_gmtime(t: float) -> tuple[int, float, float]:
    tm = time.gmtime(t)
    y, m = tm.tm_year, tm.tm_mon
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return y * 12 + m - 1, float(calendar.timegm((y, m, 1, 0, 0, 0))), float(calendar.timegm((ny, nm, 1, 0, 0, 0)))


def test_the_month_of_every_instant_is_gmtime_s_also_when_the_last_span_is_reused():
    rng = random.Random(5)
    starts = [float(calendar.timegm((y, m, 1, 0, 0, 0))) for y in (1999, 2024, 2025, 2026) for m in range(1, 13)]
    instants = [s + d for s in starts for d in (-1e-6, -0.5, 0.0, 1e-6, 0.999999, 86400.0 * 3.3)]
    instants += [rng.uniform(0, 2.2e9) for _ in range(2000)]
    for order in (sorted(instants), instants, rng.sample(instants, len(instants))):
        for t in order:   # sorted: the cached span answers runs of one month; shuffled: it misses
            assert month_span(t) == _by_gmtime(t), t
            assert month_of(t) == _by_gmtime(t)[0]
            assert next_month(t) == _by_gmtime(t)[2]
            tm = time.gmtime(t)
            assert month_key(t) == f"{tm.tm_year:04d}-{tm.tm_mon:02d}"
            assert month_of_key(month_key(t)) == month_of(t)


def test_an_instant_gmtime_refuses_is_refused_whatever_was_asked_before():
    month_span(1.8e9)
    with pytest.raises(ValueError):
        month_span(float("nan"))
