"""pipeline.service.worker_loop: the worker's invariants with in-memory fakes of its ports
(no broker, no ClickHouse): emit order, the emit guard (a failing record isolated and
dead-lettered, rows refused as data dead-lettered `unstorable`), event-time intake, the
ownership filter after a revocation, sweep chunking and SLA warnings, operator actions,
erasure and drain on stop."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import NamedTuple

import orjson
import pytest

from pipeline.adapters.clickhouse.sink import RejectedRow, sink_dead_letters
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.state import CustomerState
from pipeline.service.processor import BatchResult, Core, RawRecord
from pipeline.service import worker_loop
from pipeline.service.worker_loop import Delivered, LoopConfig, WorkerLoop
from tests.factories import RECEIVED_AT, T0, at, complaint, order, raw, touchpoint

SETTINGS = Settings()
TOPIC = {"touchpoint": SETTINGS.topic_touchpoints, "order": SETTINGS.topic_orders,
         "complaint": SETTINGS.topic_complaints}
HOUR = 3600.0


class TP(NamedTuple):
    topic: str
    partition: int


# --- fakes of the ports ------------------------------------------------------------------
class Store:
    """The state store: the encoded states (a load decodes them, like a store without live
    objects); notes each write in the shared log. `states` holds what was stored, decoded."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.raw: dict[str, bytes] = {}
        self.states: dict[str, CustomerState] = {}

    def load(self, customer_id: str) -> CustomerState | None:
        raw = self.raw.get(customer_id)
        return None if raw is None else decode_state(raw, customer_id)

    def store(self, customer_id: str, state: CustomerState) -> None:
        self.put(customer_id, self.encode(state), state)

    def encode(self, state: CustomerState) -> bytes:
        return encode_state(state)

    def decode(self, customer_id: str, raw: bytes) -> CustomerState:
        return decode_state(raw, customer_id)

    def put(self, customer_id: str, raw: bytes, state: CustomerState | None) -> None:
        self.log.append(("state", customer_id))
        self.raw[customer_id] = raw
        self.states[customer_id] = decode_state(raw, customer_id)

    def keys(self):
        return list(self.states)


class Outputs:
    def __init__(self, log: list) -> None:
        self.log = log
        self.sent: dict[str, list[dict]] = {"score": [], "alert": [], "deadletter": []}
        self.deleted: list[bytes] = []

    def send(self, kind: str, key: bytes | None, value: bytes) -> None:
        record = orjson.loads(value)
        self.log.append((kind, record.get("reason") or record["customer_id"]))
        self.sent[kind].append(record)

    @property
    def scores(self) -> list[dict]:
        return self.sent["score"]

    @property
    def alerts(self) -> list[dict]:
        return self.sent["alert"]

    @property
    def dead_letters(self) -> list[dict]:
        return self.sent["deadletter"]

    async def flush(self) -> None:
        self.log.append(("flush",))

    async def delete_score(self, key: bytes) -> None:
        self.deleted.append(key)


class Rows:
    """The row sink: one `cx_events` row per applied event; can fail to build a customer's
    rows, refuse them as data, or block while writing."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.written: list[str] = []          # customer ids of the written event rows, in order
        self.fail_for: str | None = None      # building this customer's rows raises
        self.refuse_for: str | None = None    # ClickHouse refuses this customer's rows as data
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None   # the write raises this (e.g. the sink closed while retrying)
        self.is_open = True
        self.ran: list[tuple] = []

    def build_rows(self, result: BatchResult) -> dict[str, list[dict]]:
        customers = [ev.customer_id for ev, _tier in result.events]
        if self.fail_for in customers:
            raise ValueError(f"cannot build the row of {self.fail_for}")
        return {"cx_events": [{"customer_id": c} for c in customers]}

    async def write(self, rows):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            self.log.append(("rows failed",))
            raise self.error
        refused = [r for r in rows["cx_events"] if r["customer_id"] == self.refuse_for]
        stored = [r["customer_id"] for r in rows["cx_events"] if r not in refused]
        self.log.append(("rows", tuple(stored)))
        self.written += stored
        return sink_dead_letters([RejectedRow("cx_events", r, "Code: 53. Type mismatch") for r in refused], 0.0)

    async def run(self, fn, *args):
        self.ran.append((fn, args))
        return fn(*args)


class Inputs:
    def __init__(self, log: list, ends: dict) -> None:
        self.log = log
        self.assigned: set[TP] = {TP(t, p) for t in TOPIC.values() for p in (0, 1)}
        self.commits: list[dict] = []
        self.ends = ends                      # tp -> log end offset (the World's records)
        self.paused: set[TP] = set()

    def assignment(self):
        return set(self.assigned)

    async def start_offset(self, tp) -> int:
        return 0

    async def commit(self, offsets) -> bool:
        self.log.append(("commit", dict(offsets)))
        self.commits.append(dict(offsets))
        return True

    async def seek(self, tp, offset: int) -> None:
        self.log.append(("seek", tp, offset))

    async def log_ends(self, tps):
        return {tp: self.ends.get(tp, 0) for tp in tps}

    def log_end(self, tp) -> int | None:
        return self.ends.get(tp)

    async def first_offset_at(self, tp, offset: int):
        return None

    def last_committed(self, tp):
        return None

    def pause(self, tps) -> None:
        self.paused |= set(tps)

    def resume(self, tps) -> None:
        self.paused -= set(tps)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t
        self.mono = 1000.0

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.mono


class Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args))


def core_of(cls=Core) -> Core:
    core = build_core(SETTINGS)
    core.__class__ = cls
    return core


class PoisonCore(Core):
    """A core that raises on any batch holding a record of customer `poison`."""

    def process(self, records, load, *args, **kwargs):
        records = list(records)
        if any(r.key == b"poison" for r in records):
            raise RuntimeError("boom")
        return super().process(records, load, *args, **kwargs)


class UnserializableCore(Core):
    """A core whose score of customer `poison` cannot be serialized for publishing."""

    def process(self, records, load, *args, **kwargs):
        out = super().process(records, load, *args, **kwargs)
        for score in out.scores:
            if score["customer_id"] == "poison":
                score["churn_model"] = object()   # type: ignore[typeddict-item]
        return out


class ProcessSpyCore(Core):
    """Notes the customers of every batch it processes, in the shared log of its World."""
    log: list

    def process(self, records, load, *args, **kwargs):
        records = list(records)
        self.log.append(("process", tuple(r.key.decode() for r in records)))
        return super().process(records, load, *args, **kwargs)


class SweepSpyCore(Core):
    swept: list[list[str]]

    def sweep(self, states, now, *args, **kwargs):
        states = list(states)
        self.__dict__.setdefault("swept", []).append([s.customer_id for s in states])
        return super().sweep(states, now, *args, **kwargs)


class World:
    def __init__(self, core_class=Core, **config) -> None:
        self.log: list = []
        self.ends: dict[TP, int] = {}         # what the log holds: the records made so far
        self.store, self.outputs = Store(self.log), Outputs(self.log)
        self.rows, self.inputs = Rows(self.log), Inputs(self.log, self.ends)
        self.clock, self.metrics = Clock(RECEIVED_AT), Metrics()
        self.core = core_of(core_class)
        self.core.__dict__["log"] = self.log
        config.setdefault("align_idle_seconds", 0.0)   # a caught-up empty partition holds nothing back
        self.loop = WorkerLoop(self.core, LoopConfig(topic_for_type=SETTINGS.topic_for_type, **config),
                               store=self.store, outputs=self.outputs, rows=self.rows, inputs=self.inputs,
                               clock=self.clock, metrics=self.metrics, fetch_backtest_rows=lambda h, a: (None, []))

    def records(self, events: list[dict], partition_of: dict[str, int] | None = None) -> list[Delivered]:
        """Input records appended to their partitions' logs (customer -> partition, default 0)."""
        out = []
        for e in events:
            tp = TP(TOPIC[e["type"]], (partition_of or {}).get(e["customer_id"], 0))
            offset = self.ends.get(tp, 0)
            self.ends[tp] = offset + 1
            out.append(Delivered(tp, RawRecord(tp.topic, tp.partition, offset, e["customer_id"].encode(), raw(e))))
        return out

    def state(self, customer: str) -> CustomerState | None:
        return self.loop.load_state(customer)

    def deliver(self, delivered: list[Delivered], stale: int = 0) -> None:
        """Deliver a micro-batch and wait until its write (in flight when `deliver` returns) is
        complete."""
        async def go() -> None:
            await self.loop.deliver(delivered, stale)
            await self.loop.settle()
        run(go())


