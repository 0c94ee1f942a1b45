"""Diagnostic, not part of the product: note every event-loop callback that runs longer than a
threshold, in any Python process started with this folder on PYTHONPATH and
CXPULSE_PROBE_SLOW set (a file to append to). Each line: the wall clock at its end, its duration
(s), "cpu" and the thread CPU it used (s; less than the duration: the thread waited for a CPU or
the GIL), the process id, and what ran (a task's coroutine, else the callback). The worker that
`cxpulse bench` starts inherits the environment, so:

    CXPULSE_PROBE_SLOW=/tmp/slow.txt PYTHONPATH=bench/loop_stalls .venv/bin/cxpulse bench --no-peer --latency-rate 1500

(CXPULSE_PROBE_SLOW_S: the threshold, default 0.1 s). A paced event's latency tail is the time
the loop spends in such callbacks while its records wait: bench/README.md, "A paced event's
tail at rates the machine can take" (session 34).
"""
import os
import time

_path = os.environ.get("CXPULSE_PROBE_SLOW")
if _path:
    import asyncio.events as _events

    _run = _events.Handle._run
    _threshold = float(os.environ.get("CXPULSE_PROBE_SLOW_S", "0.1"))
    _out = open(_path, "a", buffering=1)

    def _name(handle) -> str:
        callback = handle._callback
        owner = getattr(callback, "__self__", None)
        if owner is not None and hasattr(owner, "get_coro"):
            coro = owner.get_coro()
            return "task " + getattr(coro, "__qualname__", repr(coro))
        return getattr(callback, "__qualname__", repr(callback))

    def _timed(self):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return _run(self)
        finally:
            took = time.perf_counter() - t0
            if took >= _threshold:
                try:
                    _out.write(f"{time.time():.3f} {took:.3f} cpu {time.thread_time() - c0:.3f} {os.getpid()} {_name(self)}\n")
                except Exception:   # a diagnostic never breaks the process it watches
                    pass

    _events.Handle._run = _timed
