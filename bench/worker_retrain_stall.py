"""Benchmark: the longest event-loop stall of a learning worker during a tick with a retraining
(issue #16: "training … does not stall the event loop").

    .venv/bin/python bench/worker_retrain_stall.py [--customers 100000] [--rows 500000] [--kind logistic]
    .venv/bin/python bench/worker_retrain_stall.py --wall-clock-refit [--customers 100000]

A WorkerLoop (pipeline/service/worker_loop.py, the production code) with in-memory ports holds
`--customers` customer states (the states of a generated stream, cloned under new ids), stored
encoded as the worker's table holds them and decoded on load through the same cache of
decoded states (pipeline/service/live_states.py; `--decoded`: a store of decoded objects), and a
snapshot book holding `--rows` labelled rows (random features with a planted signal; the
book's cap is 500,000 rows). One learning tick is run at the event time after the history,
as the worker runs it when an event passes midnight + the lateness bound: the states are
loaded, the population re-fit and the snapshot computed in a thread, the training scheduled
off the loop. The garbage collector is set as in the worker (pipeline/bootstrap.py tune_gc). Meanwhile a probe task sleeps 5 ms at a time on the event loop and records
how late it wakes: the longest lateness is the longest stall of the loop. Figures, no asserts.
`--wall-clock-refit` measures the same for the population re-fit of a worker that does not learn
(every CXPULSE_REFIT_SECONDS) over the same store.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np

from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.bootstrap import build_core, tune_gc
from pipeline.config import Settings
from pipeline.domain.churn import DAY
from pipeline.domain.churn_features import FEATURE_NAMES
from pipeline.domain.churn_snapshots import Snapshot
from pipeline.domain.state import CustomerState
from pipeline.service.churn_learning import ChurnLearner
from pipeline.service.live_states import LiveStates
from pipeline.service.replay import replay
from pipeline.service.worker_loop import LoopConfig, WorkerLoop
from pipeline.tools.generator import generate

END = datetime(2026, 6, 1, tzinfo=timezone.utc)


class Store:
    """Decoded objects (`--decoded`): loading costs nothing."""
    def __init__(self, states):
        self.states = states

    def load(self, cid):
        return self.states.get(cid)

    def store(self, cid, state):
        self.states[cid] = state

    def encode(self, state):
        return encode_state(state)

    def decode(self, cid, raw):
        return decode_state(raw, cid)

    def put(self, cid, raw, state):
        self.states[cid] = state if state is not None else decode_state(raw, cid)

    def keys(self):
        return list(self.states)


class EncodedStore:
    """As the worker's table (agents/ports.py TableStates): encoded bytes, decoded on load
    unless the cache of decoded states still holds the object they were stored from."""
    def __init__(self, states):
        self.table = {cid: encode_state(s) for cid, s in states.items()}
        self.live: LiveStates[CustomerState] = LiveStates(decode_state)

    def load(self, cid):
        return self.live.load(cid, self.table.get(cid))

    def store(self, cid, state):
        self.put(cid, encode_state(state), state)

    def encode(self, state):
        return encode_state(state)

    def decode(self, cid, raw):
        return decode_state(raw, cid)

    def put(self, cid, raw, state):
        self.table[cid] = raw
        if state is None:
            self.live.forget(cid)
        else:
            self.live.stored(cid, raw, state)

    def keys(self):
        return list(self.table)


class Nothing:
    """Outputs, rows, metrics: nothing is emitted by a learning tick."""
    is_open = False

    def __getattr__(self, name):
        return lambda *a, **k: None


class TP(NamedTuple):
    topic: str
    partition: int


class Inputs(Nothing):
    """Partition 0 of every input topic (replay feeds the states from partition 0): this
    worker owns every customer."""
    def __init__(self, topics):
        self.topics = topics

    def assignment(self):
        return [TP(topic, 0) for topic in self.topics]


class Clock:
    def time(self):
        return END.timestamp()

    def monotonic(self):
        return time.monotonic()


def states_of(customers: int) -> dict:
    base = replay([r.value for r in generate(customers=2000, days=90, seed=5, end=END, invalid_ratio=0.0,
                                             duplicate_ratio=0.0).records],
                  build_core(Settings()), clock=lambda: END.timestamp() + DAY, tick=None).states
    proto = [s for s in base.values() if s.n]
    return {f"C{i:07d}": replace(proto[i % len(proto)], customer_id=f"C{i:07d}") for i in range(customers)}


def book_rows(learner: ChurnLearner, rows: int, end: float) -> None:
    rng = np.random.default_rng(1)
    per = 5000
    for k in range(rows // per):
        X = rng.normal(size=(per, len(FEATURE_NAMES))).astype(np.float32)
        z = -2.0 + 1.5 * X[:, 0] - 0.7 * X[:, 8]
        y = rng.random(per) < 1 / (1 + np.exp(-z))
        t = end - (rows // per - k + 31) * DAY
        learner.book.labelled.append(Snapshot(t, [f"C{i:07d}" for i in range(per)], X,
                                              rng.random(per).astype(np.float32), y))


class GcPauses:
    """gc.callbacks entry: the longest garbage collection (it holds the interpreter)."""
    def __init__(self) -> None:
        self.started = 0.0
        self.longest = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self.started)


async def idle_stall(seconds: float = 3.0) -> float:
    """The same probe with nothing else running: the machine's own noise (2 shared cores)."""
    worst = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        worst = max(worst, time.perf_counter() - t - 0.005)
    return worst


