"""The Faust worker — the composition root that wires the core to Kafka and ClickHouse.

One agent consumes the three co-partitioned input topics (key = customer_id) in
micro-batches (`stream.take_events`). For each batch it: decodes and applies the events
through `pipeline.service.processor.Core` against the customer-state table; writes each touched
customer's state once (coalesced changelog writes); publishes one score per touched
customer, alert changes and dead letters; then writes the ClickHouse rows and returns
only once they are durable, so the batch's offsets are committed only after that.
Input offsets are committed by this module, not by Faust's acks (see
pipeline/service/offset_guard.py for why): records are applied strictly in offset order per
partition, and a record at or below a customer's last applied offset is a redelivery.
Records are applied in event-time order across the three topics' partitions of the same
number (pipeline/service/event_time_merge.py): a worker catching up after an outage does
not run ahead on the fastest-read topic and reject the others as too late.
A timer sweeps the table (bounded slice per tick) for time-driven rules: SLA deadlines
passing and customers going quiet. Web views: /healthz, /metrics, /customers/{id}.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import orjson
from aiohttp.web import Response

from agents import consumer_flow, kafka_compat
from pipeline.service import recovery_check
from pipeline.adapters.clickhouse import rows as ch_rows
from pipeline.adapters.clickhouse.queries import live_backtest_rows
from pipeline.adapters.clickhouse.sink import sink_dead_letters
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.bootstrap import build_core, build_sink
from pipeline.config import Settings, load
from pipeline.tools.erasure import requested_at as erasure_requested_at
from pipeline.adapters.kafka.kafka_io import first_offset_at
from pipeline.adapters.observability.metrics import METRICS, render
from pipeline.service.offset_guard import OffsetGuard
from pipeline.service.emit_guard import PreparedBatch, guarded_batch, prepare
from pipeline.service.processor import OFFSET_SLOT, BatchResult, Core, RawRecord, dead_letter, event_time
from pipeline.service.event_time_merge import EventTimeMerge
from pipeline.domain.scoring import profile, score_record
from pipeline.service.live_backtest import refresh_live_backtest
from pipeline.domain.state import CustomerState
from pipeline.domain.stream_clock import StreamClock

log = logging.getLogger("cxpulse.worker")

settings: Settings = load()
core: Core = build_core(settings)

# aiokafka 0.14.0 forgets its member id on ILLEGAL_GENERATION and re-joins as a new member;
# on the embedded broker the orphaned id then blocks the group for good (agents/kafka_compat.py).
kafka_compat.install()


class _App(faust.App):
    async def on_stop(self) -> None:
        """Finish the micro-batch in flight before Faust stops the consumer, the tables and
        (on_before_shutdown) the ClickHouse sink: a worker that leaves by SIGTERM then hands
        over whole batches, not one whose rows are written but whose states are not."""
        await drain_batches()
        await super().on_stop()


app = _App(
    settings.app_id,
    broker=f"kafka://{settings.bootstrap}",
    store="memory://",
    datadir=str(settings.data_dir / "worker"),
    topic_partitions=settings.partitions,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    processing_guarantee="at_least_once",
    web_host=settings.web_host,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    web_in_thread=False,
    broker_commit_every=10_000,
    broker_commit_interval=settings.commit_interval,
    # A worker that dies without leaving the group (kill -9, lost host) holds its
    # partitions until its session expires; Faust's default 60 s stalls the whole group
    # that long after a crash. 10 s (Kafka's classic default) with 3 s heartbeats.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    broker_rebalance_timeout=20.0,
    producer_linger_ms=5,
    stream_buffer_maxsize=max(4096, settings.batch_max * 2),
    table_standby_replicas=0,
)

# acks=False: Faust neither tracks nor commits these offsets; `guard` and `commit_inputs`
# do (Faust acks records it skipped during rebalances, which let commits pass records that
# were never applied, and froze commits on gaps: docs/fault-tolerance.md).
inputs = app.topic(*settings.input_topics, key_serializer="raw", value_serializer="raw", acks=False)
guard: OffsetGuard = OffsetGuard()
# Event-time alignment: records wait here until they are the lowest in event time among the
# input partitions with the same number (pipeline/service/event_time_merge.py); `guard`
# moves (and commits) only when they are applied.
merge: EventTimeMerge = EventTimeMerge(
    lambda tp: tp.partition, idle_seconds=settings.align_idle_seconds,
    fetch_wait_seconds=settings.align_fetch_wait_seconds, ahead_seconds=settings.align_ahead_seconds,
    max_buffered=max(1000, settings.batch_max))
scores_topic = app.topic(settings.topic_scores, key_serializer="raw", value_serializer="raw")
alerts_topic = app.topic(settings.topic_alerts, key_serializer="raw", value_serializer="raw")
deadletter_topic = app.topic(settings.topic_deadletter, key_serializer="raw", value_serializer="raw")

# Per-customer state: key = customer_id bytes, value = encode_state(state).
# use_partitioner: the changelog partition follows the key (same partitioner as the
# producers), so a coalesced write after a micro-batch lands on the customer's partition.
states = app.Table(
    "customer-state", default=None, partitions=settings.partitions,
    key_type=bytes, value_type=bytes, use_partitioner=True,
)

sink = build_sink(settings, METRICS)
sink_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
clock = StreamClock()


def load_state(customer_id: str) -> CustomerState | None:
    raw = states.get(customer_id.encode())
    return decode_state(raw, customer_id) if raw else None


_past_sla: dict[str, tuple[str, int]] = {}   # customers with open complaints past SLA -> (tier, n)


def track_past_sla(result: BatchResult) -> None:
    for cid, (tier, n) in result.past_sla.items():
        if n:
            _past_sla[cid] = (tier, n)
        else:
            _past_sla.pop(cid, None)
    by_tier: dict[str, int] = {}
    for tier, n in _past_sla.values():
        by_tier[tier] = by_tier.get(tier, 0) + n
    METRICS.complaints_past_sla(by_tier)


async def emit(result: BatchResult, prepared: PreparedBatch | None = None) -> None:
    """Publish outputs, write ClickHouse rows (durable), and only then store the states.

    The order makes a crash (kill -9) safe: a state reaches the table's changelog only
    after the batch's outputs are acknowledged by the broker and its rows are in
    ClickHouse. A crash before that leaves the changelog without the batch, so the
    re-delivered events are applied again and their outputs repeated (ReplacingMergeTree
    and the compacted score topic absorb repeats). Storing the states first lost data:
    the recovered state already held the events, their re-delivery counted as
    `duplicate`, and scores / rows that had not left the process never did.
    Rows and messages come prepared (`guarded_batch`: a record whose rows or messages
    cannot be built is a dead letter already); rows ClickHouse refuses as data come back
    as `unstorable` dead letters.
    """
    prepared = prepared or prepare(result, ch_rows.batch_rows)
    track_past_sla(result)
    # send_soon: buffered, no await per record. `commit_inputs` flushes the producer before
    # it commits offsets, so an output is on the broker before its input counts as done.
    topic_of = {"score": scores_topic, "alert": alerts_topic, "deadletter": deadletter_topic}
    for m in prepared.messages:
        topic_of[m.kind].send_soon(key=m.key, value=m.value)
    for score in result.scores:
        METRICS.churn_risk(score["churn_risk"], score["tier"])
    for alert in result.alerts:
        if alert["status"] == "firing":
            METRICS.alert_raised(alert["type"], alert["tier"], alert["severity"])
        else:
            METRICS.alert_resolved(alert["type"], alert["tier"], alert["severity"])
    for dl in result.dead_letters:
        METRICS.deadlettered(dl["source_topic"], dl["reason"])
    METRICS.scores_published(len(result.scores))
    if any(prepared.rows.values()):
        await write_sink(prepared.rows)
        for dl in sink_dead_letters(sink.take_rejected(), time.time()):
            deadletter_topic.send_soon(key=None if dl["key_b64"] is None else dl["key_b64"].encode(),
                                       value=orjson.dumps(dl))
            METRICS.deadlettered(dl["source_topic"], dl["reason"])
    if result.states:
        if prepared.messages:
            await app.producer.flush()
        for cid, state in result.states.items():
            states[cid.encode()] = encode_state(state)


# Batches, sweeps and erasures read-modify-write the table across awaits (emit stores the
# states last), so they take turns: a sweep never re-stores a state a batch is updating.
_state_lock: asyncio.Lock | None = None


def state_lock() -> asyncio.Lock:
    global _state_lock
    if _state_lock is None:
        _state_lock = asyncio.Lock()
    return _state_lock


@app.agent(inputs)
async def score_events(stream):
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within):
        selection = await select_in_order(events)
        for e in selection.accepted:
            merge.add(e.message.tp, e.message.offset, event_time(e.value), e)
        for tp in {e.message.tp for e in selection.accepted}:
            merge.observe_end(tp, consumer_flow.highwater(app.consumer, tp))
        await seek_back(selection.ahead)
        await apply_released()
        _agent_batch_at[0] = time.monotonic()


_agent_batch_at = [0.0]   # when the agent last applied what it could (the timer covers silences only)


async def apply_released(max_batches: int | None = None) -> None:
    """Apply, in micro-batches, the buffered records that event-time alignment releases,
    then pause the partitions that run ahead of their group and resume the others."""
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        await confirm_ends()
        started = time.perf_counter()
        async with state_lock():
            released = merge.release(settings.batch_max)
            if not released.records:
                break
            records = [RawRecord(e.message.topic, e.message.partition, e.message.offset, e.key, e.value)
                       for _, _, e in released.records]
            now = time.time()   # received_at, the processing clock: the plausible window ends at it + the allowed skew
            prepared = guarded_batch(records, lambda recs, load: core.process(recs, load, received_at=now,
                                                                              source_offsets=True),
                                     load_state, now, ch_rows.batch_rows)
            result = prepared.result
            if result.latest_event_time:
                clock.observe(result.latest_event_time, time.time())
            await emit(result, prepared)
        guard.advance(released.cursor)
        for topic, n in result.consumed.items():
            METRICS.consumed(topic, n)
        for topic, n in result.applied_by_topic.items():
            METRICS.applied(topic, n, result.latest_event_time or None)
        for topic, n in result.duplicates_by_topic.items():
            METRICS.duplicate(topic, n)
        for topic, n in result.erased_by_topic.items():
            METRICS.erased(topic, n)
        METRICS.batch(len(records), time.perf_counter() - started)
    pause, resume = merge.flow()
    consumer_flow.pause(app.consumer, pause)
    consumer_flow.resume(app.consumer, resume)


async def confirm_ends() -> None:
    """Ask the broker for the log ends of the empty partitions whose records others wait for
    (EventTimeMerge.unconfirmed): the consumer's copies from its fetches may be old."""
    tps = merge.unconfirmed()
    if tps:
        asked = merge.clock()
        try:
            ends = await app.consumer.highwaters(*tps)
        except Exception as exc:   # rebalance, broker unreachable: they keep waiting
            log.info("log end offsets not read: %r", exc)
            return
        for tp, end in ends.items():
            merge.observe_end(tp, end, asked_at=asked)