def run(coro):
    return asyncio.run(coro)


# --- emit order ------------------------------------------------------------------------------
def test_outputs_then_rows_then_flush_then_states():
    w = World()
    batch = w.records([touchpoint("a", csat=2), order("b"), touchpoint("a", when=at(hours=1)), complaint("b")])
    batch += w.records([order("b")])[:0] + [Delivered(TP(TOPIC["order"], 0),
                                                     RawRecord(TOPIC["order"], 0, 1, b"b", b"{not json"))]
    w.ends[TP(TOPIC["order"], 0)] = 2
    w.deliver(batch)

    # one or more micro-batches (event-time alignment may release them apart; a batch's sends
    # may go while the batch before is written); each state is stored after its customer's
    # score was sent, then rows with the customer written, then the producer flushed
    log = w.log
    kinds = [entry[0] for entry in log]
    assert kinds.count("rows") == kinds.count("flush") >= 1, log
    for i, entry in enumerate(log):
        if entry[0] != "state":
            continue
        cid = entry[1]
        rows = max(j for j in range(i) if log[j][0] == "rows" and cid in log[j][1])
        assert any(log[j] == ("score", cid) for j in range(rows)), log
        assert any(log[j][0] == "flush" for j in range(rows, i)), log
    assert {entry[1] for entry in w.log if entry[0] == "state"} == {"a", "b"}
    assert [d["reason"] for d in w.outputs.dead_letters] == ["invalid_json"]
    assert w.state("a").n == 2 and w.state("b").n == 2


def test_offsets_are_committed_only_for_emitted_batches_after_a_flush():
    w = World()
    run(w.loop.commit_completed_inputs())
    assert w.inputs.commits == []           # nothing applied yet: nothing to commit
    w.deliver(w.records([touchpoint("a"), touchpoint("a", when=at(hours=1))]))
    del w.log[:]
    run(w.loop.commit_completed_inputs())
    assert w.log == [("flush",), ("commit", {TP(TOPIC["touchpoint"], 0): 2})]


def test_records_after_a_skipped_one_are_dropped_and_the_partition_sought_back():
    w = World()
    batch = w.records([touchpoint("a"), touchpoint("a", when=at(hours=1)), touchpoint("a", when=at(hours=2))])
    tp = batch[0].tp
    run(w.loop.deliver([batch[0], batch[2]]))           # offset 1 never delivered
    # offset 0 was taken into the event-time buffer, not applied: the partition is read
    # again from the last applied offset and nothing of it is applied or committed yet
    assert ("seek", tp, 0) in w.log and w.state("a") is None and w.loop.merge.buffered() == 0
    assert w.loop.guard.next[tp] == 0
    run(w.loop.deliver(batch))                           # read again from 0
    assert w.state("a").n == 3 and w.loop.guard.next[tp] == 3


def test_consumer_lag_leaves_out_partitions_whose_log_end_is_unknown():
    w = World()
    w.deliver(w.records([touchpoint("a"), touchpoint("a", when=at(hours=1))]))
    w.ends[TP(TOPIC["touchpoint"], 0)] = 5          # the others: just reassigned, no log end yet
    w.loop.report_consumer_lag()
    [(name, (lags,))] = [c for c in w.metrics.calls if c[0] == "consumer_lag"]
    assert lags == {(TOPIC["touchpoint"], 0): 5}     # nothing committed yet: 5 - 0


# --- the emit guard: a failing record ------------------------------------------------------
def _poison_batch(w: World):
    return w.records([touchpoint("a"), touchpoint("poison"), order("b"), touchpoint("a", when=at(hours=1))])


@pytest.mark.parametrize("where", ["core", "rows", "publish"])
def test_a_failing_record_is_dead_lettered_and_the_rest_applied(where):
    """The core raising, its rows failing to build or its score failing to serialize for
    publishing: the record becomes a `processing_error` dead letter and leaves no trace, the
    others are applied, and the batch's offsets advance past all of them."""
    w = World({"core": PoisonCore, "publish": UnserializableCore}.get(where, Core))
    if where == "rows":
        w.rows.fail_for = "poison"
    w.deliver(_poison_batch(w))

    [dl] = w.outputs.dead_letters
    assert dl["reason"] == "processing_error"
    assert (dl["source_topic"], dl["partition"], dl["offset"]) == (TOPIC["touchpoint"], 0, 1)
    assert dl["error"].startswith({"core": "RuntimeError: boom", "rows": "ValueError: ", "publish": "TypeError: "}[where])
    assert w.state("a").n == 2 and w.state("b").n == 1
    assert w.state("poison") is None                     # not half-applied
    assert {s["customer_id"] for s in w.outputs.scores} == {"a", "b"}
    assert [s for s in w.outputs.scores if s["customer_id"] == "a"][-1]["events"] == 2
    assert "poison" not in w.rows.written and sorted(set(w.rows.written)) == ["a", "b"]
    consumed: dict[str, int] = {}
    for name, args in w.metrics.calls:   # per micro-batch (alignment may release the records in more than one)
        if name == "consumed":
            consumed[args[0]] = consumed.get(args[0], 0) + args[1]
    assert consumed == {TOPIC["touchpoint"]: 3, TOPIC["order"]: 1}
    assert ("deadlettered", (TOPIC["touchpoint"], "processing_error")) in w.metrics.calls
    run(w.loop.commit_completed_inputs())
    assert w.inputs.commits == [{TP(TOPIC["touchpoint"], 0): 3, TP(TOPIC["order"], 0): 1}]


def test_rows_refused_as_data_become_unstorable_dead_letters_after_the_rows():
    w = World()
    w.rows.refuse_for = "b"
    w.deliver(w.records([touchpoint("a"), order("b")]))
    [dl] = w.outputs.dead_letters
    assert (dl["reason"], dl["source_topic"]) == ("unstorable", "clickhouse.cx_events")
    assert orjson.loads(__import__("base64").b64decode(dl["original_b64"])) == {"customer_id": "b"}
    kinds = [e[0] for e in w.log]
    # (alignment may release "a" and "b" as two micro-batches, as the set order of partitions goes)
    assert kinds.index("rows") < kinds.index("deadletter") < w.log.index(("state", "b"))
    assert w.rows.written == ["a"] and w.state("b").n == 1    # the state keeps the event
    assert ("deadlettered", ("clickhouse.cx_events", "unstorable")) in w.metrics.calls


