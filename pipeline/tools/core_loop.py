"""A worker-like loop without a broker: the hot path of `agents/` minus Kafka and ClickHouse,
over a fixed generated stream. Used to profile the core (`python -m pipeline.tools.core_loop
--profile`, py-spy) and to prove that a speed-up changes no output: `digest` hashes every
output of the loop — score, alert and dead-letter messages, ClickHouse rows, the states
stored after every batch and the sweeps' outputs — so two builds (or two code paths) that
print the same digest produced the same bytes.

What one micro-batch does here is what the worker does (pipeline/service/worker_loop.py
`apply_released` and `_emit`): `guarded_batch` over `Core.process(source_offsets=True)` with the stored states,
ClickHouse rows and messages built, then every touched state encoded and stored. Every
`sweep_every` batches a sweep re-evaluates a slice of `sweep_max` stored customers (the
worker's round-robin timer) at the stream's latest event time.

    python -m pipeline.tools.core_loop --events 60000          # digest + µs per event
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import resource
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import orjson

from pipeline.adapters.clickhouse import rows as ch_rows
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.config import Settings
from pipeline.domain.state import CustomerState
from pipeline.service.emit_guard import guarded_batch
from pipeline.service.live_states import LiveStates
from pipeline.service.processor import BatchResult, Core, RawRecord
from pipeline.service.worker_loop import SWEEP_MAX

PARTITIONS = 4
BATCH = 500
SWEEP_EVERY = 10     # batches between sweeps
END = datetime(2026, 11, 1, tzinfo=timezone.utc)   # the stream's end: fixed, so the digest is too


def generated_records(events: int, seed: int, settings: Settings) -> tuple[list[RawRecord], float]:
    """`events` records of the generator as the worker receives them (topic per type, keyed,
    partition by key, offsets per partition), and a fixed processing clock just after them."""
    from pipeline.tools.generator import generate

    customers = max(20, events // 27)
    while True:
        stream = generate(customers=customers, days=60, seed=seed, invalid_ratio=0.01, end=END)
        if len(stream.records) >= events:
            break
        customers = int(customers * 1.3) + 1
    topic_for = settings.topic_for_type
    next_offset: dict[tuple[str, int], int] = {}
    out = []
    for r in stream.records[:events]:
        topic = topic_for[r.kind]
        part = zlib.crc32(r.key) % PARTITIONS if r.key else 0
        off = next_offset.get((topic, part), 0)
        next_offset[(topic, part)] = off + 1
        out.append(RawRecord(topic, part, off, r.key, r.value))
    return out, stream.end.timestamp() + 86400.0


class Digest:
    """sha256 over a canonical form of every output (rows canonicalised column by column,
    so rows built as dicts or as columns hash the same)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.counts: dict[str, int] = {}

    def add(self, kind: str, payload: bytes) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.h.update(kind.encode() + b"\0" + len(payload).to_bytes(8, "big") + payload)

    def add_rows(self, rows: dict[str, Any]) -> None:
        for table in sorted(rows):
            columns = canonical_columns(rows[table])
            if columns is None:
                continue
            self.counts[f"rows:{table}"] = self.counts.get(f"rows:{table}", 0) + len(next(iter(columns.values())))
            self.add(f"table:{table}", orjson.dumps(columns, default=_default, option=orjson.OPT_SORT_KEYS))

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _default(v: object) -> object:
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def canonical_columns(table_rows: Any) -> dict[str, list] | None:
    """{column: values} of a table's rows: a list of row dicts, or already (names, columns)."""
    if isinstance(table_rows, tuple):   # (column names, column-major data)
        names, data = table_rows
        if not data or not len(data[0]):
            return None
        return {n: [_canon(v) for v in col] for n, col in zip(names, data)}
    if not table_rows:
        return None
    names = list(table_rows[0])
    return {n: [_canon(r[n]) for r in table_rows] for n in names}


def _canon(v: object) -> object:
    # datetimes: the instant, exactly (isoformat of the UTC value); floats as they are
    if isinstance(v, datetime):
        return v.isoformat()
    return v


