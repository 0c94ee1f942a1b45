"""The plausible window for event timestamps (`occurred_at`, `promised_at`, `fulfilled_at`).

A timestamp is plausible when it is not before the floor (`CXPULSE_TIME_FLOOR`, default
2000-01-01: no customer-experience record of this system predates it) and not after the
ceiling. The ceiling is the *processing clock* plus a skew (`CXPULSE_CLOCK_SKEW_SECONDS`,
default 15 minutes): NTP-synced producers are within a second, 15 minutes still admits a
device or batch producer whose clock is somewhat off, and it stays far below the default
1-hour lateness bound, so one event from a fast clock can move a customer's watermark by
at most 15 minutes and never makes the customer's correct events `too_late`. For
`promised_at` the ceiling is the clock plus `CXPULSE_PROMISE_HORIZON_DAYS` (a promise is
naturally a future date). Whatever the clock, no timestamp may reach 2106 (ClickHouse's
DateTime ends there; its TTL expressions wrap after it).

The processing clock is a value given to the core (it never reads the wall clock): the
`received_at` of `Core.process` / `Core.decode`, the same time stamped on dead letters.
The worker gives the wall clock of the batch; `cxpulse replay` gives `--now` (default:
`--as-of`, else the wall clock). Built from the settings by pipeline/bootstrap.py. Outside the window a record is
dead-lettered `implausible_time` before it touches any state: no exception, no watermark
moved.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

TIME_CEILING_HARD = datetime(2106, 1, 1, tzinfo=timezone.utc)   # ClickHouse DateTime ends here
HARD_CEILING = TIME_CEILING_HARD.timestamp()
DEFAULT_FLOOR = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class PlausibleWindow:
    floor: float = DEFAULT_FLOOR
    skew_seconds: float = 900.0
    promise_horizon_seconds: float = 731 * 86400.0

    def ceiling(self, clock: float | None, *, promise: bool = False) -> float:
        """Latest plausible time at processing clock `clock` (None: only the hard limit)."""
        if clock is None:
            return HARD_CEILING
        ahead = self.promise_horizon_seconds if promise else self.skew_seconds
        return min(clock + ahead, HARD_CEILING)

    def problem(self, fields: dict[str, datetime | None], clock: float | None) -> str | None:
        """Why one of the record's timestamps is implausible (the first found), or None."""
        for name, value in fields.items():
            if value is None:
                continue
            t = value.timestamp()   # exact for any aware datetime (no conversion to UTC, no overflow)
            if t < self.floor:
                return f"{name} {value.isoformat()} is before the plausible window's floor {_iso(self.floor)}"
            ceiling = self.ceiling(clock, promise=name == "promised_at")
            if t > ceiling:
                what = ("2106 (ClickHouse's DateTime range)" if ceiling >= HARD_CEILING else
                        f"{_iso(ceiling)} (processing clock {_iso(clock)} + "
                        f"{'promise horizon' if name == 'promised_at' else 'allowed clock skew'})")
                return f"{name} {value.isoformat()} is after the plausible window's end {what}"
        return None


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0.0, timezone.utc).isoformat().replace("+00:00", "Z")
