"""Pausing and resuming input partitions of the Faust consumer, for event-time alignment
(pipeline/service/event_time_merge.py): the one place the worker relies on these consumer
methods and on the log end offsets Faust keeps from its fetches.

Faust 0.15's `Consumer.pause_partitions` / `resume_partitions` take partitions out of (and
back into) the set it fetches and delivers from; Faust clears the pauses of revoked
partitions itself and keeps those of partitions it keeps in a rebalance (the worker resumes
everything it paused when partitions are revoked). Checked against faust-streaming 0.15.x:
another version must be re-checked before it is allowed here.
"""
from __future__ import annotations

from typing import Iterable

import faust

SUPPORTED = ("0.15.",)
if not faust.__version__.startswith(SUPPORTED):
    raise RuntimeError(f"agents/consumer_flow.py is checked against faust-streaming {SUPPORTED}, "
                       f"not {faust.__version__}: re-check pause_partitions/resume_partitions/highwater")


def pause(consumer, tps: Iterable) -> None:
    tps = set(tps)
    if tps:
        consumer.pause_partitions(tps)


def resume(consumer, tps: Iterable) -> None:
    tps = set(tps) & set(consumer.assignment())
    if tps:
        consumer.resume_partitions(tps)


def highwater(consumer, tp) -> int | None:
    """The log end offset of `tp` as of the consumer's last fetch (None before the first)."""
    try:
        end = consumer.highwater(tp)
    except Exception:   # not assigned (any more)
        return None
    return end if isinstance(end, int) and end >= 0 else None
