"""Which delivered input records the worker may apply, and which offsets it may commit.

Faust 0.15.3 decides commits from acks, and acks records it never handed to the agent:
`Stream._py_aiter` skips a message that arrives while flow control is suspended (a
rebalance) or that was fetched under an older consumer generation, and acks it ("we want
to ack the filtered message, otherwise the lag would increase"); `take_events` acks a
batch in a `finally`, also when the agent was cancelled mid-batch; `Consumer._new_offset`
commits past a single missing offset (it only refuses a gap of two or more after the
committed offset); and out-of-order acks leave gaps that freeze a partition's commits.
So the worker disables Faust's acks on its input topics (`acks=False`: Faust then never
commits them) and keeps its own books here, per input partition:

- `next[tp]`: the next offset to apply = 1 + the last offset whose batch was fully
  emitted (outputs on the broker, rows in ClickHouse, state stored). It starts at the
  offset the consumer was positioned at on assignment (the committed offset).
- A delivered record is applied only if it is the next one (`offset == next`); records
  below it were applied already (a re-read after a seek) and are dropped; a record
  above it means records were skipped on the way (the Faust skip above, or a fetch from
  the wrong position): it is dropped too, and the partition is sought back to `next`, so
  the skipped records are read again. Nothing is ever applied out of order, which is
  what the per-customer offset dedup in the state relies on.
- The offset committed for `tp` is `next[tp]`, only ever after the batch's states and
  outputs are flushed to the broker (the caller flushes the producer first).

A partition can also stop delivering with nothing beyond the skipped records to show it
(the skip hit the last records produced so far, or a fetch position moved past them):
`stalled()` names partitions whose log end is beyond `next` but that made no progress for
a while, and the caller seeks them back to `next` as well (the stall watchdog).

A partition with a real hole in its log (transaction markers, compaction) would never
deliver `next`: after `max_seeks` seeks that brought no record at `next`, the caller
asks the broker for the first offset at or after `next` (`accept_gap`) and moves on.
Pure bookkeeping, no Kafka here: the Faust glue is in agents/app.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Iterable, Mapping, TypeVar

TP = TypeVar("TP", bound=Hashable)
T = TypeVar("T")


@dataclass
class Selection(Generic[TP, T]):
    accepted: list[T] = field(default_factory=list)      # records to apply, in delivery order
    cursor: dict = field(default_factory=dict)           # tp -> next offset once `accepted` is emitted
    redelivered: int = 0                                 # dropped: already applied
    ahead: dict = field(default_factory=dict)            # tp -> lowest offset seen above `next` (dropped)


@dataclass
class _Seek:
    offset: int
    at: float
    attempts: int = 1


class OffsetGuard(Generic[TP]):
    def __init__(self, retry_seconds: float = 2.0, max_seeks: int = 3,
                 clock: Callable[[], float] = time.monotonic):
        self.next: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}
        self.retry_seconds = retry_seconds
        self.max_seeks = max_seeks
        self.clock = clock
        self._seeks: dict[TP, _Seek] = {}
        self._progress_at: dict[TP, float] = {}
        self.seeks_total = 0
        self.dropped_ahead = 0
        self.dropped_redelivered = 0

    # --- assignment ------------------------------------------------------------------
    def knows(self, tp: TP) -> bool:
        return tp in self.next

    def start(self, tp: TP, offset: int) -> None:
        """Partition (re)assigned; the consumer reads it from `offset` (the committed one)."""
        self.next[tp] = offset
        self.committed[tp] = offset
        self._seeks.pop(tp, None)
        self._progress_at[tp] = self.clock()

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: whoever gets them next starts from the committed offset."""
        for tp in tps:
            self.next.pop(tp, None)
            self.committed.pop(tp, None)
            self._seeks.pop(tp, None)
            self._progress_at.pop(tp, None)

    # --- a delivered micro-batch -----------------------------------------------------
    def select(self, records: Iterable[tuple[TP, int, T]],
               expect: Callable[[TP], int | None] | None = None) -> Selection[TP, T]:
        """Keep the records that continue each partition exactly where it stands: at `next`,
        or at `expect(tp)` when the records before that were received but are not applied
        yet (buffered for event-time alignment; `next` moves when they are)."""
        out: Selection[TP, T] = Selection()
        cursor = out.cursor
        for tp, offset, item in records:
            pos = cursor.get(tp)
            if pos is None:
                pos = expect(tp) if expect is not None else None
                if pos is None:
                    pos = self.next.get(tp)
            if pos is None:
                continue            # not (or no longer) ours: the caller starts assigned partitions first
            if offset == pos:
                out.accepted.append(item)
                cursor[tp] = offset + 1
            elif offset < pos:
                out.redelivered += 1
            else:
                out.ahead[tp] = min(offset, out.ahead.get(tp, offset))
        self.dropped_redelivered += out.redelivered
        return out

    def advance(self, cursor: dict) -> None:
        """The batch selected with this cursor is emitted: its offsets are done."""
        for tp, pos in cursor.items():
            if tp in self.next and pos > self.next[tp]:
                self.next[tp] = pos
                self._progress_at[tp] = self.clock()
                seek = self._seeks.get(tp)
                if seek is not None and pos > seek.offset:
                    del self._seeks[tp]       # the skipped records came back

    def seeks_due(self, ahead: dict) -> tuple[dict, list]:
        """For partitions that delivered records beyond `next`: ({tp: offset} to seek back
        to now, [tp] whose hole persisted through `max_seeks` seeks: check the log)."""
        now = self.clock()
        seek_now, check = {}, []
        for tp, first in ahead.items():
            pos = self.next.get(tp)
            if pos is None or first <= pos:
                continue
            self.dropped_ahead += 1
            seek = self._seeks.get(tp)
            if seek is None or seek.offset != pos:
                self._seeks[tp] = _Seek(pos, now)
                seek_now[tp] = pos
            elif now - seek.at >= self.retry_seconds:
                if seek.attempts >= self.max_seeks:
                    check.append(tp)
                else:
                    seek.attempts += 1
                    seek.at = now
                    seek_now[tp] = pos
        self.seeks_total += len(seek_now)
        return seek_now, check

    def stalled(self, log_ends: Mapping[TP, int], stall_seconds: float) -> dict[TP, int]:
        """{tp: next} for partitions whose log ends beyond `next` but that applied nothing
        for `stall_seconds` (nor were sought back within that time): seek them to `next`.
        A partition seen caught up (log end at `next`) has nothing to apply: that counts as
        progress, so a partition idle for a while is not taken for stalled by the first
        record produced to it after the quiet (it used to be sought back at once, dropping
        what had been fetched: `make bench`'s paced and memory phases, 2 and 12 seeks)."""
        now = self.clock()
        out = {}
        for tp, end in log_ends.items():
            pos = self.next.get(tp)
            if pos is None or end is None:
                continue
            if end <= pos:
                self._progress_at[tp] = now
                continue
            seek = self._seeks.get(tp)
            last = max(self._progress_at.get(tp, now), seek.at if seek else float("-inf"))
            if now - last >= stall_seconds:
                out[tp] = pos
                self._progress_at[tp] = now     # at most one seek per stall_seconds
        self.seeks_total += len(out)
        return out

    def accept_gap(self, tp: TP, first_offset: int | None) -> bool:
        """The log has no record between `next` and `first_offset` (the first offset at or
        after `next`, as the broker says): continue there. False if there is one after all."""
        pos = self.next.get(tp)
        self._seeks.pop(tp, None)
        if pos is None or first_offset is None or first_offset <= pos:
            return False
        self.next[tp] = first_offset
        return True

    # --- commits ---------------------------------------------------------------------
    def to_commit(self) -> dict:
        """Offsets to commit: partitions whose `next` moved since their last commit."""
        return {tp: pos for tp, pos in self.next.items() if pos > self.committed.get(tp, -1)}

    def committed_at(self, offsets: dict) -> None:
        for tp, pos in offsets.items():
            if tp in self.next:
                self.committed[tp] = max(pos, self.committed.get(tp, pos))