# --- event-time intake ------------------------------------------------------------------------
def test_records_are_applied_in_event_time_order_across_the_topics_of_a_partition_number():
    """A touchpoint (2 h) arrives before an order (1 h) of the same partition number: it is held
    while the order partition is known to have records not fetched yet, paused once it runs
    more than align_ahead_seconds ahead, and both go in event-time order when the order comes;
    offsets advance only for applied records."""
    w = World(align_ahead_seconds=1800.0)
    touch, orders = TP(TOPIC["touchpoint"], 0), TP(TOPIC["order"], 0)
    late = w.records([order("b", when=at(hours=1))])           # on the log, not fetched yet
    w.ends.update({tp: w.ends.get(tp, 0) for tp in w.inputs.assigned})
    w.loop.on_assigned(w.inputs.assignment())
    run(w.loop.watch_stalls())                                  # start offsets and log ends
    w.deliver(w.records([touchpoint("a", when=at(hours=2)), touchpoint("a", when=at(hours=3))]))
    assert w.rows.written == [] and w.store.states == {}
    assert w.loop.guard.next[touch] == 0 and w.loop.merge.buffered() == 2
    assert w.inputs.paused == {touch}                           # 1 h of event time ahead of itself > 30 min
    run(w.loop.commit_completed_inputs())
    assert w.inputs.commits == []

    w.deliver(late)
    assert w.rows.written == ["b", "a", "a"]                    # lowest event time first
    assert w.loop.guard.next == {**w.loop.guard.next, touch: 2, orders: 1}
    assert w.inputs.paused == set()


def test_a_held_record_goes_with_the_idle_timer_once_its_wait_is_over():
    w = World(align_idle_seconds=0.5)
    w.ends.update({tp: 0 for tp in w.inputs.assigned})
    w.loop.on_assigned(w.inputs.assignment())
    run(w.loop.watch_stalls())
    w.deliver(w.records([touchpoint("a")]))
    assert w.rows.written == []                                 # the other topics' partitions 0 ran empty just now
    w.clock.mono += 0.6
    run(w.loop.release_idle())
    assert w.rows.written == ["a"] and w.loop.guard.next[TP(TOPIC["touchpoint"], 0)] == 1


def test_a_live_record_does_not_wait_for_an_empty_partition_that_delivered_just_before_it():
    """A live stream: the order and complaint partitions delivered records a minute or two (of
    event time) before the touchpoint, so the touchpoint goes at once (within half the lateness
    bound of their last records), not after align_idle_seconds; one two lateness bounds later
    waits for the idle timer."""
    w = World(align_idle_seconds=0.5)
    assert w.loop.merge.in_order_slack_seconds == w.core.params.lateness_seconds / 2
    w.ends.update({tp: 0 for tp in w.inputs.assigned})
    w.loop.on_assigned(w.inputs.assignment())
    run(w.loop.watch_stalls())
    w.deliver(w.records([complaint("c", when=at()), order("b", when=at(hours=1 / 60)),
                         touchpoint("a", when=at(hours=2 / 60))]))
    assert w.rows.written == ["c", "b", "a"]                    # each within the slack of the others' last
    w.deliver(w.records([touchpoint("a", when=at(hours=3 / 60))]))
    assert w.rows.written == ["c", "b", "a", "a"]               # orders and complaints ran empty: no wait
    lateness = w.core.params.lateness_seconds
    w.deliver(w.records([touchpoint("a", when=at(hours=3 / 60 + 2 * lateness / 3600))]))
    assert w.rows.written == ["c", "b", "a", "a"]               # far after their last records: the idle wait
    w.clock.mono += 0.6
    run(w.loop.release_idle())
    assert w.rows.written == ["c", "b", "a", "a", "a"]


def test_the_stall_watchdog_skips_its_tick_while_a_batch_is_in_flight():
    async def scenario():
        w = World(stall_seconds=0.0)
        w.rows.gate = asyncio.Event()
        batch = asyncio.create_task(w.loop.deliver(w.records([touchpoint("a")])))
        await w.rows.entered.wait()
        w.ends[TP(TOPIC["order"], 0)] = 3                        # behind, no progress: a stall, but not now
        await w.loop.watch_stalls()
        assert not [e for e in w.log if e[0] == "seek"]
        w.rows.gate.set()
        await batch
        await w.loop.settle()                                    # the write completes: the offsets advance
        w.clock.mono += 1
        await w.loop.watch_stalls()
        assert ("seek", TP(TOPIC["order"], 0), 0) in w.log

    run(scenario())


# --- ownership after a revocation ----------------------------------------------------------
def test_sweep_and_fit_skip_customers_given_away():
    w = World()
    mine, gone = "mine", "gone"
    w.deliver(w.records([complaint(mine), complaint(gone)], {mine: 0, gone: 1}))
    revoked = {TP(t, 1) for t in TOPIC.values()}
    w.inputs.assigned -= revoked
    run(w.loop.on_revoked(revoked))
    gone_state = w.store.states[gone]
    del w.log[:]
    w.outputs.scores.clear()

    w.clock.t += 10 * 86400          # every acknowledgement deadline has passed
    run(w.loop.sweep())
    assert {s["customer_id"] for s in w.outputs.scores} == {mine}
    assert {a["customer_id"] for a in w.outputs.alerts} == {mine}
    assert ("state", gone) not in w.log and w.store.states[gone] is gone_state

    fitted = []
    original = worker_loop.fit_population_inputs
    worker_loop.fit_population_inputs = lambda inputs, prior: fitted.append([i.customer_id for i in inputs]) or prior
    try:
        run(w.loop.refit_population())
    finally:
        worker_loop.fit_population_inputs = original
    assert fitted == [[mine]]


def test_the_past_sla_gauge_is_recounted_after_a_revocation():
    w = World()
    w.deliver(w.records([complaint("mine"), complaint("gone")], {"mine": 0, "gone": 1}))
    w.clock.t += 10 * 86400
    run(w.loop.sweep())
    assert set(w.loop.past_sla) == {"mine", "gone"}
    revoked = {TP(t, 1) for t in TOPIC.values()}
    w.inputs.assigned -= revoked
    run(w.loop.on_revoked(revoked))
    run(w.loop.sweep())
    assert set(w.loop.past_sla) == {"mine"}
    last = [args[0] for name, args in w.metrics.calls if name == "complaints_past_sla"][-1]
    assert sum(last.values()) == 1


def test_a_revocation_drops_the_records_held_for_alignment_and_resumes_the_paused():
    w = World(align_ahead_seconds=1800.0)
    w.records([order("b", when=at(hours=1))])
    w.loop.on_assigned(w.inputs.assignment())
    w.deliver(w.records([touchpoint("a", when=at(hours=2)), touchpoint("a", when=at(hours=3))]))
    assert w.loop.merge.buffered() == 2 and w.inputs.paused
    w.inputs.assigned.clear()
    run(w.loop.on_revoked({TP(t, 0) for t in TOPIC.values()}))
    assert w.loop.merge.buffered() == 0 and w.inputs.paused == set() and w.loop.guard.next == {}


def test_a_revocation_waits_for_the_write_in_flight_and_flushes_before_the_group_rebalances():
    """The states of a batch whose write is in flight are stored and flushed (on the changelog)
    before `on_revoked` returns, so before the worker re-joins and the next owner recovers the
    table; its offsets do not advance (the next owner reads them again and they are duplicates)."""
    async def scenario():
        w = World()
        w.rows.gate = asyncio.Event()
        await w.loop.deliver(w.records([touchpoint("a")]))
        await w.rows.entered.wait()                              # the write is in flight
        revoking = asyncio.create_task(w.loop.on_revoked(set(w.inputs.assigned)))
        await asyncio.sleep(0.01)
        assert not revoking.done() and "a" not in w.store.states
        w.rows.gate.set()
        await revoking
        assert "a" in w.store.states
        assert w.log[-1] == ("flush",) and ("state", "a") in w.log
        assert w.loop.guard.to_commit() == {}

    run(scenario())