@dataclass
class LoopResult:
    digest: str
    counts: dict[str, int]
    events: int
    seconds: float
    cpu_seconds: float
    batches: int
    sweeps: int
    swept: int
    states: dict[bytes, bytes] = field(default_factory=dict)   # customer key -> stored state


def run(records: list[RawRecord], core: Core, received_at: float, *, batch: int = BATCH,
        sweep_every: int = SWEEP_EVERY, sweep_max: int = SWEEP_MAX,
        build_rows: Callable[[BatchResult], dict[str, Any]] = ch_rows.batch_rows,
        live: bool = False) -> LoopResult:
    """Run the worker-like loop; every output goes into the digest. `live`: keep decoded
    states between batches (pipeline/service/live_states.py) as the worker does."""
    table: dict[bytes, bytes] = {}
    digest = Digest()
    cache: LiveStates[CustomerState] | None = LiveStates(decode_state) if live else None

    def load(cid: str) -> CustomerState | None:
        raw = table.get(cid.encode())
        if cache is not None:
            return cache.load(cid, raw)
        return decode_state(raw, cid) if raw else None

    def emit(result: BatchResult, rows: dict[str, Any], messages: Iterable[Any]) -> None:
        for m in messages:
            digest.add(m.kind, (m.key or b"") + b"\0" + m.value)
        digest.add_rows(rows)
        for cid, state in result.states.items():
            raw = encode_state(state)
            table[cid.encode()] = raw
            if cache is not None:
                cache.stored(cid, raw, state)
            digest.add("state", cid.encode() + b"\0" + raw)

    cursor: list[bytes] = []
    latest = 0.0
    batches = sweeps = swept = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        prepared = guarded_batch(chunk, lambda recs, ld: core.process(recs, ld, received_at=received_at,
                                                                      source_offsets=True),
                                 load, received_at, build_rows)
        emit(prepared.result, prepared.rows, prepared.messages)
        latest = max(latest, prepared.result.latest_event_time)
        batches += 1
        if batches % sweep_every == 0:
            if not cursor:
                cursor = list(table)
            keys, cursor = cursor[:sweep_max], cursor[sweep_max:]
            loaded = [s for k in keys if (s := load(k.decode())) is not None]
            out = core.sweep(loaded, latest)
            sweeps += 1
            swept += len(loaded)
            if out.scores or out.alerts:
                from pipeline.service.emit_guard import prepare

                p = prepare(out, build_rows)
                emit(out, p.rows, p.messages)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for key in sorted(table):
        digest.add("final", key + b"\0" + table[key])
    return LoopResult(digest.hexdigest(), digest.counts, len(records), seconds, cpu, batches, sweeps, swept, table)