@app.timer(interval=0.1)
async def release_idle() -> None:
    """Records held for an empty partition of their group go once its wait is over, when no
    records arrive to carry them with the agent's next micro-batch (one micro-batch per
    tick: a ClickHouse insert per batch, so the timer does not split the agent's batches)."""
    if (merge.buffered() and not app.rebalancing and not state_lock().locked()
            and time.monotonic() - _agent_batch_at[0] >= settings.batch_within):
        await apply_released(max_batches=1)


async def select_in_order(events):
    """The delivered events that continue their partitions exactly (OffsetGuard): events
    fetched under an older consumer generation or for partitions no longer assigned are
    dropped (Faust seeks every assigned partition back to its committed offset after a
    rebalance, so they come again)."""
    consumer = app.consumer
    generation, assignment = app.consumer_generation_id, consumer.assignment()
    current = [e for e in events if e.message.generation_id == generation and e.message.tp in assignment]
    try:
        await start_partitions({e.message.tp for e in current} - guard.next.keys())
    except Exception as exc:   # their records are dropped; the stall watchdog seeks back later
        log.warning("could not read committed offsets: %r", exc)
    stale = len(events) - len(current)
    selection = guard.select(((e.message.tp, e.message.offset, e) for e in current), merge.expected)
    if stale or selection.redelivered or selection.ahead:
        log.info("batch of %d: %d applied in order, %d of an older generation, %d re-read, ahead of %s",
                 len(events), len(selection.accepted), stale, selection.redelivered,
                 {f"{tp.topic}/{tp.partition}": (guard.next[tp], o) for tp, o in selection.ahead.items()})
    return selection