def test_a_revocation_while_the_worker_stops_does_not_wait_for_the_lock_the_drain_keeps():
    async def scenario():
        w = World()
        await w.loop.deliver(w.records([touchpoint("a")]))
        await w.loop.drain()
        assert w.loop.lock.locked()
        await asyncio.wait_for(w.loop.on_revoked(set(w.inputs.assigned)), 1.0)

    run(scenario())


def test_records_delivered_across_a_revocation_are_not_applied():
    """A micro-batch whose start offsets were being read when the partitions were revoked is of
    the old assignment: nothing of it is applied, no offset book starts from it."""
    async def scenario():
        w = World()
        asked, answer = asyncio.Event(), asyncio.Event()

        async def start_offset(tp) -> int:
            asked.set()
            await answer.wait()
            return 0
        w.inputs.start_offset = start_offset
        batch = asyncio.create_task(w.loop.deliver(w.records([touchpoint("a")])))
        await asked.wait()
        await w.loop.on_revoked(set(w.inputs.assigned))
        answer.set()
        await batch
        await w.loop.settle()
        assert w.rows.written == [] and "a" not in w.store.states
        assert w.loop.guard.next == {} and w.loop.merge.buffered() == 0

    run(scenario())


# --- the sweep ----------------------------------------------------------------------------------
def test_the_sweep_visits_every_owned_customer_in_bounded_chunks():
    w = World(SweepSpyCore, sweep_max=2)
    customers = [f"c{i}" for i in range(5)]
    w.deliver(w.records([touchpoint(c) for c in customers]))
    for _ in range(3):
        run(w.loop.sweep())
    swept = w.core.swept
    assert [len(chunk) for chunk in swept] == [2, 2, 1]
    assert sorted(c for chunk in swept for c in chunk) == customers
    assert w.loop.sweep_cursor == []
    run(w.loop.sweep())                    # the next pass starts over
    assert len(swept[-1]) == 2 and swept[-1] == swept[0]


def test_a_sweep_goes_in_slices_and_a_batch_waiting_for_the_lock_goes_between_them():
    class SliceSpyCore(Core):
        def sweep(self, states, now, *args, **kwargs):
            states = list(states)
            self.__dict__["log"].append(("sweep", tuple(s.customer_id for s in states)))
            return super().sweep(states, now, *args, **kwargs)

        def process(self, records, load, *args, **kwargs):
            records = list(records)
            self.__dict__["log"].append(("process", tuple(r.key.decode() for r in records)))
            return super().process(records, load, *args, **kwargs)

    async def scenario():
        w = World(SliceSpyCore, sweep_max=10, sweep_slice=2)
        await w.loop.deliver(w.records([touchpoint(c) for c in ("c0", "c1", "c2", "c3", "c4")]))
        await w.loop.settle()
        sweep = asyncio.create_task(w.loop.sweep())
        await asyncio.sleep(0)                  # the first slice is evaluated ...
        batch = asyncio.create_task(w.loop.deliver(w.records([touchpoint("c9", when=at(hours=1))])))
        await asyncio.gather(sweep, batch)      # ... the batch waits for the lock, not for the sweep
        await w.loop.settle()
        return [e for e in w.log if e[0] in ("sweep", "process")]

    log = run(scenario())
    sweeps = [e[1] for e in log if e[0] == "sweep"]
    assert sweeps == [("c0", "c1"), ("c2", "c3"), ("c4",)]
    c9 = log.index(("process", ("c9",)))
    assert log.index(("sweep", ("c0", "c1"))) < c9 < log.index(("sweep", ("c4",)))


def test_the_sweep_warns_before_a_deadline_passes():
    w = World()
    run(w.loop.deliver(w.records([complaint("a", when=at(0))])))    # 09:00 Monday, due 18:00
    w.clock.t += 6.8 * HOUR                                          # 15:48 stream time: past 75 %
    run(w.loop.sweep())
    assert [(a["type"], a["status"]) for a in w.outputs.alerts] == [("sla_at_risk", "firing")]
    assert w.log[-1] == ("state", "a")


def test_the_indexed_sweep_looks_only_at_customers_with_something_due():
    w = World(SweepSpyCore, sweep_recheck_seconds=86400.0)
    w.deliver(w.records([complaint("a", when=at(0)), touchpoint("b", when=at(0)), touchpoint("c", when=at(0))]))
    assert set(w.loop.sweep_index) == {"a", "b", "c"}          # every evaluated customer has its next check
    run(w.loop.sweep())
    assert getattr(w.core, "swept", []) == []                   # nothing due: the tick evaluates nobody
    w.clock.t += 6.8 * HOUR                                     # a's answer is at risk (75 % of its time)
    run(w.loop.sweep())
    assert w.core.swept == [["a"]]                              # b and c: no deadline, drift re-checked in a day
    assert [(a["type"], a["status"]) for a in w.outputs.alerts] == [("sla_at_risk", "firing")]


def test_the_indexed_sweep_finds_stored_customers_it_does_not_hold():
    w = World(SweepSpyCore, sweep_recheck_seconds=3600.0, sweep_max=2)
    w.deliver(w.records([touchpoint(c) for c in "abc"]))
    assert w.loop.sweep_index is not None
    for cid in "abc":
        w.loop.sweep_index.discard(cid)                         # e.g. recovered from the changelog
    run(w.loop.sweep())
    run(w.loop.sweep())
    assert sorted(c for chunk in w.core.swept for c in chunk) == ["a", "b", "c"]
    assert set(w.loop.sweep_index) == {"a", "b", "c"}


# --- operator actions ---------------------------------------------------------------------------
def test_an_action_that_crashes_the_core_is_dead_lettered_and_the_agent_goes_on():
    class Broken(Core):
        def process_actions(self, *args, **kwargs):
            raise KeyError("case")

    w = World(Broken)
    rec = RawRecord("cx.actions", 0, 7, b"a", b'{"type": "action"}')
    run(w.loop.apply_action(rec))
    [dl] = w.outputs.dead_letters
    assert (dl["reason"], dl["source_topic"], dl["offset"]) == ("processing_error", "cx.actions", 7)
    assert dl["error"] == "KeyError: 'case'"


def test_an_invalid_action_is_dead_lettered_with_its_reason():
    w = World()
    run(w.loop.apply_action(RawRecord("cx.actions", 0, 0, b"a", b"{nope")))
    assert [d["reason"] for d in w.outputs.dead_letters] == ["invalid_json"]
    assert ("consumed", ("cx.actions", 1)) in w.metrics.calls


# --- erasure, live backtest ------------------------------------------------------------------
def test_erasure_stores_a_marker_and_tombstones_the_score():
    w = World()
    w.deliver(w.records([touchpoint("a")]))
    assert w.loop.customer_score("a")["events"] == 1
    run(w.loop.erase(b"a", T0.timestamp() + 60))
    assert w.state("a").n == 0 and w.outputs.deleted == [b"a"]
    assert w.loop.customer_score("a") is None