async def measure(action, settle=None) -> tuple[float, float, float, int, float]:
    """The longest stall of the event loop while `action()` runs (then `settle()`, e.g. the
    training it started): (stall, action seconds, total seconds, probes, stall's offset)."""
    worst = 0.0
    worst_at = 0.0
    wakes = 0
    running = True

    async def probe():
        nonlocal worst, wakes, worst_at
        while running:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            late = time.perf_counter() - t - 0.005
            if late > worst:
                worst, worst_at = late, t - started
            wakes += 1

    started = time.perf_counter()
    task = asyncio.create_task(probe())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await action()
    first = time.perf_counter() - started
    if settle is not None:
        await settle()
    total = time.perf_counter() - started
    running = False
    await task
    return worst, first, total, wakes, worst_at


async def learning_tick(loop: WorkerLoop, now: float) -> None:
    async with loop.lock:
        await loop._tick(now)


async def trainings_done(loop: WorkerLoop) -> None:
    while loop.trainings:
        await asyncio.gather(*list(loop.trainings))


def wall_clock_refit(store, settings: Settings) -> None:
    """`--wall-clock-refit`: the stall of a worker that does not learn, during its population
    re-fit on the wall-clock timer (CXPULSE_REFIT_SECONDS) over the same store."""
    core = build_core(settings)
    loop = WorkerLoop(core, LoopConfig(topic_for_type=settings.topic_for_type), store=store, outputs=Nothing(),
                      rows=Nothing(), inputs=Inputs(sorted(set(settings.topic_for_type.values()))), clock=Clock(),
                      metrics=Nothing())
    tune_gc()
    noise = asyncio.run(idle_stall())
    for _ in range(2):
        worst, seconds, _, wakes, worst_at = asyncio.run(measure(loop.refit_population))
        print(f"wall-clock population re-fit over {len(store.keys()):,} stored customers: {seconds:.2f} s, "
              f"longest event-loop stall {worst * 1000:.0f} ms ({worst_at:.2f} s into it) over {wakes:,} probes of "
              f"5 ms (idle machine noise: {noise * 1000:.0f} ms); fitted on {core.population.fitted_on:,} customers")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--kind", default="logistic", choices=("logistic", "lightgbm"))
    ap.add_argument("--thread", action="store_true", help="train in a thread instead of a process (the worker's way)")
    ap.add_argument("--decoded", action="store_true", help="a store of decoded states (no decoding on load)")
    ap.add_argument("--wall-clock-refit", action="store_true",
                    help="instead: the stall during the population re-fit of a worker that does not learn")
    args = ap.parse_args()
    settings = Settings()
    states = states_of(args.customers)
    store = Store(states) if args.decoded else EncodedStore(states)
    if not args.decoded:
        del states   # the worker's table holds bytes: no decoded state outlives a load
    if args.wall_clock_refit:
        wall_clock_refit(store, settings)
        return
    learner = ChurnLearner(settings.churn_horizon_days, kind=args.kind)
    now = (END.timestamp() // DAY + 1) * DAY
    book_rows(learner, args.rows, now)
    core = build_core(settings)
    loop = WorkerLoop(core, LoopConfig(topic_for_type=settings.topic_for_type),
                      store=store,
                      outputs=Nothing(), rows=Nothing(), inputs=Inputs(sorted(set(settings.topic_for_type.values()))),
                      clock=Clock(), metrics=Nothing(),
                      learner=learner, train_executor=None if args.thread else
                      ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")))
    tune_gc()   # the worker's garbage-collector settings (agents/app.py)
    noise = asyncio.run(idle_stall())
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    worst, tick, total, wakes, worst_at = asyncio.run(measure(lambda: learning_tick(loop, now),
                                                              lambda: trainings_done(loop)))
    gc.callbacks.remove(pauses)
    if loop.train_executor is not None:
        loop.train_executor.shutdown()
    card = learner.cards[-1] if learner.cards else None
    print(f"{args.customers:,} customers ({'decoded' if args.decoded else 'encoded'} store), "
          f"{args.rows:,} labelled rows ({args.kind}, training in a "
          f"{'thread' if args.thread else 'process'}): tick {tick:.1f} s "
          f"(states loaded, re-fit and snapshot), tick + training {total:.1f} s "
          f"(training {learner.train_seconds[-1] if learner.train_seconds else float('nan'):.1f} s incl. the transfer); "
          f"longest event-loop stall {worst * 1000:.0f} ms ({worst_at:.1f} s into the tick) over {wakes:,} probes "
          f"of 5 ms (idle machine noise: {noise * 1000:.0f} ms; longest garbage collection {pauses.longest * 1000:.0f} ms); "
          f"model {card.version if card else None} served: {core.churn_model is not None}")


if __name__ == "__main__":
    main()