async def assigned_at(tp) -> int:
    """Where the consumer reads an assigned partition from: the group's committed offset,
    asked from the broker (Faust keeps a copy only after its post-assignment seek and
    exposes none), or the log start if the group has not committed there yet
    (auto_offset_reset=earliest)."""
    from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

    thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust private attribute (pinned version)
    committed = await thread.call_thread(thread._ensure_consumer().committed, ensure_aiokafka_TP(tp))
    if committed is None or committed < 0:
        committed = (await app.consumer.earliest_offsets(tp)).get(tp) or 0
    return committed


async def start_partitions(tps) -> None:
    for tp in tps:
        offset = await assigned_at(tp)
        if not guard.knows(tp):      # the agent and the watchdog may both get here
            guard.start(tp, offset)
            merge.start(tp, offset)


async def seek_back(ahead: dict) -> None:
    """Records beyond `next` were delivered, so some were skipped: read from `next` again."""
    if not ahead:
        return
    seek_now, check = guard.seeks_due(ahead)
    loop = asyncio.get_running_loop()
    for tp in check:   # the hole survived several seeks: is it in the log itself?
        pos = guard.next[tp]
        first = await loop.run_in_executor(None, first_offset_at, settings, tp.topic, tp.partition, pos)
        if guard.accept_gap(tp, first):
            log.warning("%s/%d has no records in [%d, %d) (a hole in the log); continuing at %d",
                        tp.topic, tp.partition, pos, first, first)
            seek_now[tp] = first
        else:
            seek_now[tp] = pos
    for tp, pos in seek_now.items():
        log.info("%s/%d: records after %d delivered before it; seeking back to %d", tp.topic, tp.partition, pos, pos)
        await seek_to(tp, pos)


