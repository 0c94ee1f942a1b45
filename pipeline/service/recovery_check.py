"""Which table-changelog partitions a stalled Faust recovery must read again.

Faust (faust-streaming 0.15.3) restores a table after an assignment by seeking each active
changelog partition to the offset after the last one it holds and reading up to the
partition's last offset. A rebalance that follows another within a few seconds (a
worker joins, then leaves) can make it lose those records: a fetch that was already
waiting when the rebalance started returns the changelog records just after the recovery
sought the partition. Faust's consumer drops them because flow is still stopped, and the
aiokafka consumer has already moved past them. Faust then seeks back only to the group's
*committed* offsets, and changelog partitions have none. The recovery waits forever
("No event received for active tp ... since recovery start"), and the worker never
processes again. This was seen in about 1 in 20 runs of the join-and-leave drill
(docs/fault-tolerance.md, scenario 2).

`stalled()` names the active changelog partitions whose recovery is not complete, whose
consumer position is already beyond the next offset the recovery needs, and that
delivered nothing to the recovery for `stall_seconds`. The worker seeks them back to
that offset (agents/app.py, `recovery_watchdog`). Records read twice are harmless: the
recovery skips offsets at or below the last one it applied.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Optional


def stalled(
    last_applied: Mapping[Hashable, int],
    last_offsets: Mapping[Hashable, int],
    positions: Mapping[Hashable, Optional[int]],
    last_event_at: Mapping[Hashable, float],
    started_at: float,
    now: float,
    stall_seconds: float,
) -> dict:
    """{tp: offset to seek to} for changelog partitions whose recovery stalled.

    last_applied: tp -> last changelog offset the recovery applied (-1: none yet);
    last_offsets: tp -> last offset in the changelog partition when recovery started
    (-1: empty); positions: tp -> the consumer's fetch position (None: unknown);
    last_event_at: tp -> when the recovery last received a record of tp (absent:
    none since `started_at`).
    """
    out = {}
    for tp, last in last_offsets.items():
        applied = last_applied.get(tp, -1)
        if applied is None:
            applied = -1
        if last is None or applied >= last:
            continue                      # this partition is restored
        want = max(applied, -1) + 1
        position = positions.get(tp)
        if position is None or position <= want:
            continue                      # the consumer still reads from where recovery needs
        if now - last_event_at.get(tp, started_at) >= stall_seconds:
            out[tp] = want
    return out
