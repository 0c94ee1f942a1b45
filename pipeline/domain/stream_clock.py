"""The worker's notion of "now" for time-driven rules (SLA deadlines, silence).

Stream time is the latest event time applied, and it advances with the wall clock while
no newer events arrive: now = max_event_time + (wall − wall time when it was seen),
never ahead of the wall clock. Live, that is the wall clock; in a backfill of history it
follows the replayed time, so a complaint is not declared breached before the events
that answered it have been read. An event stamped in the future (a producer's clock
running fast) cannot move it past the wall clock.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamClock:
    max_event_time: float | None = None
    seen_at: float = 0.0

    def observe(self, event_time: float, wall: float) -> None:
        event_time = min(event_time, wall)
        if self.max_event_time is None or event_time > self.max_event_time:
            self.max_event_time, self.seen_at = event_time, wall

    def now(self, wall: float) -> float:
        if self.max_event_time is None:
            return wall
        return min(wall, self.max_event_time + max(0.0, wall - self.seen_at))