STALL_SECONDS = 5.0


@app.timer(interval=1.0)
async def stall_watchdog() -> None:
    """Input partitions that have records beyond `next` but applied none for STALL_SECONDS
    are sought back to `next` (records skipped with nothing after them to reveal the gap).
    Partitions nothing was delivered from yet start at their committed offset. Not while a
    micro-batch is in flight (the state lock is held): its records are released from the
    event-time buffer but not yet advanced, and a slow emit (a ClickHouse insert split by
    partition) is progress, not a stall — seeking back then re-applied the batch and sent its
    dead letters twice."""
    if app.rebalancing or state_lock().locked():
        return
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic in settings.input_topics]
    if not tps:
        return
    try:
        await start_partitions([tp for tp in tps if not guard.knows(tp)])
        asked = merge.clock()
        ends = await consumer.highwaters(*tps)
    except Exception as exc:   # broker unreachable, rebalance: next tick
        log.info("stall watchdog skipped a tick: %r", exc)
        return
    for tp, end in ends.items():
        if guard.knows(tp) and not merge.knows(tp):   # kept through a rebalance
            merge.start(tp, guard.next[tp])
        merge.observe_end(tp, end, asked_at=asked)
    held = merge.held()   # buffered or paused for event-time alignment: waiting on purpose
    for tp, pos in guard.stalled({tp: end for tp, end in ends.items() if tp not in held}, STALL_SECONDS).items():
        log.warning("%s/%d: %d records behind and no progress for %.0fs; seeking back to %d",
                    tp.topic, tp.partition, ends[tp] - pos, STALL_SECONDS, pos)
        await seek_to(tp, pos)


RECOVERY_STALL_SECONDS = 3.0
_recovery_seeks: dict = {}   # changelog tp -> when the watchdog last sought it (one seek per stall period)