def test_an_erasure_request_whose_key_names_no_customer_is_dead_lettered_and_erases_nothing():
    """A null or empty key, or a key that is no UTF-8 text, names no customer: the request is
    dead-lettered with the reason (a null key used to be skipped silently, a key not UTF-8
    raised in the erasure agent). Any other key is erased as given."""
    w = World()
    w.deliver(w.records([touchpoint("a")]))
    for key in (None, b"", b"\xff\xfe"):
        run(w.loop.erase_request(RawRecord("cx.erasures", 0, 7, key, b'{"requested_at": "2026-03-02T09:01:00+00:00"}'),
                                 T0.timestamp() + 60))
    assert [(d["reason"], d["source_topic"], d["offset"]) for d in w.outputs.dead_letters] == \
        [("wrong_key", "cx.erasures", 7), ("wrong_key", "cx.erasures", 7), ("invalid_id", "cx.erasures", 7)]
    assert w.state("a").n == 1 and w.outputs.deleted == [] and set(w.store.states) == {"a"}
    run(w.loop.erase_request(RawRecord("cx.erasures", 0, 8, b"a", b"{}"), T0.timestamp() + 60))
    assert w.state("a").n == 0 and w.outputs.deleted == [b"a"] and len(w.outputs.dead_letters) == 3


def test_the_live_backtest_runs_in_the_sink_only_once_it_is_open():
    w = World()
    w.rows.is_open = False
    run(w.loop.live_backtest())
    assert w.rows.ran == []
    w.rows.is_open = True
    run(w.loop.live_backtest())
    assert len(w.rows.ran) == 1 and [c for c in w.metrics.calls if c[0] == "churn_backtest"]


# --- the overlapped ClickHouse write -----------------------------------------------------------
def test_batches_emitted_while_a_write_is_in_flight_go_together_in_the_next_write():
    """Batch 1's write is held; batches 2 and 3 are processed and their outputs sent without
    waiting for it (`deliver` returns), their states served to the next loads. Nothing of 2 or
    3 is written, stored or committed before batch 1 is complete; then their rows go in one
    write, the producer is flushed, their states stored (the later one's for a customer of
    both) and the offsets advance to the end. Outputs and stored states are the serial order's."""
    events = [[touchpoint("a"), touchpoint("b")],
              [touchpoint("a", when=at(hours=1)), touchpoint("c", when=at(hours=1))],
              [touchpoint("a", when=at(hours=2)), touchpoint("d", when=at(hours=2))]]

    async def scenario():
        w = World(ProcessSpyCore)
        tp = TP(TOPIC["touchpoint"], 0)
        w.rows.gate = asyncio.Event()
        batches = [w.records(b) for b in events]
        await w.loop.deliver(batches[0])
        await w.rows.entered.wait()
        await w.loop.deliver(batches[1])                            # returns: no wait for batch 1's write
        await w.loop.deliver(batches[2])
        assert w.loop.write_in_flight() and len(w.loop.queue) == 2
        assert w.state("a").n == 3                                  # batch 3 computed from batch 2's state
        assert [s["customer_id"] for s in w.outputs.scores] == ["a", "b", "a", "c", "a", "d"]
        assert not [e for e in w.log if e[0] in ("state", "rows", "flush")]
        await w.loop.commit_completed_inputs()
        assert w.inputs.commits == [] and w.loop.guard.next[tp] == 0

        w.rows.gate.set()
        await w.loop.settle()
        assert not w.loop.queue and not w.loop.write_in_flight()
        after = [e for e in w.log if e[0] in ("rows", "flush", "state")]
        assert after == [("rows", ("a", "b")), ("flush",), ("state", "a"), ("state", "b"),
                         ("rows", ("a", "c", "a", "d")), ("flush",), ("state", "a"), ("state", "c"), ("state", "d")]
        assert w.loop.guard.next[tp] == 6
        await w.loop.commit_completed_inputs()
        assert w.inputs.commits == [{tp: 6}]
        return w

    grouped = asyncio.run(scenario())
    serial = World()
    for batch in events:
        serial.deliver(serial.records(batch))
    assert grouped.outputs.sent == serial.outputs.sent
    assert grouped.store.raw == serial.store.raw
    assert grouped.state("a").n == 3


def test_a_failed_write_stores_and_commits_nothing_of_the_batches_waiting_for_the_next():
    """Batch 1's write fails while batch 2 waits to be written after it: neither's states are
    stored nor offsets advanced, and the next batch raises instead of going out."""
    events = [[touchpoint("a")], [touchpoint("b", when=at(hours=1))], [touchpoint("c", when=at(hours=2))]]

    async def scenario():
        w = World()
        tp = TP(TOPIC["touchpoint"], 0)
        w.rows.gate = asyncio.Event()
        w.rows.error = RuntimeError("ClickHouse closed")
        batches = [w.records(b) for b in events]
        await w.loop.deliver(batches[0])
        await w.rows.entered.wait()
        await w.loop.deliver(batches[1])
        assert len(w.loop.queue) == 1
        w.rows.gate.set()
        with pytest.raises(RuntimeError, match="ClickHouse closed"):
            await w.loop.settle()
        with pytest.raises(RuntimeError, match="ClickHouse closed"):
            await w.loop.deliver(batches[2])
        assert not [e for e in w.log if e[0] == "state"]
        assert w.loop.guard.next.get(tp, 0) == 0
        assert "c" not in [s["customer_id"] for s in w.outputs.scores]

    asyncio.run(scenario())


def _kinds_after(log: list, i: int) -> list[str]:
    return [e[0] for e in log[i:]]


def test_the_next_batch_is_processed_while_the_write_is_in_flight_and_waits_for_it_to_complete():
    """Batch 1's write is held: `deliver` returns with it in flight, batch 2 is processed (from
    batch 1's states) and its outputs sent meanwhile; nothing of batch 1 is stored or committed,
    and nothing of batch 2 written, stored or committed, until batch 1's write completes; then
    both complete in order. (Batch 2's rows are beyond `write_group_rows`, so it waits for the
    write instead of joining the next one: the test below.)"""
    events = [[touchpoint("a"), touchpoint("b")], [touchpoint("a", when=at(hours=1)), touchpoint("c", when=at(hours=1))]]

    async def scenario():
        w = World(ProcessSpyCore, write_group_rows=0)
        tp = TP(TOPIC["touchpoint"], 0)
        w.rows.gate = asyncio.Event()
        first, second = w.records(events[0]), w.records(events[1])
        await w.loop.deliver(first)
        assert w.loop.write_in_flight()                             # returned with the write in flight
        await w.rows.entered.wait()
        later = asyncio.create_task(w.loop.deliver(second))
        for _ in range(20):
            await asyncio.sleep(0)
        assert ("process", ("a", "c")) in w.log                    # batch 2 processed meanwhile ...
        assert not later.done()                                     # ... and waits for batch 1's write
        assert not [e for e in w.log if e[0] in ("state", "rows", "flush")]
        assert w.loop.guard.next[tp] == 0
        await w.loop.commit_completed_inputs()
        assert w.inputs.commits == []
        # batch 2's scores went out: a score does not wait for the write before its batch
        assert [s["customer_id"] for s in w.outputs.scores] == ["a", "b", "a", "c"]

        w.rows.gate.set()
        await later
        await w.loop.settle()
        kinds = [e[0] for e in w.log]
        rows1, rows2 = [i for i, k in enumerate(kinds) if k == "rows"]
        # batch 1: rows, flush, states; only then batch 2's rows, flush, states
        assert _kinds_after(w.log, rows1)[:4] == ["rows", "flush", "state", "state"]
        assert rows2 == rows1 + 4
        assert _kinds_after(w.log, rows2) == ["rows", "flush", "state", "state"]
        assert w.loop.guard.next[tp] == 4
        await w.loop.commit_completed_inputs()
        assert w.inputs.commits == [{tp: 4}]
        return w

    overlapped = asyncio.run(scenario())
    serial = World()
    tp = TP(TOPIC["touchpoint"], 0)
    for batch in events:
        serial.deliver(serial.records(batch))
    assert overlapped.outputs.sent == serial.outputs.sent           # the serial order's outputs, exactly
    assert overlapped.store.raw == serial.store.raw
    assert overlapped.state("a").n == 2 and serial.loop.guard.next[tp] == 4


