"""The worker's garbage-collector pause (pipeline/service/gc_pause.py)."""
from __future__ import annotations

import gc

from pipeline.service.gc_pause import gc_paused


def test_overlapping_pauses_keep_the_collector_off_until_the_last_one_ends():
    """A tick that starts and ends during a pooled read leaves the collector off for the read
    (each step used to restore it as it found it: the tick turned it on under the read)."""
    assert gc.isenabled()
    read = gc_paused()
    read.__enter__()
    with gc_paused():          # a tick, inside the read
        assert not gc.isenabled()
    assert not gc.isenabled()  # the read still runs
    read.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_off_before_stays_off():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