@app.timer(interval=1.0)
async def recovery_watchdog() -> None:
    """Table recovery that stalled because its changelog records were fetched and dropped
    (a Faust race when two rebalances follow each other: pipeline/service/recovery_check.py):
    seek those changelog partitions back to the next offset the recovery needs."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # Faust private attribute (pinned version)
    if not recovery.in_recovery or recovery._recovery_started_at is None:
        return
    tps = [tp for tp in recovery.active_tps if tp in recovery.active_highwaters]
    if not tps:
        return
    positions = {}
    try:
        for tp in tps:
            positions[tp] = await asyncio.wait_for(app.consumer.position(tp), timeout=1.0)
    except Exception as exc:   # rebalance, no position yet: next tick
        log.info("recovery watchdog skipped a tick: %r", exc)
        return
    started = recovery._recovery_started_at
    last_event_at = dict(recovery._active_events_received_at)
    for tp, at in _recovery_seeks.items():
        if at >= started:
            last_event_at[tp] = max(at, last_event_at.get(tp, at))
    seeks = recovery_check.stalled(dict(recovery.active_offsets), dict(recovery.active_highwaters), positions,
                                   last_event_at, started, time.monotonic(), RECOVERY_STALL_SECONDS)
    for tp, pos in seeks.items():
        log.warning("table recovery of %s/%d stalled: the consumer is at %s but the recovery needs %d "
                    "(records fetched and dropped during a rebalance); seeking back to %d",
                    tp.topic, tp.partition, positions[tp], pos, pos)
        _recovery_seeks[tp] = time.monotonic()
        await seek_to(tp, pos)


async def seek_to(tp, pos: int) -> None:
    merge.drop(tp, pos)   # records buffered for alignment come again from `pos`
    try:
        await app.consumer.seek_wait({tp: pos})
    except Exception as exc:   # e.g. revoked meanwhile: the next assignment seeks anyway
        log.warning("seek %s/%d -> %d failed: %r", tp.topic, tp.partition, pos, exc)


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args, signal=)
async def align_assigned(app_: faust.App, assigned, **kwargs) -> None:
    """Every assigned input partition is a member of its group from the start (one not heard
    of yet must not let the others run ahead); `start_partitions` adds its offset."""
    for tp in assigned:
        if tp.topic in settings.input_topics:
            merge.start(tp)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args, signal=)
async def forget_revoked(app_: faust.App, revoked, **kwargs) -> None:
    guard.forget(revoked)
    consumer_flow.resume(app.consumer, merge.resume_all())
    merge.clear()   # never applied: read again from the committed offsets after the rebalance
    _past_sla.clear()   # some of them are another worker's now; the sweep recounts this worker's


SLOT_OF_TOPIC = {settings.topic_for_type[kind]: slot for kind, slot in OFFSET_SLOT.items()}


def owned_states(keys: list[bytes]) -> list[CustomerState]:
    """The stored states of `keys` that this worker owns: fed from input partitions
    assigned to it (CustomerState.fed_from)."""
    owned = {(SLOT_OF_TOPIC[tp.topic], tp.partition) for tp in app.consumer.assignment() if tp.topic in SLOT_OF_TOPIC}
    return [state for key in keys if (state := load_state(key.decode())) is not None and state.fed_from(owned)]


@app.timer(interval=settings.commit_interval)
async def commit_inputs() -> None:
    await commit_completed_inputs()


async def commit_completed_inputs() -> None:
    """Commit each input partition's `next` offset (only offsets whose batches were fully
    emitted), after flushing the producer so their changelog writes are on the broker."""
    assignment = app.consumer.assignment()
    offsets = {tp: o for tp, o in guard.to_commit().items() if tp in assignment}
    if not offsets:
        return
    await app.producer.flush()
    if await app.consumer._commit(offsets):  # type: ignore[attr-defined]  # Faust's own commit path minus its ack books
        guard.committed_at(offsets)


erasures = app.topic(settings.topic_erasures, key_serializer="raw", value_serializer="raw")


@app.agent(erasures)
async def erase_customers(stream):
    """Erasure requests (`cxpulse erase`), co-partitioned with the state: replace the
    customer's state by an erasure marker (no personal data; events that occurred up to
    the request and arrive later are dropped) and tombstone its key on cx.scores."""
    async for event in stream.events():
        key = event.key
        if not key:
            continue
        requested_at = erasure_requested_at(event.value, time.time())
        async with state_lock():
            state = load_state(key.decode()) or CustomerState(customer_id=key.decode())
            states[key] = encode_state(state.erasure_marker(requested_at))
        await scores_topic.send(key=key, value=None)
        log.info("erased customer state (%d-byte key)", len(key))


actions = app.topic(settings.topic_actions, key_serializer="raw", value_serializer="raw")


@app.agent(actions)
async def apply_actions(stream):
    """Operator actions on alert cases (`cxpulse ack`/`close`), co-partitioned with the state:
    Core.process_actions applies them (dead letters with reasons, duplicates ignored); the
    outputs and the case rows go out like a batch's."""
    async for event in stream.events():
        rec = RawRecord(event.message.topic, event.message.partition, event.message.offset, event.key, event.value)
        async with state_lock():
            try:
                received = time.time()
                result = core.process_actions([rec], load_state, received_at=received)
            except Exception as exc:   # never stop the agent; never lose the record silently
                log.exception("action record %s/%d@%d failed", rec.topic, rec.partition, rec.offset)
                result = BatchResult(dead_letters=[dead_letter(rec, "processing_error", f"{type(exc).__name__}: {exc}",
                                                               time.time())])
            await emit(result)
        for topic, n in result.consumed.items():
            METRICS.consumed(topic, n)


_sweep_cursor: list[bytes] = []
SWEEP_MAX = 5000  # customers re-evaluated per timer tick (bounded cost per sweep)


