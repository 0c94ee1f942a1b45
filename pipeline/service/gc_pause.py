"""The garbage collector off while any of the worker's long steps runs (a learning tick, a
pooled read of the churn history), and on again once the last one has ended.

Each step turns the collector off so that collections walking the millions of objects it makes
do not hold the event loop (up to 2.2 s measured). The steps overlap: a pooled read runs in a
thread while the loop goes on, and a tick may start and end meanwhile. Each step once restored
the collector as it had found it, so a tick that ended during a read turned the collector on
under the read. One count for every step, on the event loop's thread.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

_holders = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector is off inside; on again after the last holder leaves, if it was on when
    the first one came."""
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0 and _was_enabled:
            gc.enable()
