"""Event-time ticks, the same in `cxpulse replay` and the worker: when the points of event
time at which the population is re-fitted and the churn model snapshots its features come,
and which records wait for them.

A tick at `t` must see states holding exactly the events up to `t`, whatever their arrival
order within the lateness bound (the core is order-invariant within it). So:

- ticks fall on multiples of `step` (daily: midnight UTC); the first is the first multiple
  after the first event time seen minus the lateness bound (`start`): whichever event of the
  first lateness bound comes first, the same tick, or an empty one before it (a tick before
  every event; the callers skip it, `before_every_event`: no re-fit, no snapshot), so the
  ticks and the schedules counted from them do not depend on arrival order;
- a tick runs once an event arrives whose time minus `lateness` has passed it (`ticks`):
  no event at or before the tick can still come within the lateness bound;
- a record later than the next tick is held back (`holds`) until that tick has run, then
  released in arrival order (`release`);
- a gap of years runs at most `max_ticks` ticks for one advance, then jumps to the last
  tick before it (a bounded number of sweeps).

`key`: the held records are looked up by key (`held_of`). The worker keys by (customer,
input topic): a customer's record applied while an earlier one of the same topic is held
records the held offsets as not applied yet (`CustomerState.applied_at`), so the
per-customer source-offset dedup takes them when they come. A record before the tick is
never held behind a later one: the tick sees exactly the events up to it, as in replay.
Replay feeds synthetic offsets and needs no key.

Pure bookkeeping: no clock, no I/O. A held record is not applied yet: the worker commits
no input offset at or past the lowest held one of a partition (`held()`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Iterable, Iterator, TypeVar

from pipeline.domain.state import CustomerState

T = TypeVar("T")

REFIT_EVERY = 7 * 86400.0   # event-time seconds between population re-fits (at ticks)
MAX_TICKS_PER_STEP = 400    # ticks run for one advance of event time at most (then the ticks jump ahead)


def before_every_event(states: Iterable[CustomerState]) -> bool:
    """Whether a tick's states hold no event yet (a tick before every event, `TickGate.start`):
    the tick re-fits nothing and snapshots nothing."""
    return not any(state.n for state in states)


@dataclass
class _Held(Generic[T]):
    ts: float
    key: Hashable | None
    item: T


@dataclass
class TickGate(Generic[T]):
    step: float                        # event-time seconds between ticks
    lateness: float                    # the lateness bound (seconds)
    max_ticks: int = MAX_TICKS_PER_STEP
    next_tick: float | None = None     # the next tick to run; None before the first event time
    _held: list[_Held[T]] = field(default_factory=list)
    _by_key: dict[Hashable, list[T]] = field(default_factory=dict)   # the held records of each key

    def start(self, ts: float) -> None:
        """The first event time seen fixes the first tick: the next multiple of `step` after
        it minus the lateness bound (the earliest event time that may still come)."""
        if self.next_tick is None:
            self.next_tick = ((ts - self.lateness) // self.step + 1) * self.step

    def resume_after(self, tick: float) -> None:
        """A restarted worker whose last tick was `tick` (its history): the next tick is the one
        after it, whatever event time comes first (records applied before the restart are not
        delivered again, so the first one seen may be days past it)."""
        self.next_tick = tick + self.step

    def ticks(self, until: float) -> Iterator[float]:
        """The ticks at or before `until`, in order; `next_tick` already points past each tick
        when it is yielded, so `release()` in the loop body frees what the tick let through."""
        ticks = 0
        while self.next_tick is not None and self.next_tick <= until:
            if ticks == self.max_ticks:   # a gap of years: jump to the last tick before `until`
                self.next_tick += (until - self.next_tick) // self.step * self.step
            tick = self.next_tick
            self.next_tick = tick + self.step
            ticks += 1
            yield tick

    def due(self, ts: float) -> bool:
        """Does an event at `ts` let a tick run?"""
        return self.next_tick is not None and self.next_tick <= ts - self.lateness

    def holds(self, ts: float | None) -> bool:
        """Must a record at `ts` (None: no readable event time) wait for the next tick?"""
        return ts is not None and self.next_tick is not None and ts > self.next_tick

    def hold(self, ts: float | None, item: T, key: Hashable | None = None) -> None:
        self._held.append(_Held(float("-inf") if ts is None else ts, key, item))
        if key is not None:
            self._by_key.setdefault(key, []).append(item)

    def held_of(self, key: Hashable) -> list[T]:
        """The held records of `key`, in arrival order."""
        return self._by_key.get(key, [])

    def release(self, upto: float | None = None) -> list[T]:
        """The held records up to `upto` (default: the next tick), in arrival order."""
        limit = self.next_tick if upto is None else upto
        out = [h.item for h in self._held if limit is None or h.ts <= limit]
        if out:
            self._keep([h for h in self._held if limit is not None and h.ts > limit])
        return out

    def release_all(self) -> list[T]:
        out = [h.item for h in self._held]
        self._keep([])
        return out

    def drop(self, keep: Callable[[T], bool]) -> int:
        """Forget held records `keep` refuses (e.g. of revoked partitions); returns how many."""
        before = len(self._held)
        self._keep([h for h in self._held if keep(h.item)])
        return before - len(self._held)

    def _keep(self, held: list[_Held[T]]) -> None:
        self._held = held
        self._by_key = {}
        for h in held:
            if h.key is not None:
                self._by_key.setdefault(h.key, []).append(h.item)

    def held(self) -> list[T]:
        return [h.item for h in self._held]

    def __len__(self) -> int:
        return len(self._held)
