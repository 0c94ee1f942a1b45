"""Event-time-aligned consumption of co-partitioned input partitions (pure; no Kafka here).

The three input topics are co-partitioned by customer_id, so a customer's touchpoints,
orders and complaints sit in the partitions with the same number: a *group*. A consumer
reads the topics at different speeds (orders are the biggest), so after an outage a
worker that applied records as they came would run hours ahead in event time on one topic
while the others are still behind, and the lateness bound would reject the others as
`too_late`. Like Kafka Streams (a task's partition group), this buffers the records of
each partition and releases, per group, the buffered record with the lowest event time
first:

- a record is released only when every other partition of its group has a buffered
  record (all later in event time, since the lowest goes first) or may go without one:
  an empty partition blocks its group while it is known to have records not fetched yet
  (log end beyond what was received: it is catching up), at most `fetch_wait_seconds`
  from when that lag was seen; an empty partition that looks caught up blocks the record
  until the broker *confirms* it: an end offset asked at least `idle_seconds` after the
  record was received shows nothing beyond what was received (Kafka Streams'
  `max.task.idle.ms`, with the lag checked at the broker). The log end a consumer keeps from
  its last fetch is not enough: while a backfill is produced faster than real time (days
  of event time per second) that copy is seconds, so days of event time, old, and a
  partition that only looks caught up let the others run days ahead (the demo's 15,149
  `too_late` of issue #17). A record is produced before it is received, so what another
  partition gets after the confirmation was produced at least `idle_seconds` after it
  (producer batching and latency stay below that): not earlier in event time when the
  producers send in event-time order. `unconfirmed()` names the partitions to ask about;
  a partition with no traffic then costs one end-offset request per wait, not a stall.
  No wait at all, though, for a record no later than `in_order_slack_seconds` after the
  last record the empty partition delivered: under the same premise its records still to
  come are not earlier than that one, so applying the record first reorders them by at
  most the slack, which the worker sets below the lateness bound (half of it): none of them
  can become `too_late` through it. A live stream, whose partitions all carry recent event
  times, then goes without the idle wait and the broker round trip; a backfill, days of
  event time per second, keeps them;
- a partition whose buffer runs ahead of its group's next release by more than
  `ahead_seconds` of event time, or holds `max_buffered` records, is paused (the caller
  stops fetching it) and resumed once the others have caught up (bounded memory);
- records of one partition are released in offset order (its buffer is FIFO), so the
  offset bookkeeping (pipeline/service/offset_guard.py) and the per-customer offset dedup hold.

Event time is what the caller passes in: the worker uses the payload's `occurred_at` (the
time the lateness bound is about). A record without one (an invalid record, dead-lettered
anyway) takes the time of the record before it in its partition, so it neither holds its
partition back nor jumps ahead of it. (It used to take the Kafka record timestamp: the send
time, days after the event times of a backfill, so the first such record at the head of a
partition held that partition back until the other topics of its group had run days ahead:
the demo's 15,149 `too_late` of issue #17.)

The caller keeps the books of what is applied: records only buffered here are neither
applied nor committed; on a rebalance or a seek the buffer of a partition is dropped and
its records are delivered again from the committed / next offset.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Iterable, TypeVar

TP = TypeVar("TP", bound=Hashable)
T = TypeVar("T")


@dataclass(slots=True)
class _Part(Generic[T]):
    group: Hashable
    next_offset: int | None = None        # after the last record received (or the start offset)
    end: int | None = None                # log end offset, as last seen (None: not known yet)
    empty_since: float = 0.0
    lag_since: float | None = None        # when the partition was first seen behind its log end
    confirmed_at: float | None = None     # when an end offset asked from the broker showed it caught up
    released: int | None = None           # 1 + the last offset released (handed to the caller to apply)
    paused: bool = False
    buf: deque = field(default_factory=deque)   # (offset, event time, item, received at), offset order
    last_time: float = float("-inf")      # the event time of the last record received


@dataclass
class Released(Generic[TP, T]):
    records: list = field(default_factory=list)   # (tp, offset, item) in release order
    cursor: dict = field(default_factory=dict)    # tp -> 1 + the last offset released


class EventTimeMerge(Generic[TP, T]):
    def __init__(self, group_of: Callable[[TP], Hashable], *, idle_seconds: float = 0.2,
                 fetch_wait_seconds: float = 300.0, ahead_seconds: float = 600.0, max_buffered: int = 5000,
                 in_order_slack_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.group_of = group_of
        self.idle_seconds = idle_seconds
        self.in_order_slack_seconds = in_order_slack_seconds
        self.fetch_wait_seconds = fetch_wait_seconds
        self.ahead_seconds = ahead_seconds
        self.max_buffered = max_buffered
        self.clock = clock
        self._parts: dict[TP, _Part[T]] = {}
        self._groups: dict[Hashable, list[TP]] = {}
        self._released_time: dict[Hashable, float] = {}   # group -> latest event time released
        self._held = float("-inf")                          # the latest time hold_back gave (it never goes back)
        self._rotation = 0

    # --- membership ------------------------------------------------------------------
    def start(self, tp: TP, offset: int | None = None) -> None:
        """A partition is assigned; the consumer reads it from `offset` (if known: until it
        is, the partition counts as having records not fetched yet and holds its group)."""
        part = self._parts.get(tp)
        if part is not None:
            if part.next_offset is None:
                part.next_offset = offset
            return
        group = self.group_of(tp)
        self._parts[tp] = _Part(group=group, next_offset=offset, empty_since=self.clock())
        self._groups.setdefault(group, []).append(tp)

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: their buffered records (never applied) are dropped."""
        for tp in list(tps):
            part = self._parts.pop(tp, None)
            if part is not None:
                members = self._groups[part.group]
                members.remove(tp)
                if not members:
                    del self._groups[part.group]

    def clear(self) -> None:
        self._parts.clear()
        self._groups.clear()
        self._released_time.clear()

    def knows(self, tp: TP) -> bool:
        return tp in self._parts

    def drop(self, tp: TP, offset: int) -> None:
        """The partition is read again from `offset` (a seek): forget what is buffered. Records
        released already are not expected again: a seek behind them (to the caller's last
        applied offset while they are still being applied) re-reads them as redeliveries,
        never as records to apply a second time (the demo's repeated dead letters)."""
        part = self._parts.get(tp)
        if part is not None:
            part.buf.clear()
            part.next_offset = offset if part.released is None else max(offset, part.released)
            part.empty_since = self.clock()
            part.confirmed_at = None
            part.last_time = float("-inf")

    # --- input -----------------------------------------------------------------------
    def expected(self, tp: TP) -> int | None:
        """The offset the next delivered record of `tp` should have: the one after the last
        received (those before it are here or released, maybe not applied yet); None when
        this partition is not known here."""
        part = self._parts.get(tp)
        return None if part is None else part.next_offset

    def add(self, tp: TP, offset: int, event_time: float | None, item: T) -> None:
        """A record received; `event_time` None: it has none (it goes with the one before it)."""
        part = self._parts.get(tp)
        if part is None:
            self.start(tp, offset)
            part = self._parts[tp]
        if event_time is None:
            event_time = part.last_time
        part.last_time = event_time
        part.buf.append((offset, event_time, item, self.clock()))
        part.next_offset = offset + 1

    def observe_end(self, tp: TP, end: int | None, asked_at: float | None = None) -> None:
        """The partition's log end offset (high watermark). `asked_at`: the end is the
        broker's answer to a request sent at that time (this merge's clock), which can
        confirm that the partition is caught up; without it, it is the copy the consumer
        kept from a fetch (maybe old: it can only show a lag)."""
        part = self._parts.get(tp)
        if part is None or end is None:
            return
        part.end = end if part.end is None else max(part.end, end)   # a log end never moves back
        if self._lagging(part):
            if part.lag_since is None:
                part.lag_since = self.clock()
        else:
            part.lag_since = None
            if asked_at is not None:
                part.confirmed_at = asked_at if part.confirmed_at is None else max(part.confirmed_at, asked_at)

    def unconfirmed(self) -> set:
        """Empty partitions, caught up as far as is known, that hold back a record received at
        least `idle_seconds` ago without a confirmation asked after that: ask the broker for
        their end offsets (sending the request at `clock()`) and pass them to `observe_end`."""
        now = self.clock()
        out = set()
        for members in self._groups.values():
            parts = [self._parts[tp] for tp in members]
            heads = [p.buf[0] for p in parts if p.buf]
            if not heads:
                continue
            head = min(heads, key=lambda h: h[1])
            if now < head[3] + self.idle_seconds:
                continue
            for tp, part in zip(members, parts):
                if not part.buf and not self._lagging(part) and self._blocks(part, now, head):
                    out.add(tp)
        return out

    # --- output ----------------------------------------------------------------------
    def release(self, limit: int) -> Released[TP, T]:
        """Up to `limit` records that may be applied now, lowest event time first per group."""
        now = self.clock()
        out: Released[TP, T] = Released()
        groups = list(self._groups.values())
        if not groups:
            return out
        self._rotation = (self._rotation + 1) % len(groups)
        for members in groups[self._rotation:] + groups[:self._rotation]:
            parts = [self._parts[tp] for tp in members]
            while len(out.records) < limit:
                best = None
                for tp, part in zip(members, parts):
                    if part.buf and (best is None or part.buf[0][1] < best[1].buf[0][1]):
                        best = (tp, part)
                if best is None or any(self._blocks(part, now, best[1].buf[0]) for part in parts if not part.buf):
                    break
                tp, part = best
                offset, t, item, _ = part.buf.popleft()
                if not part.buf:
                    part.empty_since = now
                out.records.append((tp, offset, item))
                out.cursor[tp] = part.released = offset + 1
                self._released_time[part.group] = max(self._released_time.get(part.group, t), t)
            if len(out.records) >= limit:
                break
        return out

    def flow(self) -> tuple[set, set]:
        """(partitions paused now, partitions resumed since the last call). The caller pauses
        all of the first set every time (the consumer may have resumed one on its own)."""
        pause, resume = set(), set()
        for members in self._groups.values():
            parts = [self._parts[tp] for tp in members]
            heads = [p.buf[0][1] for p in parts if p.buf]
            low = min(heads) if heads else None
            for tp, part in zip(members, parts):
                n = len(part.buf)
                span = part.buf[-1][1] - low if n and low is not None else 0.0
                if not part.paused and (n >= self.max_buffered or span > self.ahead_seconds):
                    part.paused = True
                elif part.paused and n < self.max_buffered // 2 + 1 and span <= self.ahead_seconds / 2:
                    part.paused = False
                    resume.add(tp)
                if part.paused:
                    pause.add(tp)
        return pause, resume

    def hold_back(self, now: float) -> float:
        """The time the timer rules may evaluate customers at: `now`, but not beyond what a
        partition group still catching up (records buffered, or known not fetched yet) has
        applied. While a backfill is read, groups progress at their own pace; a sweep at the
        fastest one's time would judge the customers of a slower group days after their last
        applied event (silence, deadlines): alerts that fire and resolve as their events
        arrive. -inf while such a group has applied nothing yet. Never earlier than a time it
        gave before (`now` is monotonic): a live group whose next record waits a moment for
        alignment must not take the sweep back to its previous record (a warning seen at the
        later time would resolve as if answered)."""
        behind = [self._released_time.get(g, float("-inf")) for g, members in self._groups.items()
                  if any(self._parts[tp].buf or self._lagging(self._parts[tp]) for tp in members)]
        self._held = max(self._held, min([now, *behind]))
        return self._held

    def resume_all(self) -> set:
        """Partitions this merge paused (to resume them, e.g. before a rebalance)."""
        paused = {tp for tp, p in self._parts.items() if p.paused}
        for tp in paused:
            self._parts[tp].paused = False
        return paused

    def held(self) -> set:
        """Partitions with records buffered or paused here (not stalled: waiting on purpose)."""
        return {tp for tp, p in self._parts.items() if p.buf or p.paused}

    def caught_up(self, tp: TP) -> bool:
        """Nothing of `tp` is buffered here and the consumer has read it to its log end."""
        part = self._parts.get(tp)
        return part is not None and not part.buf and not self._lagging(part)

    def confirmed_at(self, tp: TP) -> float | None:
        """When (this merge's clock) the latest end offset asked from the broker that showed `tp`
        caught up was asked (`observe_end` with `asked_at`); None: never."""
        part = self._parts.get(tp)
        return None if part is None else part.confirmed_at

    def buffered(self) -> int:
        return sum(len(p.buf) for p in self._parts.values())

    # --- rules -----------------------------------------------------------------------
    @staticmethod
    def _lagging(part: _Part) -> bool:
        return part.end is None or part.next_offset is None or part.end > part.next_offset

    def _confirmed(self, part: _Part, received: float) -> bool:
        """Whether the broker confirmed the partition caught up `idle_seconds` or more after a
        record was received at `received`."""
        return part.confirmed_at is not None and part.confirmed_at >= received + self.idle_seconds

    def _in_order(self, part: _Part, event_time: float) -> bool:
        """Whether a record of `event_time` is at most `in_order_slack_seconds` after the last
        record `part` delivered (its records still to come are not earlier than that one)."""
        return event_time <= part.last_time + self.in_order_slack_seconds

    def _blocks(self, part: _Part, now: float, head: tuple) -> bool:
        """Whether an empty partition holds back its group's next record (`head`: offset, event
        time, item, received at) now."""
        if self._lagging(part):
            since = max(part.empty_since, part.lag_since if part.lag_since is not None else part.empty_since)
            return now - since < self.fetch_wait_seconds
        return not self._in_order(part, head[1]) and not self._confirmed(part, head[3])