def test_a_failed_write_stops_every_later_batch():
    """The write of batch 1 raises: its states are not stored nor its offsets advanced, and
    every later batch fails before sending anything (nothing overtakes it); the drain commits
    nothing."""
    async def scenario():
        w = World()
        tp = TP(TOPIC["touchpoint"], 0)
        w.rows.error = RuntimeError("sink closed during insert cx_events")
        await w.loop.deliver(w.records([touchpoint("a")]))          # returns with the write in flight
        with pytest.raises(RuntimeError, match="sink closed"):
            await w.loop.settle()
        w.rows.error = None                                         # a later write would succeed: no matter
        sent = len(w.outputs.scores)
        for hours in (1, 2):
            with pytest.raises(RuntimeError, match="sink closed"):
                await w.loop.deliver(w.records([touchpoint("b", when=at(hours=hours))]))
        assert len(w.outputs.scores) == sent                        # nothing of the later batches went out
        assert w.store.raw == {} and ("rows failed",) in w.log and not [e for e in w.log if e[0] == "rows"]
        assert w.loop.guard.next[tp] == 0
        await w.loop.drain()
        assert w.inputs.commits == []

    run(scenario())


def test_a_write_failing_under_the_next_batch_leaves_its_outputs_to_be_repeated():
    """Batch 2's outputs went out while batch 1 was written; batch 1's write then fails: batch 2
    fails too, and neither's states are stored nor offsets advanced. Both are delivered again
    after the restart and their outputs repeated (the at-least-once repeat the compacted score
    topic and the consumers absorb; docs/fault-tolerance.md). Batch 2 waits for batch 1's
    write here (`write_group_rows`); waiting to be written after it, the same holds (above)."""
    async def scenario():
        w = World(write_group_rows=0)
        tp = TP(TOPIC["touchpoint"], 0)
        w.rows.gate = asyncio.Event()
        w.rows.error = RuntimeError("sink closed during insert cx_events")
        await w.loop.deliver(w.records([touchpoint("a")]))
        await w.rows.entered.wait()
        later = asyncio.create_task(w.loop.deliver(w.records([touchpoint("b", when=at(hours=1))])))
        for _ in range(20):
            await asyncio.sleep(0)
        assert [s["customer_id"] for s in w.outputs.scores] == ["a", "b"]
        w.rows.gate.set()
        with pytest.raises(RuntimeError, match="sink closed"):
            await later
        assert w.store.raw == {} and w.loop.guard.next[tp] == 0
        await w.loop.drain()
        assert w.inputs.commits == []

    run(scenario())


def test_an_erasure_waits_for_the_write_in_flight():
    """An erasure arriving while a batch of the customer is being written: the batch's state
    is stored first, then the marker over it (not the batch's state over the marker)."""
    async def scenario():
        w = World()
        w.rows.gate = asyncio.Event()
        await w.loop.deliver(w.records([touchpoint("a")]))
        erase = asyncio.create_task(w.loop.erase(b"a", RECEIVED_AT))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not erase.done()
        w.rows.gate.set()
        await erase
        await w.loop.settle()
        assert [e for e in w.log if e[0] == "state"] == [("state", "a"), ("state", "a")]
        assert w.store.states["a"].erased == RECEIVED_AT and w.store.states["a"].n == 0

    run(scenario())


# --- drain on stop ---------------------------------------------------------------------------
def test_drain_waits_for_the_batch_in_flight_and_commits_it():
    async def scenario():
        w = World()
        w.rows.gate = asyncio.Event()
        batch = asyncio.create_task(w.loop.deliver(w.records([touchpoint("a"), touchpoint("b")])))
        await w.rows.entered.wait()
        drain = asyncio.create_task(w.loop.drain())
        for _ in range(20):
            await asyncio.sleep(0)
        assert batch.done()                # the agent's delivery returned with the write in flight
        assert not drain.done() and w.inputs.commits == []
        w.rows.gate.set()
        await drain
        assert w.inputs.commits == [{TP(TOPIC["touchpoint"], 0): 2}]
        assert w.log.index(("flush",)) < w.log.index(("commit", w.inputs.commits[0]))
        assert w.loop.lock.locked()        # nothing starts after the drain
        sweep = asyncio.create_task(w.loop.sweep())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not sweep.done()
        sweep.cancel()

    run(scenario())


def test_drain_gives_up_on_a_stuck_batch_without_committing_it():
    async def scenario():
        w = World(drain_seconds=0.01)
        w.rows.gate = asyncio.Event()
        batch = asyncio.create_task(w.loop.deliver(w.records([touchpoint("a")])))
        await w.rows.entered.wait()
        await w.loop.drain()
        assert w.inputs.commits == []
        batch.cancel()

    run(scenario())


def generated_records(w: World) -> list[Delivered]:
    """A generated stream of 120 customers over 40 days (ending at the processing clock) as
    records of partition 0 of the World's logs."""
    from pipeline.tools.generator import generate

    stream = generate(customers=120, days=40, seed=2, invalid_ratio=0.0, duplicate_ratio=0.0,
                      end=datetime.fromtimestamp(RECEIVED_AT, timezone.utc))
    delivered = []
    for r in stream.records:
        tp = TP(TOPIC[r.kind], 0)
        offset = w.ends.get(tp, 0)
        w.ends[tp] = offset + 1
        delivered.append(Delivered(tp, RawRecord(tp.topic, 0, offset, r.key, r.value)))
    return delivered


def test_the_wall_clock_population_refit_is_the_fit_of_the_owned_customers_gathered_in_slices(monkeypatch):
    """The worker's re-fit gathers the first customers by id a slice at a time (the loop turns
    between slices) and fits in a thread: the same parameters as `fit_population` over every
    owned state at once, with the customer bound applied the same way."""
    from pipeline.domain import churn

    w = World()
    delivered = generated_records(w)
    w.deliver(delivered)
    owned = w.loop.owned_states(list(w.store.keys()))
    assert len(owned) == 120

    def ticking() -> float:   # each state gathered takes 5 ms: a slice is a few customers
        w.clock.mono += 0.005
        return w.clock.mono
    monkeypatch.setattr(w.clock, "monotonic", ticking)
    turns = []
    real_sleep = asyncio.sleep

    async def sleep(delay, *args, **kwargs):
        turns.append(delay)
        return await real_sleep(delay, *args, **kwargs)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    for bound in (churn.POPULATION_MAX_CUSTOMERS, 80):
        monkeypatch.setattr(worker_loop, "POPULATION_MAX_CUSTOMERS", bound)
        prior = w.core.population
        want = churn.fit_population(owned, prior, as_of=w.loop.now(), max_customers=bound)
        run(w.loop.refit_population())
        assert w.core.population == want and want.fitted_on > 0 and want != prior
    assert len(turns) >= 20   # the loop had turns while the inputs were gathered


