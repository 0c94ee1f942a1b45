"""`cxpulse bench` reads how long the worker's event loop (its main thread) ran and how long it
waited for a free CPU from the kernel's scheduler statistics."""
from __future__ import annotations

import math
import os
import threading
import time

import pytest

from pipeline.tools.bench import main_thread_sched


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_event_loop_figures_are_the_main_threads_own():
    run0, wait0 = main_thread_sched(os.getpid())
    if math.isnan(run0):
        pytest.skip("this kernel keeps no scheduler statistics")
    # another thread busy while the main thread sleeps: not the main thread's running time
    other = threading.Thread(target=_spin, args=(0.3,))
    other.start()
    other.join()
    run1, wait1 = main_thread_sched(os.getpid())
    assert run1 - run0 < 0.1
    # the main thread busy: its running time grows by about its own CPU time
    _spin(0.3)
    run2, wait2 = main_thread_sched(os.getpid())
    assert 0.25 <= run2 - run1 <= 5.0
    assert wait0 <= wait1 <= wait2


def test_no_process_is_an_error_and_a_thread_without_statistics_reads_as_nan():
    with pytest.raises(ValueError):
        main_thread_sched(None)
    assert all(math.isnan(x) for x in main_thread_sched(2 ** 22 + 12345))   # above pid_max: no /proc entry
