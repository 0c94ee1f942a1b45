"""Benchmark: the longest event-loop stall while a (re)assigned worker looks for the alerts a
crash left behind (`WorkerLoop.find_left_behind`, docs/fault-tolerance.md "Alert ids after a crash").

    .venv/bin/python bench/left_behind_stall.py [--alerts 35000]

At each assignment the worker reads the churn and failed-recovery alerts ClickHouse holds
firing, never resolved, and compares each with its customer's stored state (one decode each).
Here a WorkerLoop (the production code) on the unit tests' in-memory ports holds `--alerts`
customers' states (the states of a generated stream, cloned under new ids, stored encoded)
and is given one never-resolved churn alert for each, none of which the states know (the
worst case: all are held). A probe task sleeps 1 ms at a time on the event loop; the longest
gap between its wake-ups is the longest stall. Figures, no asserts. (The ClickHouse read
itself runs in the sink's thread: `queries.open_numbered_alerts` took 1.5-1.9 s on chDB over
2,000,000 alert episodes, 0.1 s over 100,000.)
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.adapters.state_codec import encode_state  # noqa: E402
from pipeline.bootstrap import build_core  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.domain.alerts import numbered_alert_id  # noqa: E402
from pipeline.domain.left_behind_alerts import StoredAlert  # noqa: E402
from pipeline.service.replay import replay  # noqa: E402
from pipeline.tools.generator import generate  # noqa: E402
from tests.unit.test_worker_loop import World  # noqa: E402


class WallClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


async def measure(world: World) -> tuple[float, float]:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await world.loop.find_left_behind()
    took = time.perf_counter() - started
    await asyncio.sleep(0.02)   # the probe wakes after the last stall and records it
    stop.set()
    await task
    return took, max(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=35_000)
    n = ap.parse_args().alerts
    states = replay((r.value for r in generate(customers=2000, days=120, seed=7).records), build_core(Settings()),
                    clock=time.time).states
    raws = [encode_state(s) for s in states.values()]
    world = World()
    world.loop.clock = WallClock()   # type: ignore[assignment]
    world.store.raw = {f"x{i}": raws[i % len(raws)] for i in range(n)}
    alerts = [StoredAlert(f"x{i}", numbered_alert_id(f"x{i}", "churn", 99), "warning", "standard", 0.0)
              for i in range(n)]
    world.loop.fetch_open_alerts = lambda: alerts
    took, worst = asyncio.run(measure(world))
    held = sum(len(v) for v in world.loop.left_behind.waiting.values())
    print(f"{n:,} never-resolved alerts: find_left_behind {took:.2f} s, longest event-loop stall "
          f"{worst * 1000:.0f} ms, held {held:,}")


if __name__ == "__main__":
    main()