class Populations:
    """The PopulationStore port in memory."""

    def __init__(self) -> None:
        self.saved: list = []

    def save(self, params, fitted_at: float) -> None:
        self.saved.append((fitted_at, params))

    def load(self):
        return max(self.saved, key=lambda s: s[0])[1] if self.saved else None


def test_a_restarted_worker_scores_with_its_last_refit_not_the_priors():
    """A re-fit's parameters are stored; a new worker over the same store reads the latest
    back before its first batch (its configured horizon stays), where it used to serve the
    priors until its first re-fit an interval after start-up."""
    from dataclasses import replace as replaced

    w = World()
    populations = Populations()
    w.loop.populations = populations   # nothing stored yet: no read-back for this one
    delivered = generated_records(w)
    w.deliver(delivered[:-1])
    run(w.loop.refit_population())
    fitted = w.core.population
    assert fitted.fitted_on > 0 and [p for _, p in populations.saved] == [fitted]

    restarted = World()
    restarted.loop.populations, restarted.loop.read_back_done = populations, False
    restarted.core.use_population(replaced(restarted.core.population, horizon_days=14.0))
    assert restarted.core.population.r != fitted.r
    restarted.deliver(delivered[-1:])
    assert restarted.core.population == replaced(fitted, horizon_days=14.0)


def test_a_refit_that_kept_the_priors_is_not_stored():
    w = World()
    populations = Populations()
    w.loop.populations = populations
    w.deliver(w.records([complaint("a"), touchpoint("b")]))   # too few customers to fit
    run(w.loop.refit_population())
    assert w.core.population.fitted_on == 0 and populations.saved == []


def customers_of_partition_1() -> list[dict]:
    """60 customers with two orders each, weeks apart: enough to fit a population on."""
    return [order(f"o{i}", when=at(days=-30 - i % 7)) for i in range(60)] + [
        order(f"o{i}", when=at(days=-(i % 11))) for i in range(60)]


def test_workers_sharing_the_store_serve_the_population_the_owner_of_partition_0_fitted():
    """Two workers over one store of parameters (a shared ClickHouse: the partition count is
    known). Only the owner of input partition 0 re-fits, on its customers; the other does not
    fit on its own and, on its timer, serves what the owner stored (its horizon kept), and
    makes every customer due for a sweep when that changed. Each fitting its own half, one
    customer's risk depended on which worker owned it (up to 0.04 on a generated stream)."""
    from dataclasses import replace as replaced

    populations = Populations()
    owner, other = World(partitions=2), World(partitions=2, sweep_recheck_seconds=3600.0)
    for w in (owner, other):
        w.loop.populations = populations
    owner.inputs.assigned = {TP(t, 0) for t in TOPIC.values()}
    other.inputs.assigned = {TP(t, 1) for t in TOPIC.values()}
    owner.deliver(generated_records(owner))
    events = customers_of_partition_1()
    other.deliver(other.records(events, partition_of={f"o{i}": 1 for i in range(60)}))
    other.core.use_population(replaced(other.core.population, horizon_days=14.0))
    priors = other.core.population

    run(other.loop.refit_population())
    assert other.core.population == priors and populations.saved == []   # not the fitter
    run(other.loop.follow_population())
    assert other.core.population == priors   # nothing stored yet

    run(owner.loop.refit_population())
    fitted = owner.core.population
    assert fitted.fitted_on > 0 and [p for _, p in populations.saved] == [fitted]
    run(owner.loop.follow_population())
    assert owner.core.population == fitted and len(populations.saved) == 1   # the fitter does not read

    index, now = other.loop.sweep_index, other.loop.now()
    assert index is not None

    def later() -> None:   # every customer's next check an hour ahead
        for cid in [f"o{i}" for i in range(60)]:
            index.schedule(cid, now + 3600)
    later()
    run(other.loop.follow_population())
    assert other.core.population == replaced(fitted, horizon_days=14.0)
    assert len(index.due(now)) == 60   # every customer of the other worker is due for a sweep
    later()
    run(other.loop.follow_population())   # unchanged: nothing to do
    assert other.core.population == replaced(fitted, horizon_days=14.0) and index.due(now) == []

    # partition 0 moves to the other worker: it re-fits from then on
    other.inputs.assigned |= {TP(t, 0) for t in TOPIC.values()}
    run(other.loop.refit_population())
    assert len(populations.saved) == 2 and other.core.population.fitted_on > 0


def test_workers_that_cannot_share_the_store_each_refit_their_own():
    """With the partition count unknown (an embedded chDB, one process's), every worker
    re-fits, whatever partitions it owns, and does not read another's fits on the timer."""
    populations = Populations()
    w = World()
    w.loop.populations = populations
    w.inputs.assigned = {TP(t, 1) for t in TOPIC.values()}
    events = customers_of_partition_1()
    w.deliver(w.records(events, partition_of={f"o{i}": 1 for i in range(60)}))
    run(w.loop.refit_population())
    own = w.core.population
    assert len(populations.saved) == 1 and own.fitted_on > 0
    from dataclasses import replace

    populations.save(replace(own, r=own.r * 2), fitted_at=RECEIVED_AT + 60)   # another worker's, later
    run(w.loop.follow_population())
    assert w.core.population == own


# --- alerts a crash left behind ----------------------------------------------------------------
def test_churn_alerts_a_crash_left_behind_are_withdrawn_once_the_customer_is_evaluated_past_them():
    """A worker wrote a batch's churn alerts and was killed before storing the batch's states.
    The restarted worker (same stored states) reads, before its first batch, the churn alerts
    ClickHouse holds firing for its customers whose states do not hold them; once it has
    evaluated such a customer as of the alert's instant without firing it again, it resolves
    it as withdrawn, in that batch, and moves the customer's episode count past it (the next
    episode gets a new id). An alert the state holds and a customer fed from another worker's
    partition are left alone; a customer with no state ("nobody") gets no record unless its
    records come (the next test)."""
    from pipeline.domain.alerts import numbered_alert_id
    from pipeline.domain.left_behind_alerts import WITHDRAWN_ACTION, StoredAlert

    before = World()
    before.deliver(before.records([touchpoint("a"), touchpoint("b"), touchpoint("d"), touchpoint("c")],
                                  partition_of={"c": 1}))
    held = before.store.states["b"]
    held.alerts["churn"] = [numbered_alert_id("b", "churn", 1), "warning", held.wm]
    held.churn_episodes = 1
    before.store.store("b", held)

    w = World()                                       # the restarted worker: the stored states, partition 0 only
    w.store.raw = dict(before.store.raw)
    w.ends.update(before.ends)
    w.inputs.assigned = {TP(t, 0) for t in TOPIC.values()}

    async def committed(tp) -> int:                   # the first worker's batch was committed
        return before.ends.get(tp, 0)
    w.inputs.start_offset = committed                 # type: ignore[method-assign]
    fired = {"a": T0.timestamp() + HOUR, "b": T0.timestamp() + HOUR, "c": T0.timestamp() + HOUR,
             "d": T0.timestamp() + 50 * HOUR, "nobody": T0.timestamp()}
    left = {cid: StoredAlert(cid, numbered_alert_id(cid, "churn", 1), "critical", "gold", t)
            for cid, t in fired.items()}
    asked = []

    def never_resolved() -> list[StoredAlert]:   # what ClickHouse holds: the resolutions written count
        asked.append(1)
        resolved = {a["alert_id"] for a in w.outputs.alerts if a["status"] == "resolved"}
        return [a for a in left.values() if a.alert_id not in resolved]
    w.loop.fetch_open_alerts = never_resolved
    w.deliver(w.records([touchpoint("a", when=at(hours=2)), touchpoint("d", when=at(hours=2))]))

    # a: evaluated as of 2 h, past its alert of 1 h, without firing it again: withdrawn in this batch
    assert [(a["customer_id"], a["alert_id"], a["status"], a["recommended_action"]) for a in w.outputs.alerts] == [
        ("a", left["a"].alert_id, "resolved", WITHDRAWN_ACTION)]
    withdrawal = w.outputs.alerts[0]
    assert withdrawal["severity"] == "critical" and withdrawal["tier"] == "gold"
    assert withdrawal["reasons"][0].startswith("withdrawn")
    assert w.store.states["a"].churn_episodes == 1 and w.store.states["a"].n == 2
    assert w.store.states["d"].churn_episodes == 0            # its alert is of 50 h: not evaluated past it yet
    assert w.state("b").alerts["churn"][0] == left["b"].alert_id and "b" not in w.store.states   # held: left alone
    assert w.state("c").churn_episodes == 0 and "c" not in w.store.states                        # another worker's
    # d: withdrawn once evaluated past its alert; the read happens once per assignment
    w.deliver(w.records([touchpoint("d", when=at(hours=51))]))
    assert [a["customer_id"] for a in w.outputs.alerts] == ["a", "d"] and w.store.states["d"].churn_episodes == 1
    assert asked == [1]
    run(w.loop.on_revoked(set()))
    w.loop.on_assigned(set())
    w.deliver(w.records([touchpoint("a", when=at(hours=52)), touchpoint("d", when=at(hours=52))]))
    assert asked == [1, 1] and len(w.outputs.alerts) == 2   # withdrawn once