def sweep_tick_cost(customers: int = 100_000, ticks: int = 200, seed: int = 7) -> dict[str, float]:
    """The sweep index's cost per tick with `customers` scheduled (pipeline/service/sweep_index.py):
    a tick with nothing due (median of `ticks`), and scheduling one customer."""
    import random
    import statistics

    from pipeline.service.sweep_index import SweepIndex

    rng = random.Random(seed)
    now = 1_800_000_000.0
    index = SweepIndex()
    t0 = time.perf_counter()
    for i in range(customers):
        # deadlines within the coming hour (the drift re-check): the densest schedule
        index.schedule(f"C{i:07d}", now + 1.0 + rng.random() * 3600.0)
    schedule_us = 1e6 * (time.perf_counter() - t0) / customers
    samples = []
    for k in range(ticks):
        t = time.perf_counter()
        due = index.due(now + k * 1e-3)
        samples.append(time.perf_counter() - t)
        assert not due
    # a tick with 1% of them due: popped, then scheduled again (the evaluation itself not counted)
    horizon = sorted(t for _, t in index.items())[customers // 100]
    t = time.perf_counter()
    due = index.due(horizon)
    for cid in due:
        index.schedule(cid, horizon + 86400.0)
    one_percent = time.perf_counter() - t
    return {"customers": customers, "idle_tick_ms": 1e3 * statistics.median(samples),
            "idle_tick_ms_max": 1e3 * max(samples), "schedule_us": schedule_us,
            "due_1pct": len(due), "due_1pct_tick_ms": 1e3 * one_percent}


def main(argv: list[str] | None = None) -> int:
    from pipeline.bootstrap import build_core
    from pipeline.config import load as load_settings

    ap = argparse.ArgumentParser(prog="python -m pipeline.tools.core_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--repeat", type=int, default=1, help="runs (best time reported; the digest must not change)")
    ap.add_argument("--live", action="store_true", help="keep decoded states between batches (as the worker)")
    ap.add_argument("--gc", action="store_true", help="tune the garbage collector as the worker (bootstrap.tune_gc)")
    ap.add_argument("--sweep-bench", action="store_true",
                    help="only the sweep index's cost per tick for 100k customers (and today's full slice)")
    args = ap.parse_args(argv)
    settings = load_settings()
    if args.sweep_bench:
        return sweep_bench(settings, args.events, args.seed)
    records, received_at = generated_records(args.events, args.seed, settings)
    if args.gc:
        from pipeline.bootstrap import tune_gc

        build_core(settings)   # what start-up builds, before the freeze
        tune_gc()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gc_time = [0.0, 0.0, 0]   # seconds in collections, start of the current one, collections

    def gc_watch(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]
            gc_time[2] += 1

    gc.callbacks.append(gc_watch)
    results = []
    for _ in range(args.repeat):
        if not args.gc:
            gc.collect()
        results.append(run(records, build_core(settings), received_at, batch=args.batch, live=args.live))
    digests = {r.digest for r in results}
    best = min(results, key=lambda r: r.cpu_seconds)
    print(f"events {best.events:,}  batches {best.batches}  sweeps {best.sweeps} ({best.swept:,} customers)")
    print(f"outputs {dict(sorted(best.counts.items()))}")
    print(f"digest {best.digest}" + ("" if len(digests) == 1 else f"  (RUNS DIFFER: {sorted(digests)})"))
    print(f"cpu {best.cpu_seconds:.2f} s = {1e6 * best.cpu_seconds / best.events:.1f} µs/event "
          f"(wall {best.seconds:.2f} s; runs: {', '.join(f'{1e6 * r.cpu_seconds / r.events:.1f}' for r in results)})")
    print(f"garbage collector: {gc_time[2]:,} collections, {gc_time[0]:.2f} s wall in all runs "
          f"(thresholds {gc.get_threshold()}, {gc.get_freeze_count():,} objects frozen)")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (before the loop {rss0 / 1024:.0f})")
    return 0 if len(digests) == 1 else 1


def sweep_bench(settings: Settings, events: int, seed: int) -> int:
    from pipeline.bootstrap import build_core

    c = sweep_tick_cost()
    print(f"sweep index, {c['customers']:,} customers scheduled: a tick with nothing due {c['idle_tick_ms']:.4f} ms "
          f"(median of 200; max {c['idle_tick_ms_max']:.3f} ms); scheduling {c['schedule_us']:.2f} µs per customer; "
          f"a tick with {c['due_1pct']:,} due (1%): {c['due_1pct_tick_ms']:.1f} ms to pop and re-schedule them "
          f"(their evaluation not counted)")
    # today's timer: a slice of SWEEP_MAX stored customers decoded and re-evaluated every tick
    records, received_at = generated_records(events, seed, settings)
    core = build_core(settings)
    result = run(records, core, received_at)
    stored = list(result.states.items())
    keys = [stored[i % len(stored)] for i in range(SWEEP_MAX)]
    latest = max(decode_state(raw).wm for _, raw in stored)
    t = time.perf_counter()
    core.sweep([decode_state(raw, k.decode()) for k, raw in keys], latest)
    full = time.perf_counter() - t
    print(f"today's sweep tick: {SWEEP_MAX:,} stored customers decoded and re-evaluated in {1e3 * full:,.0f} ms "
          f"({1e6 * full / SWEEP_MAX:.0f} µs each; {len(stored):,} distinct customers cycled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
