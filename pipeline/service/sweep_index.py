"""Which customers a time-driven sweep must look at: each customer's next check time in a
heap with lazy invalidation, so a sweep tick touches only the customers with something due
(#18 item 5). Pure: no clock, no Kafka; the shell feeds it and asks it.

Two kinds of time move a customer's outputs without any event:

- **deadlines**, known exactly from the state (`next_deadline`): a complaint's answer and
  resolution at-risk points and due times (sla_at_risk, sla_breach), a critical alert's
  escalation instant, a case's retention end (cases pruned, their escalation resolved) and
  the next calendar month (the trailing-12-month revenue, hence the tier, moves then);
- **drift**: churn risk changes continuously with silence and the decay of experiences. No
  closed form says when it moves by the publishing step (0.05) or crosses a tier threshold,
  so the index re-checks each customer `recheck` seconds after it was last evaluated
  (`SweepIndex.schedule(..., recheck)`), as the round-robin sweep it replaces re-evaluated
  each customer once per cycle (5,000 customers per 5 s tick: 100 s per cycle at 100k).

A deadline is therefore never later than the full sweep would see it (tests/unit/
test_sweep_index.py: the full sweep's deadline alerts on a generated stream fall on customers
the index holds due, and an index-driven sweep emits the same SLA alerts as the full sweep);
drift is seen within `recheck`. A population re-fit or a new churn model changes everyone's
risk at once: `schedule_all` makes every customer due.

A customer is scheduled after every evaluation (`Core.publish` records its deadline in
`BatchResult.deadlines`); `due(now)` pops the customers due at `now` — the caller evaluates
them and schedules them again. An entry replaced by a later `schedule` stays in the heap
until it surfaces and is skipped (lazy invalidation); the heap is rebuilt when stale entries
outnumber live ones.
"""
from __future__ import annotations

import heapq
import math
from typing import Iterable, Iterator

from pipeline.domain.case import CLOSED_RETENTION, OPEN_RETENTION, Case
from pipeline.domain.scoring import Profile
from pipeline.domain.state import CustomerState
from pipeline.domain.utc_month import next_month

NEVER = math.inf


def next_deadline(state: CustomerState, p: Profile, escalate_after: float) -> float:
    """The earliest instant ≥ `p.as_of` at which a deadline rule can change this customer's
    outputs (NEVER if none). Instants the rules compare with `>` (a breach is `as_of > due`)
    are returned as they are, so a customer evaluated exactly at one is due again at once
    and seen on the next tick after it."""
    as_of = p.as_of
    out = next_month(as_of)
    for rec in state.complaints:
        sla = p.slas.get(rec.id)
        if sla is None:
            continue
        if rec.ack is None:
            for t in (sla.ack_warn, sla.ack_due):
                if t is not None and as_of <= t < out:
                    out = t
        if rec.resolved is None:
            for t in (sla.resolve_warn, sla.resolve_due):
                if t is not None and as_of <= t < out:
                    out = t
    for aid, stored in state.cases.items():
        case = Case.from_stored(aid, stored)
        if escalate_after > 0 and case.alert_active and case.severity == "critical" and case.acked is None \
                and not case.is_closed:
            t = case.opened + escalate_after
            if as_of <= t < out:
                out = t
        t = case.closed + CLOSED_RETENTION if case.closed is not None else (
            case.opened + OPEN_RETENTION if not case.alert_active else NEVER)
        if as_of <= t < out:
            out = t
    return out


class SweepIndex:
    """customer id -> next check time, earliest first."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def schedule(self, customer_id: str, deadline: float, as_of: float | None = None,
                 recheck: float = NEVER) -> float:
        """Check `customer_id` at its deadline, or `recheck` after `as_of` if sooner (drift).
        Replaces the customer's earlier entry; returns the time set."""
        at = deadline if as_of is None else min(deadline, as_of + recheck)
        if at == NEVER:
            self._at.pop(customer_id, None)
            return at
        if self._at.get(customer_id) == at:
            return at
        self._at[customer_id] = at
        heapq.heappush(self._heap, (at, customer_id))
        if len(self._heap) > 2 * len(self._at) + 1024:
            self._compact()
        return at

    def schedule_all(self, at: float) -> None:
        """Every customer due at `at` at the latest (a re-fit changed everyone's risk)."""
        for cid, t in list(self._at.items()):
            if at < t:
                self.schedule(cid, at)

    def discard(self, customer_id: str) -> None:
        self._at.pop(customer_id, None)

    def due(self, now: float, limit: int | None = None) -> list[str]:
        """Take out the customers whose check time is ≤ `now` (earliest first, at most
        `limit`); the caller evaluates them and schedules them again."""
        heap, at = self._heap, self._at
        out: list[str] = []
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            t, cid = heapq.heappop(heap)
            if at.get(cid) == t:   # else a stale entry: the customer was scheduled again since
                del at[cid]
                out.append(cid)
        return out

    def next_at(self) -> float:
        """The earliest check time held (NEVER if none)."""
        heap, at = self._heap, self._at
        while heap and at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else NEVER

    def _compact(self) -> None:
        self._heap = [(t, cid) for cid, t in self._at.items()]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._at

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def items(self) -> Iterable[tuple[str, float]]:
        return self._at.items()