@app.timer(interval=settings.sweep_seconds)
async def sweep() -> None:
    """Time-driven rules for a bounded slice of the table: deadlines passing, silence.
    Only for this worker's customers: the in-memory table keeps those of partitions given
    away in a rebalance, whose owner now evaluates (and stores) them."""
    global _sweep_cursor
    if app.rebalancing:
        return
    if not _sweep_cursor:
        _sweep_cursor = list(states.keys())
    chunk, _sweep_cursor = _sweep_cursor[:SWEEP_MAX], _sweep_cursor[SWEEP_MAX:]
    async with state_lock():
        loaded = owned_states(chunk)
        if loaded:
            result = core.sweep(loaded, merge.hold_back(clock.now(time.time())))   # not ahead of a group catching up
            if result.scores or result.alerts:
                await emit(result)
            else:
                track_past_sla(result)


@app.timer(interval=5.0)
async def report_consumer_lag() -> None:
    """Consumer lag per assigned input partition: log end offset − committed offset."""
    consumer = app.consumer
    lags = {}
    for tp in consumer.assignment():
        if tp.topic not in settings.input_topics:
            continue
        committed = guard.committed.get(tp, consumer._committed_offset.get(tp))  # type: ignore[attr-defined]  # before the first batch: Faust's
        lags[(tp.topic, tp.partition)] = max(0, consumer.highwater(tp) - (committed or 0))
    METRICS.consumer_lag(lags)


@app.timer(interval=settings.refit_seconds)
async def refit_population() -> None:
    """Re-fit the churn model's population parameters from this worker's customers."""
    core.refit_population(owned_states(list(states.keys())), as_of=clock.now(time.time()))
    log.info("population re-fitted: %s", core.population)


@app.timer(interval=settings.backtest_seconds)
async def live_backtest() -> None:
    """Export the live backtest of churn_risk (pipeline/service/live_backtest.py) once ClickHouse is open."""
    if _sink_open:
        await asyncio.get_running_loop().run_in_executor(
            sink_executor, refresh_live_backtest, functools.partial(live_backtest_rows, sink.client),
            METRICS.churn_backtest, settings.churn_horizon_days, time.time())


_sink_ready: asyncio.Lock | None = None
_sink_open = False


async def write_sink(batch: dict[str, list[dict]]) -> None:
    """Write rows in the sink's thread; opens (and migrates) ClickHouse on first use."""
    global _sink_ready, _sink_open
    loop = asyncio.get_running_loop()
    if not _sink_open:
        _sink_ready = _sink_ready or asyncio.Lock()
        async with _sink_ready:
            if not _sink_open:
                await loop.run_in_executor(sink_executor, sink.open)
                _sink_open = True
    await loop.run_in_executor(sink_executor, sink.write, batch)


DRAIN_SECONDS = 15.0   # at most this long for the batch in flight at shutdown (a ClickHouse outage may hold it)


async def drain_batches() -> None:
    """Wait for the batch in flight (the state lock), commit the input offsets it completed,
    and keep the lock: no batch, sweep or erasure starts on a worker that is stopping."""
    try:
        await asyncio.wait_for(state_lock().acquire(), DRAIN_SECONDS)
    except asyncio.TimeoutError:
        log.warning("stopping with a micro-batch still in flight after %.0f s; it will be re-delivered", DRAIN_SECONDS)
        return
    try:
        await commit_completed_inputs()
    except Exception as exc:   # the next owner re-delivers from the last commit; offsets in the states dedupe
        log.warning("final commit of input offsets failed: %r", exc)


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args, signal=)
def close_sink(app_: faust.App, **kwargs) -> None:
    sink.close()


@app.page("/healthz")
async def healthz(web, request):
    return web.json({"status": "ok", "app": settings.app_id})


@app.page("/metrics")
async def metrics_view(web, request):
    body, content_type = render()
    return Response(body=body, headers={"Content-Type": content_type})


@app.page("/customers/{customer_id}")
@app.table_route(table=states, match_info="customer_id")
async def customer_view(web, request, customer_id: str):
    state = load_state(customer_id)
    if state is None or not state.n:   # never seen, or erased (an erasure marker)
        return web.json({"error": f"unknown customer {customer_id}"}, status=404)
    p = profile(state, clock.now(time.time()), core.params, core.population, core.rates)
    return web.json(score_record(state, p))


def main(argv: list[str] | None = None) -> None:
    """Run a worker (`cxpulse worker`): Faust's own command line, with our defaults."""
    import sys

    args = ["cxpulse", "-l", settings.log_level, "worker", "--web-port", str(settings.web_port)] + list(argv or [])
    sys.argv = args
    app.main()