def test_a_churn_alert_of_a_customer_whose_first_batch_a_crash_undid_is_withdrawn_by_the_redelivery():
    """The crash undid the customer's very first batch: ClickHouse holds its churn alert, the
    store no state at all. The redelivery makes the state anew; once it has evaluated the
    customer past the alert's instant without firing it again, the alert is withdrawn, as for
    a customer with a stored state (before, a customer with no state kept such an alert firing
    for good). Its next episode gets a new id."""
    from pipeline.domain.alerts import numbered_alert_id
    from pipeline.domain.left_behind_alerts import WITHDRAWN_ACTION, StoredAlert

    w = World()
    left = StoredAlert("new", numbered_alert_id("new", "churn", 1), "warning", "standard", T0.timestamp() + HOUR)
    assert w.state("new") is None
    w.loop.fetch_open_alerts = lambda: [left]
    w.deliver(w.records([touchpoint("new", when=at(hours=2))]))
    assert [(a["customer_id"], a["alert_id"], a["status"], a["recommended_action"]) for a in w.outputs.alerts] == [
        ("new", left.alert_id, "resolved", WITHDRAWN_ACTION)]
    assert w.store.states["new"].churn_episodes == 1 and w.store.states["new"].n == 1
    assert w.loop.left_behind.waiting == {}


def test_a_failed_recovery_a_crash_left_behind_is_withdrawn_when_the_redelivery_sees_it_recovered():
    """The lost batch held the complaint's dissatisfied resolution: it fired the failed recovery
    (the complaint's episode 1), wrote it and was killed before storing the state. The redelivered
    batch also holds the satisfied resolution that came next, so the failure never stands when
    the customer is evaluated and the episode is not fired again. It is withdrawn (a resolved
    failed_recovery record naming the complaint), and the complaint's next failure gets a new id
    (before, it stayed firing in ClickHouse and on cx.alerts for good)."""
    from pipeline.domain.alerts import numbered_alert_id
    from pipeline.domain.left_behind_alerts import WITHDRAWN_ACTION, StoredAlert
    from pipeline.domain.vocabulary import FAILED_RECOVERY

    before = World()
    before.deliver(before.records([complaint("a")]))
    w = World()                                       # the restarted worker: the stored states
    w.store.raw = dict(before.store.raw)
    w.ends.update(before.ends)

    async def committed(tp) -> int:
        return before.ends.get(tp, 0)
    w.inputs.start_offset = committed                 # type: ignore[method-assign]
    fired = numbered_alert_id("a", "rec:k1", 1)
    w.loop.fetch_open_alerts = lambda: [StoredAlert("a", fired, "warning", "standard", T0.timestamp() + HOUR,
                                                    FAILED_RECOVERY, "k1")]
    w.deliver(w.records([complaint("a", when=at(hours=1), status="resolved", satisfied=False),
                         complaint("a", when=at(hours=2), status="resolved", satisfied=True)]))
    recovery = [a for a in w.outputs.alerts if a["type"] == "failed_recovery"]
    assert [(a["alert_id"], a["status"], a["complaint_id"], a["recommended_action"]) for a in recovery] == [
        (fired, "resolved", "k1", WITHDRAWN_ACTION)]
    assert [r.recovery_episodes for r in w.store.states["a"].complaints] == [1] and w.loop.left_behind.waiting == {}
    # reopened: the complaint's second failure, under a new id
    w.deliver(w.records([complaint("a", when=at(hours=3), status="reopened")]))
    again = [a for a in w.outputs.alerts if a["type"] == "failed_recovery"][1:]
    assert [(a["status"], a["alert_id"]) for a in again] == [("firing", numbered_alert_id("a", "rec:k1", 2))]


def test_the_alerts_left_behind_are_compared_with_the_states_a_slice_at_a_time():
    """Each never-resolved alert costs a state decode: the comparison gives the event loop a turn
    after each TICK_LOAD_TURN_SECONDS of it (35,000 alerts in one go held the loop 2.0-2.4 s,
    bench/left_behind_stall.py). Here every state read takes that long by the clock: the loop
    gets a turn between the alerts, and all are judged as in one go."""
    from pipeline.domain.alerts import numbered_alert_id
    from pipeline.domain.left_behind_alerts import StoredAlert

    before = World()
    before.deliver(before.records([touchpoint(c) for c in ("a", "b", "c")]))
    w = World()
    w.store.raw = dict(before.store.raw)
    load = w.loop.load_state

    def slow_load(cid):
        w.clock.mono += worker_loop.TICK_LOAD_TURN_SECONDS
        return load(cid)
    w.loop.load_state = slow_load                 # type: ignore[method-assign]
    w.loop.fetch_open_alerts = lambda: [StoredAlert(c, numbered_alert_id(c, "churn", 1), "warning", "standard", 0.0)
                                        for c in ("a", "b", "c")]
    turns = []

    async def go() -> None:
        async def probe() -> None:
            while True:
                turns.append(len(w.loop.left_behind.waiting))
                await asyncio.sleep(0)
        task = asyncio.create_task(probe())
        await asyncio.sleep(0)
        await w.loop.find_left_behind()
        task.cancel()
    run(go())
    assert len(turns) >= 4                        # a turn after each of the three alerts, and before
    assert sorted(w.loop.left_behind.waiting) == ["a", "b", "c"]


def test_a_failing_read_of_the_open_numbered_alerts_withdraws_nothing_and_the_batch_goes_on():
    w = World()

    def down():
        raise ConnectionError("clickhouse is down")
    w.loop.fetch_open_alerts = down
    w.deliver(w.records([touchpoint("a")]))
    assert w.state("a").n == 1 and w.outputs.alerts == [] and len(w.outputs.scores) == 1
