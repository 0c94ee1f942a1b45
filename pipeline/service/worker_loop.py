"""The worker loop: what the Faust worker does with delivered input records, an operator
action, an erasure request, a timer tick, a rebalance and a stop — with no Faust, aiokafka or
ClickHouse in it. It talks to its ports (pipeline/service/worker_ports.py): a state store,
an outputs publisher, a row sink, the input consumer, a clock and metrics. agents/factory.py
wires it to Faust; tests/unit/test_worker_loop.py drives it with in-memory fakes.

Invariants it owns (docs/fault-tolerance.md tells why each exists):

- **Emit order.** A batch's outputs are sent, then its ClickHouse rows are written (durable),
  then the producer is flushed, and only then are its states stored and its input offsets
  counted as done. A crash before the states are stored re-delivers the batch and repeats
  its outputs (absorbed downstream); a state stored first would make the re-delivery a
  duplicate and lose the outputs.
- **Overlapped write.** The agent's batches do not wait for their ClickHouse write: batch N's
  write runs in the sink's thread while N+1 is taken and processed. N+1 loads N's states
  from the overlay of pending states (pipeline/service/pending_states.py), so it computes
  exactly what the serial order computes. N+1's outputs go out at once (a score does not wait
  for the write before its batch). One write is in flight at a time: the batches emitted
  while it runs wait (their states in a second overlay, up to `write_group_rows` rows; a
  batch beyond that waits for the write) and go in the next write together, one insert per
  table however many batches they are. A batch's states are stored, and its offsets advance,
  only after its own write (and so every write before it) is complete. A write that fails
  stops every later batch (`settle`); the outputs of the batches processed meanwhile went out
  and are repeated when they are delivered again. Erasures, learning ticks and the drain wait
  for every batch written or waiting first; sweep slices are emitted like batches.
- **One lock.** Batches, actions, the sweep and erasures read-modify-write the state store
  across awaits (states are stored last), so they take turns on one asyncio lock.
- **Poison records** (pipeline/service/emit_guard.py): a record that cannot be applied, turned
  into rows or serialized is a `processing_error` dead letter and leaves no trace in any
  state, row or message; rows ClickHouse refuses as data are `unstorable` dead letters.
- **Input offsets** (pipeline/service/offset_guard.py): records are applied strictly in offset
  order per partition; only offsets of fully emitted batches are committed, after the
  producer is flushed.
- **Event-time alignment** (pipeline/service/event_time_merge.py): delivered records wait in
  the merge until they are the lowest in event time among the input partitions with the same
  number (a record within half the lateness bound of the last one an empty partition
  delivered goes without waiting for it); partitions that run ahead are paused. Offsets
  advance only for applied records.
- **Ownership.** The state store keeps the customers of partitions given away in a rebalance;
  the sweep and the population fit take only customers fed from partitions assigned to this
  worker (`CustomerState.fed_from`).
- **One population for all** (a worker that does not learn, several workers sharing
  ClickHouse): only the owner of input partition 0 re-fits the population, on its customers (a
  hash sample of all); the others serve the parameters it stored, read every
  `POPULATION_READ_SECONDS` (`follow_population`). Each fitting its own half, two workers gave
  one customer risks up to 0.04 apart, and a rebalance moved them.
- **Revocation** (`on_revoked`): the batch being applied and the writes in flight complete and
  the producer is flushed before the worker re-joins the group, so the next owner's table
  recovery reads their states; records of the old assignment are not applied after it.
- **Alerts a crash left behind** (`find_left_behind`, `_withdraw_due`;
  pipeline/domain/left_behind_alerts.py): at each assignment, before its first records, the
  numbered alerts (churn risk, failed recovery) ClickHouse holds firing for this worker's
  customers whose states do not hold them (or who have no state yet); each is withdrawn
  (resolved) in the first batch that evaluates its customer as of its instant without firing
  it again.
- **Bounded sweeps.** Each sweep evaluates at most `sweep_max` customers; a cursor walks the
  store so every customer is visited within ceil(n / sweep_max) ticks. It goes in slices of
  `sweep_slice`, the lock free between them, so batches wait for a slice, not a sweep.
- **Learning ticks** (with a `learner`; pipeline/service/tick_gate.py): the event-time ticks
  of `cxpulse replay`; records later than the next tick wait for it (no offset committed at or
  past them); at a tick the population is re-fitted and the churn model's snapshot taken, a
  retraining runs in `train_executor` and its decision goes out on the models channel, which
  every worker installs from (`install_model`). What a tick changed goes to the `history`
  (ClickHouse), read back before the first batch after a restart (`read_history`).
- **Drain on stop.** Stopping waits (bounded) for the batch in flight, commits the offsets it
  completed and keeps the lock, so no batch, sweep or erasure starts afterwards.

Where new behaviour goes: intake of delivered records in `deliver`; per-batch processing in
`_apply_batch`; outputs in `_emit`; periodic rules in `sweep`; model refits in
`refit_population`; rebalance reactions in `on_assigned` / `on_revoked`.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

from pipeline.domain.churn import POPULATION_MAX_CUSTOMERS, PopulationInput, PopulationParams, fit_population_inputs, population_input
from pipeline.domain.churn_snapshots import SnapshotBook
from pipeline.domain.left_behind_alerts import LeftBehindAlerts, StoredAlert
from pipeline.domain.scoring import profile, score_record
from pipeline.domain.state import CustomerState
from pipeline.domain.stream_clock import StreamClock
from pipeline.learning.churn_model_codec import decode_published
from pipeline.service.churn_history import (
    BookRows, TickRecord, mark, restore_book, scope_of, tick_changes, training_row)
from pipeline.service.churn_learning import ChurnLearner, TrainingSet, fit_model
from pipeline.service.gc_pause import gc_paused
from pipeline.service.emit_guard import PreparedBatch, guarded_batch, messages_of, prepare
from pipeline.service.event_time_merge import EventTimeMerge
from pipeline.service.live_backtest import FetchEarlyWarningRows, FetchRows, refresh_live_backtest
from pipeline.service.offset_guard import OffsetGuard, Selection
from pipeline.service.pending_states import PendingStates
from pipeline.service.shared_training_set import fit_shared, share
from pipeline.service.sweep_index import SweepIndex
from pipeline.service.processor import OFFSET_SLOT, BatchResult, Core, RawRecord, dead_letter, event_time
from pipeline.service.tick_gate import REFIT_EVERY, TickGate, before_every_event
from pipeline.service.worker_ports import (
    ChurnHistory, Clock, InputPartitions, ModelChannel, OutputsPublisher, PopulationStore, RowSink, StateStore,
    WorkerMetrics,
)
from schemas.records import ScoreDict

log = logging.getLogger("cxpulse.worker")

TP = Hashable
T = TypeVar("T")

SWEEP_MAX = 5000       # customers re-evaluated per timer tick (bounded cost per sweep)
SWEEP_SLICE = 100      # ... in slices of this many, the lock released between them (~20-50 ms each;
                       # 500 until session 35: bench/README.md, "The sweep's slice")
DRAIN_SECONDS = 15.0   # at most this long for the batch in flight at shutdown (a ClickHouse outage may hold it)
STALL_SECONDS = 5.0    # an input partition behind its log end with no progress this long is sought back
# A learning tick loads (decodes) every owned state on the event loop and gives the loop a
# turn after each this many seconds of it: a decode takes 60-170 µs on the project machine, so
# 100,000 states in one go stalled the loop for 6-17 s (bench/worker_retrain_stall.py). While
# the tick holds them (millions of containers at 100k customers) the garbage collector is off:
# each collection of the older generations walked them all, holding the interpreter for up to
# 2.2 s while the snapshot was computed in its thread. They are freed by reference counting
# (a slice at a time, too) when the tick ends, and collections resume.
TICK_LOAD_TURN_SECONDS = 0.02
POOL_FREE_SLICE = 20_000   # rows of a pooled training's read freed at once (_pooled_training_set)
POPULATION_READ_SECONDS = 60.0   # how often a worker that does not re-fit reads the stored population (follow_population)


@dataclass(frozen=True)
class LoopConfig:
    """The worker's topic contract and limits (from Settings, in agents/factory.py)."""

    topic_for_type: Mapping[str, str]      # event type -> input topic
    batch_max: int = 1000                  # records per micro-batch
    batch_within: float = 0.2              # held records go by timer once no micro-batch came for this long (seconds)
    align_idle_seconds: float = 0.2        # EventTimeMerge: a caught-up empty partition holds its group this long
    align_fetch_wait_seconds: float = 30.0  # ... one with records not fetched yet, this long
    align_ahead_seconds: float = 600.0     # ... a partition this far ahead in event time is paused
    churn_horizon_days: float = 30.0       # the live backtest's horizon
    tick_seconds: float = 86400.0          # event time between learning ticks (as `cxpulse replay`)
    tick_quiet_seconds: float = 60.0       # a quiet stream: no records this long, then the stream time runs ticks
    sweep_max: int = SWEEP_MAX
    sweep_slice: int = SWEEP_SLICE   # customers evaluated per hold of the lock: batches go between slices
    # The sweep index (pipeline/service/sweep_index.py): None sweeps the store round-robin,
    # `sweep_max` customers per tick; a number sweeps only the customers with a deadline due,
    # and re-checks each one's churn drift this many seconds (stream time) after its last evaluation.
    sweep_recheck_seconds: float | None = None
    sweep_rescan_ticks: int = 60   # index mode: every this many ticks, stored customers not indexed are walked
    drain_seconds: float = DRAIN_SECONDS
    stall_seconds: float = STALL_SECONDS
    # Rows (all tables) of the batches emitted while a write is in flight that wait to go in
    # the next write together; a batch that would pass it waits for the write (0: every batch
    # is written on its own, after the one before).
    write_group_rows: int = 40_000
    # Several workers sharing ClickHouse: the input topics' partitions (None: unknown, or a
    # store of one process's; then a learning trainer trains on its own book and every worker
    # re-fits its own population), how long a pooled training waits for the other workers'
    # tick (wall seconds) and how often it looks.
    partitions: int | None = None
    pool_wait_seconds: float = 3600.0
    pool_poll_seconds: float = 5.0

    @property
    def input_topics(self) -> frozenset[str]:
        return frozenset(self.topic_for_type.values())

    @property
    def slot_of_topic(self) -> dict[str, int]:
        """Input topic -> its CustomerState.offs slot."""
        return {self.topic_for_type[kind]: slot for kind, slot in OFFSET_SLOT.items()}


@dataclass(frozen=True, slots=True)
class Delivered:
    """An input record as the consumer delivered it, with its partition. (Its event time is
    its `occurred_at`; a record without a readable one goes with the record before it —
    pipeline/service/event_time_merge.py — never with the Kafka send time.)"""

    tp: TP
    record: RawRecord


class WorkerLoop:
    def __init__(self, core: Core, config: LoopConfig, *, store: StateStore, outputs: OutputsPublisher,
                 rows: RowSink, inputs: InputPartitions, clock: Clock, metrics: WorkerMetrics,
                 fetch_backtest_rows: FetchRows | None = None,
                 fetch_early_warning_rows: FetchEarlyWarningRows | None = None, learner: ChurnLearner | None = None,
                 models: ModelChannel | None = None, train_executor: Executor | None = None,
                 history: ChurnHistory | None = None, populations: PopulationStore | None = None,
                 fetch_open_alerts: Callable[[], list[StoredAlert]] | None = None) -> None:
        self.core = core
        self.config = config
        self.store = store
        self.outputs = outputs
        self.rows = rows
        self.inputs = inputs
        self.clock = clock
        self.metrics = metrics
        self.fetch_backtest_rows = fetch_backtest_rows   # ClickHouse query of the live backtest (run in the sink's thread)
        self.fetch_early_warning_rows = fetch_early_warning_rows   # the same, of the early warning
        # ClickHouse query of the numbered alerts never resolved (run in the sink's thread), and
        # the assignment (`_generation`) whose alerts a crash left behind were last withdrawn
        self.fetch_open_alerts = fetch_open_alerts
        self._withdrawn_for: int | None = None
        self.left_behind = LeftBehindAlerts()
        self.guard: OffsetGuard = OffsetGuard(clock=clock.monotonic)
        # Records wait here until they are the lowest in event time among the input partitions
        # with the same number; `guard` moves (and commits) only when they are applied.
        self.merge: EventTimeMerge = EventTimeMerge(
            lambda tp: tp.partition,   # an input partition has .partition
            idle_seconds=config.align_idle_seconds, fetch_wait_seconds=config.align_fetch_wait_seconds,
            ahead_seconds=config.align_ahead_seconds, max_buffered=max(1000, config.batch_max),
            # a record within half the lateness bound of what an empty partition delivered last
            # does not wait for it: none of its records to come can be made `too_late` by it
            in_order_slack_seconds=core.params.lateness_seconds / 2,
            clock=clock.monotonic)
        self.stream_clock = StreamClock()
        self.lock = asyncio.Lock()
        self.stopping = False   # `drain` began: it waits for the writes and keeps the lock
        # The batches whose ClickHouse write is in flight: their states (served to loads before
        # the store's) and the task that completes them (stores them, advances their offsets),
        # then writes the batches emitted meanwhile (`queue`, their states in `waiting`,
        # served before both) and completes them in turn.
        self.pending: PendingStates[CustomerState] = PendingStates(store.encode, store.decode)
        self.waiting: PendingStates[CustomerState] = PendingStates(store.encode, store.decode)
        self.queue: list[tuple[BatchResult, PreparedBatch, dict | None, int]] = []
        self._queued_rows = 0
        self.writing: asyncio.Task | None = None
        self._generation = 0   # a revocation bumps it: a batch in flight across it advances no offsets
        self.past_sla: dict[str, tuple[str, int]] = {}   # customers with open complaints past SLA -> (tier, n)
        self.sweep_cursor: list[str] = []                # customers still to visit in this pass over the store
        # index mode: each customer's next check; customers not in it (start-up, recovery, a
        # rebalance, an evaluation that failed) are found by a rescan of the store keys
        self.sweep_index: SweepIndex | None = SweepIndex() if config.sweep_recheck_seconds is not None else None
        self._rescan_in = 0
        self.agent_batch_at = 0.0   # when the agent last applied what it could (the idle timer covers silences only)
        self._slot_of_topic = config.slot_of_topic
        self._input_topics = config.input_topics
        # Learning the churn model (docs/evaluation.md §7, "In the worker"): event-time ticks as
        # in `cxpulse replay`; records later than the next tick wait in `gate` for it.
        self.learner = learner
        self.models = models
        self.train_executor = train_executor   # where trainings run (None: a thread; the worker: a process)
        self.gate: TickGate[tuple[TP, int, RawRecord]] | None = (
            TickGate(config.tick_seconds, core.params.lateness_seconds) if learner is not None else None)
        self.last_refit = float("-inf")
        self.refitting = False   # a wall-clock re-fit is gathering its inputs or fitting
        # What survives a restart, read back before the first batch (`read_back`): a learning
        # worker's history (pipeline/service/churn_history.py), and the parameters of the
        # wall-clock re-fits (a worker that does not learn).
        self.history = history
        self.populations = populations
        self.read_back_done = history is None and populations is None
        self.progress: dict[TP, float] = {}       # input partition -> latest event time released from it
        # (the merge's clock, event time): when records first let the ticks run up to that event
        # time, one entry per midnight crossed, from the next tick on (`_tick_bound`)
        self.tick_frontier: list[tuple[float, float]] = []
        self.training_lock = asyncio.Lock()       # trainings run one after the other, off the event loop
        self.trainings: set[asyncio.Task] = set()

    # --- states ------------------------------------------------------------------------
    def load_state(self, customer_id: str) -> CustomerState | None:
        """The latest state: a batch's waiting for the next write, else the one's whose write is
        in flight, else the stored one."""
        if customer_id in self.waiting:
            return self.waiting.load(customer_id)
        if customer_id in self.pending:
            return self.pending.load(customer_id)
        return self.store.load(customer_id)

    def owned_states(self, customer_ids: Sequence[str]) -> list[CustomerState]:
        """The stored states of `customer_ids` that this worker owns: fed from input partitions
        assigned to it (CustomerState.fed_from)."""
        owned = self._owned_slots()
        return [state for cid in customer_ids
                if (state := self.load_state(cid)) is not None and state.fed_from(owned)]

    def _owned_slots(self) -> set[tuple[int, int]]:
        """(offset slot, partition) of the input partitions assigned to this worker."""
        return {(self._slot_of_topic[tp.topic], tp.partition)   # type: ignore[attr-defined]
                for tp in self.inputs.assignment() if tp.topic in self._slot_of_topic}   # type: ignore[attr-defined]

    def now(self) -> float:
        """Stream time: the latest event time applied, advancing with the wall clock."""
        return self.stream_clock.now(self.clock.time())

    # --- delivered input records -------------------------------------------------------
    async def deliver(self, delivered: Sequence[Delivered], stale: int = 0) -> None:
        """One delivered micro-batch, in delivery order (`stale`: records the consumer dropped
        before, of an older generation or a revoked partition). The records that continue
        their partitions exactly go into the event-time merge; partitions that skipped
        records are sought back; then what the merge releases is applied."""
        generation = self._generation
        if not self.read_back_done:
            await self.read_back()
        if self._withdrawn_for != generation:
            await self.find_left_behind()
        selection = await self.select_in_order(delivered, stale)
        if generation != self._generation:   # revoked meanwhile: the owner reads them from the committed offsets
            return
        for d in selection.accepted:
            self.merge.add(d.tp, d.record.offset, event_time(d.record.value), d.record)
        for tp in {d.tp for d in selection.accepted}:
            self.merge.observe_end(tp, self.inputs.log_end(tp))
        if selection.ahead:
            await self.settle()   # seek back to offsets of completed batches, not below the one in flight
        await self.seek_back(selection.ahead)
        await self.apply_released()
        self.agent_batch_at = self.clock.monotonic()

    async def apply_released(self, max_batches: int | None = None) -> None:
        """Apply, in micro-batches, the buffered records that event-time alignment releases,
        then pause the partitions that run ahead of their group and resume the others."""
        batches = 0
        while max_batches is None or batches < max_batches:
            batches += 1
            await self.confirm_ends()
            if self.ticks_waiting():
                await self.resume_ticks()
            started = self.clock.monotonic()
            async with self.lock:
                released = self.merge.release(self.config.batch_max)
                if not released.records:
                    break
                if self.gate is None:
                    # overlapped: the batch's offsets advance when its write completes
                    results = [await self._apply_batch([rec for _, _, rec in released.records], released.cursor)]
                else:
                    results = await self._apply_gated(released.records)
            if self.gate is not None:   # the gated batches were emitted one after the other, complete
                # held records (tick gate) are past `next` too: commits stop below them (commit_completed_inputs)
                self.guard.advance(released.cursor)
            self._count(results, len(released.records), started)
        pause, resume = self.merge.flow()
        self.inputs.pause(pause)
        self.inputs.resume(resume)

    async def confirm_ends(self) -> None:
        """Ask the broker for the log ends of the empty partitions whose records others wait for
        (EventTimeMerge.unconfirmed): the consumer's copies from its fetches may be old."""
        tps = self.merge.unconfirmed()
        if self.ticks_waiting():
            tps |= self._quiet_partitions_to_confirm()
        if tps:
            asked = self.merge.clock()
            try:
                ends = await self.inputs.log_ends(list(tps))
            except Exception as exc:   # rebalance, broker unreachable: they keep waiting
                log.info("log end offsets not read: %r", exc)
                return
            for tp, end in ends.items():
                self.merge.observe_end(tp, end, asked_at=asked)

    def _count(self, results: list[BatchResult], n: int, started: float) -> None:
        m = self.metrics
        for result in results:
            for topic, k in result.consumed.items():
                m.consumed(topic, k)
            for topic, k in result.applied_by_topic.items():
                m.applied(topic, k, result.latest_event_time or None)
            for topic, k in result.duplicates_by_topic.items():
                m.duplicate(topic, k)
            for topic, k in result.erased_by_topic.items():
                m.erased(topic, k)
        m.batch(n, self.clock.monotonic() - started)

    async def _apply_gated(self, items: list) -> list[BatchResult]:
        """Apply released records through the tick gate (under the lock), as `cxpulse replay`
        does (pipeline/service/replay.py): an event whose time minus the lateness bound
        passes the next tick runs the ticks first (`_tick`); records later than the next tick
        are held until it has run, by (customer, topic): a customer's record applied while an
        earlier one of its topic is held keeps that offset new for the source-offset dedup
        (`_held_offsets`)."""
        gate = self.gate
        assert gate is not None
        lateness = self.core.params.lateness_seconds
        window = self.core.window
        ceiling = window.ceiling(self.clock.time())
        results: list[BatchResult] = []
        pending: list[RawRecord] = []
        progress = self.progress
        for tp, offset, rec in items:
            ts = event_time(rec.value)
            if ts is not None and not (window.floor <= ts <= ceiling):
                ts = None   # implausible: the core dead-letters it; it moves no tick
            if ts is not None:
                gate.start(ts)
                progress[tp] = max(ts, progress.get(tp, ts))
                if gate.due(ts):
                    await self._run_ticks(ts - lateness, pending, results)
            if gate.holds(ts):
                gate.hold(ts, (tp, offset, rec), (rec.key, rec.topic))
            else:
                pending.append(rec)
        await self._apply_pending(pending, results)
        return results

    async def _apply_pending(self, pending: list[RawRecord], results: list[BatchResult]) -> None:
        """Apply `pending` in micro-batches (under the lock), their results into `results`,
        and empty it."""
        for i in range(0, len(pending), self.config.batch_max):
            results.append(await self._apply_batch(pending[i:i + self.config.batch_max]))
        pending.clear()

    async def _run_ticks(self, until: float, pending: list[RawRecord], results: list[BatchResult]) -> None:
        """Run the ticks a record lets run up to event time `until` (under the lock) as far as
        the other input partitions allow (`_tick_bound`), each after what is `pending` has been
        applied (`_apply_pending`, into `results`); what a tick releases joins `pending`. Ticks
        left waiting for quiet partitions run once the broker has confirmed them
        (`resume_ticks`)."""
        gate = self.gate
        assert gate is not None
        frontier = self.tick_frontier
        step = gate.step
        if not frontier or until // step > frontier[-1][1] // step:
            frontier.append((self.merge.clock(), until))
        elif until > frontier[-1][1]:   # the same ticks: the time they were first let run stays
            frontier[-1] = (frontier[-1][0], until)
        for now in gate.ticks(self._tick_bound(until)):
            await self._apply_pending(pending, results)   # the tick sees every record up to it (those the last tick released too)
            await self._tick(now)
            pending.extend(r for _, _, r in gate.release())
        nxt = gate.next_tick if gate.next_tick is not None else float("inf")
        while frontier and frontier[0][1] < nxt:   # what let the ticks run that have run
            frontier.pop(0)

    def _passed(self, tp: TP) -> float:
        """The event time up to which input partition `tp` lets the ticks run (`_tick_bound`)."""
        passed = self.progress.get(tp, float("-inf")) - self.core.params.lateness_seconds
        if self.merge.caught_up(tp):
            confirmed = self.merge.confirmed_at(tp)
            if confirmed is not None:
                seen = confirmed - self.config.align_idle_seconds
                passed = max([passed] + [u for t, u in self.tick_frontier if t <= seen])
        return passed

    def _tick_bound(self, until: float) -> float:
        """How far the ticks a record lets run up to `until` may go. Partitions of other numbers
        are not aligned with the record's (the merge aligns only the topics' partitions of one
        number), so the stream's event time is the lowest progress (minus the lateness bound)
        among the input partitions with records still to come; one with records fetched but not
        received yet is behind. One that looks caught up may not be: during a backfill a
        producer's last batch to a partition can land after another partition's later records
        have been read, and a tick run then misses their events (the restart test of
        tests/integration/test_worker_integration.py, 2 runs in 4). So, as the merge does within
        a group (Kafka Streams' `max.task.idle.ms`), a partition that looks caught up passes a
        tick only once the broker has confirmed it caught up with an end offset asked
        `align_idle_seconds` or more after a record first let that tick run (`tick_frontier`;
        `confirm_ends` asks): what was produced before that record has landed by then (the
        merge's premise: producers send in event-time order, their batching stays below the
        idle wait). A live stream pays one end-offset request and the idle wait a day."""
        return min([until] + [self._passed(tp) for tp in self._assigned_inputs()])

    def ticks_waiting(self) -> bool:
        """Whether records have let a tick run that waits for other input partitions."""
        gate = self.gate
        return (gate is not None and gate.next_tick is not None and bool(self.tick_frontier)
                and self.tick_frontier[-1][1] >= gate.next_tick)

    def _quiet_partitions_to_confirm(self) -> set:
        """The caught-up input partitions that hold back the next tick, once the idle wait
        after the first record that let it run is over (`_tick_bound`)."""
        gate = self.gate
        assert gate is not None and gate.next_tick is not None
        first = next(t for t, u in self.tick_frontier if u >= gate.next_tick)
        if self.merge.clock() < first + self.config.align_idle_seconds:
            return set()
        return {tp for tp in self._assigned_inputs()
                if self.merge.caught_up(tp) and self._passed(tp) < gate.next_tick}

    async def resume_ticks(self) -> None:
        """Run the ticks that wait for quiet partitions as far as the broker's confirmations now
        allow (`_tick_bound`), and apply what they release."""
        if not self.ticks_waiting() or self.lock.locked():
            return
        started = self.clock.monotonic()
        results: list[BatchResult] = []
        pending: list[RawRecord] = []
        async with self.lock:
            await self._run_ticks(self.tick_frontier[-1][1], pending, results)
            await self._apply_pending(pending, results)
        self._count(results, sum(sum(r.consumed.values()) for r in results), started)

    async def _tick(self, now: float) -> None:
        """A learning tick at event time `now` (states hold exactly the events up to it; under
        the lock): the population re-fit on replay's schedule and the churn model's snapshot,
        computed in a thread so the event loop keeps running (no batch changes the states
        meanwhile: the lock is held); on the retraining schedule, a training off the event loop
        too (`_train`). No alerts here: the wall-clock sweep keeps doing them. The states are
        loaded and freed on the loop a slice at a time, with the garbage collector off meanwhile
        (TICK_LOAD_TURN_SECONDS): the loop keeps its turns at 100k customers."""
        await self.settle()   # the batch in flight is stored: the store holds every state
        with gc_paused():   # no collection walks the states decoded for the tick (TICK_LOAD_TURN_SECONDS)
            scope = self._scope()   # the assignment `_owned_states_in_slices` reads (under the lock)
            states = await self._owned_states_in_slices()
            if before_every_event(states.values()):
                return
            trains = self._trains()
            pools = trains and not self._owns_all()
            data, record = await asyncio.get_running_loop().run_in_executor(
                None, self._learn_at, now, states, scope, trains and not pools)
            await self._drop_in_slices(states)
        if self.history is not None:
            try:
                await self.rows.run(self.history.save, record)
            except Exception:   # the book in memory is whole; after a restart the history goes on
                # from the last tick written, and this one is taken again from the states then
                log.exception("churn history of the tick at %s not written", now)
        if data is not None or (record.retrain and pools):
            self._start_training(now, data)
        elif record.retrain and trains:
            await self._trained(now, None)   # a cold start: nothing to train, and nothing to redo after a restart

    def _input_partitions(self) -> set[int]:
        """The input partition numbers this worker owns (the three topics are co-partitioned)."""
        return {tp.partition for tp in self._assigned_inputs()}

    def _scope(self) -> str:
        """The input partition numbers this worker owns ("0,1,2"): the scope of its churn history."""
        return scope_of(self._input_partitions())

    def _trains(self) -> bool:
        """Whether this learning worker trains and publishes the churn model: the owner of input
        partition 0 (one trainer among several learning workers, on the rows of all:
        `_pooled_training_set`; a single worker owns every partition and trains its own book)."""
        return 0 in self._input_partitions()

    def _owns_all(self) -> bool:
        """Whether this worker owns every input partition (its book is the whole book), or
        cannot pool (no shared history, partitions unknown)."""
        if self.config.partitions is None or self.history is None:
            return True
        return self._input_partitions() >= set(range(self.config.partitions))

    async def _pooled_training_set(self, now: float) -> TrainingSet | None:
        """The training set at tick `now` from every worker's rows: once every input partition's
        tick at `now` is stored (or `pool_wait_seconds` have passed: then from the rows there
        are, with a warning), the book of all scopes as it stood after that tick, read back from
        the history. Each worker labels its own customers; their rows together are the book a
        single worker would hold (its population re-fits aside: each worker fits its own)."""
        assert self.learner is not None and self.history is not None and self.config.partitions is not None
        learner, history = self.learner, self.history
        wanted = set(range(self.config.partitions))
        deadline = self.clock.monotonic() + self.config.pool_wait_seconds
        while True:
            have = await self.rows.run(history.covered, now, learner.horizon_days)
            if wanted <= have:
                break
            if self.clock.monotonic() >= deadline:
                log.warning("churn model training at %s: input partitions %s have not stored that tick after %.0f s; "
                            "training on the rows stored", now, sorted(wanted - have), self.config.pool_wait_seconds)
                break
            await asyncio.sleep(self.config.pool_poll_seconds)
        self.metrics.churn_pool_missing(len(wanted - have))

        def read() -> TrainingSet | None:   # seconds at 500,000 rows: neither on the loop nor in the sink's thread
            book = learner.book
            rows = history.pooled(learner.horizon_days, book.max_rows, now, book.max_per_snapshot)
            data = learner.training_set(now, self._book_of(rows, now))
            while rows.rows:   # freed a slice at a time: one deallocation of them all holds the interpreter
                del rows.rows[-POOL_FREE_SLICE:]
            return data

        # The garbage collector is off meanwhile, as during a tick: collections walking the
        # millions of objects the read makes held the event loop up to 2.2 s (chDB, 500,000 rows)
        with gc_paused():   # (pipeline/service/gc_pause.py: a tick ending meanwhile leaves it off)
            return await asyncio.get_running_loop().run_in_executor(None, read)

    def _book_of(self, rows: BookRows, as_of: float) -> SnapshotBook:
        """A book like the learner's, restored from `rows` as it stood after the tick at `as_of`."""
        assert self.learner is not None
        book = self.learner.book
        return restore_book(SnapshotBook(book.horizon_days, book.max_rows, book.max_per_snapshot), rows.ticks, rows.rows,
                            as_of)

    def _start_training(self, now: float, data: TrainingSet | None) -> None:
        """Train at tick `now` on `data`, or on every worker's rows (None: `_pooled_training_set`)."""
        task = asyncio.get_running_loop().create_task(self._train(now, data))   # not awaited: batches go on
        self.trainings.add(task)
        task.add_done_callback(self.trainings.discard)

    async def _trained(self, now: float, version: str | None) -> None:
        """Record that the retraining due at `now` has ended (a restarted worker trains it
        again otherwise: pipeline/service/churn_history.py)."""
        if self.history is None or self.learner is None:
            return
        serving = self.core.churn_model.version if self.core.churn_model is not None else None
        try:
            await self.rows.run(self.history.trained, training_row(now, self.learner.horizon_days, version, serving))
        except Exception:   # a restart would train it once more: the same model
            log.exception("churn history: the end of the training at %s not written", now)

    async def _in_slices(self, items: Iterable[T]) -> AsyncIterator[T]:
        """`items` one by one, with a turn of the event loop after each
        `TICK_LOAD_TURN_SECONDS` of the caller's work on them."""
        turn_at = self.clock.monotonic() + TICK_LOAD_TURN_SECONDS
        for item in items:
            yield item
            if self.clock.monotonic() >= turn_at:
                await asyncio.sleep(0)
                turn_at = self.clock.monotonic() + TICK_LOAD_TURN_SECONDS

    async def _owned_states_in_slices(self) -> dict[str, CustomerState]:
        """Every state this worker owns (`owned_states` of every stored customer), loaded on
        the event loop (the store and its cache of decoded states belong to the loop's thread),
        with a turn of the loop after each `TICK_LOAD_TURN_SECONDS` of decoding. Under the lock:
        no batch changes a state meanwhile, and the assignment is read once, so the states are
        those `owned_states` gives at once."""
        owned = self._owned_slots()
        states: dict[str, CustomerState] = {}
        async for cid in self._in_slices(list(self.store.keys())):
            state = self.load_state(cid)
            if state is not None and state.fed_from(owned):
                states[state.customer_id] = state
        return states

    async def _drop_in_slices(self, states: dict[str, CustomerState]) -> None:
        """Free the tick's decoded states a slice at a time (freeing 100,000 at once, when the
        dict goes, is one long deallocation that holds the interpreter)."""
        async for cid in self._in_slices(list(states)):
            del states[cid]

    def _learn_at(self, now: float, states: dict[str, CustomerState], scope: str,
                  own_book: bool) -> tuple[TrainingSet | None, TickRecord]:
        """The tick's computation (in a thread): re-fit, snapshot, and the training set when a
        retraining is due and this worker trains on its `own_book` (a copy of the labelled
        history at this tick); with what the tick changed, for the history of `scope`."""
        assert self.learner is not None
        before = mark(self.learner.book)
        refit = None
        if now - self.last_refit >= REFIT_EVERY:
            refit = self.core.refit_population(states.values(), as_of=now)
            self.last_refit = now
        self.learner.snapshot(now, states, self.core)
        retrain = self.learner.retrain_due(now)
        data = None
        if retrain and own_book:
            data = self.learner.training_set(now)
        elif retrain:
            self.learner.last_train = now   # the schedule goes on: another worker trains, or this one on every worker's rows
        return data, tick_changes(before, self.learner.book, now, refit=refit, retrain=retrain, scope=scope)

    async def read_back(self) -> None:
        """Once, before the first batch: what a restarted worker goes on from."""
        self.read_back_done = True
        await self.read_history()
        await self.read_population()

    async def read_history(self) -> None:
        """The learning worker's history (a restart): its snapshot book, population parameters
        and retraining schedule."""
        if self.history is None or self.learner is None:
            return
        learner = self.learner
        # a lost training is trained again from this worker's own book only by a trainer that
        # owns every input partition: the others do not read that book (`_start_training`)
        trains = self._trains()
        own_book = trains and self._owns_all()
        try:
            restored = await self.rows.run(self.history.load, learner.horizon_days, learner.book.max_rows,
                                           self._scope(), own_book)
        except Exception:
            log.exception("churn history not read: the snapshot book starts anew")
            return
        if restored is None:
            log.info("churn history: none for this horizon, feature set and scope (input partitions %s), the "
                     "snapshot book starts anew", self._scope() or "none")
            return
        p = restored.progress
        restore_book(learner.book, restored.ticks, restored.rows, p.last_tick)
        learner.last_train, self.last_refit = p.last_train, p.last_refit
        if self.gate is not None:   # no tick at or before the last one runs again
            self.gate.resume_after(p.last_tick)
        if p.population is not None:
            self.core.use_population(p.population)
        pos, neg, leavers = learner.book.counts()
        log.info("churn history read back to the tick at %s: %d snapshots pending, %d labelled (%d leaving / %d "
                 "staying rows from %d leavers)", p.last_tick, len(learner.book.pending), len(learner.book.labelled),
                 pos, neg, leavers)
        if restored.training_lost and trains:
            # the retraining due at the last retraining tick never ended (the worker died while
            # it ran): train it again, on the book as it stood at that tick
            log.info("churn history: the training at %s did not end before the restart; training it again",
                     p.last_train)
            if not own_book:
                self._start_training(p.last_train, None)   # every worker's rows (the others passed it long ago)
                return
            assert restored.lost is not None
            data = learner.training_set(p.last_train, self._book_of(restored.lost, p.last_train))
            if data is not None:
                self._start_training(p.last_train, data)
            else:
                await self._trained(p.last_train, None)

    async def _train(self, now: float, data: TrainingSet | None) -> None:
        """Train in `train_executor` (another process in the worker: no share of the event
        loop's interpreter; a thread by default), then decide what serves and
        publish it on the models channel, which every worker installs from. `data` None:
        every worker's rows (`_pooled_training_set`)."""
        assert self.learner is not None
        learner = self.learner
        async with self.training_lock:
            try:
                if data is None:
                    data = await self._pooled_training_set(now)
                    if data is None:   # a cold start
                        await self._trained(now, None)
                        return
                started = self.clock.monotonic()
                model = await self._fit(learner.kind, now, data)
                if model is None:
                    await self._trained(now, None)
                    return
                learner.train_seconds.append(self.clock.monotonic() - started)
                served = learner.adopt(model, self.core)
                if self.models is not None:
                    await self.models.publish(served, model.card, model.early_warning)
            except Exception:   # a failed training leaves the serving model as it is (a restart tries it again)
                log.exception("churn model training at %s failed", now)
                return
            await self._trained(now, model.card.version)

    async def _fit(self, kind: str, now: float, data: TrainingSet):
        """`fit_model` in a thread, or in `train_executor` with the arrays handed over in shared
        memory (pipeline/service/shared_training_set.py: pickling them as an argument held the
        interpreter for up to 0.6 s)."""
        loop = asyncio.get_running_loop()
        if self.train_executor is None:
            return await loop.run_in_executor(None, fit_model, kind, now, data)
        shared, block = await share(data)
        try:
            return await loop.run_in_executor(self.train_executor, fit_shared, kind, now, shared)
        finally:
            block.close()
            block.unlink()

    async def advance_ticks(self) -> None:
        """In a quiet stream (no records delivered for `tick_quiet_seconds`), run the ticks the
        stream time (event time advancing with the wall clock) has passed by more than the
        lateness bound, and apply what they release: held records do not wait for the next
        event. Only when quiet: while records come, a partition that looks caught up may just
        not have been produced to yet (a backfill), and its events decide the ticks
        (`_apply_gated`). The caller skips it during a rebalance."""
        gate = self.gate
        if gate is None or gate.next_tick is None or self.lock.locked() or not self.read_back_done:
            return
        if self.clock.monotonic() - self.agent_batch_at < self.config.tick_quiet_seconds:
            return
        if any(not self.merge.caught_up(tp) for tp in self._assigned_inputs()):
            return   # records still to come: their event times drive the ticks
        until = self.now() - self.core.params.lateness_seconds
        if gate.next_tick > until:
            return
        started = self.clock.monotonic()
        async with self.lock:
            results: list[BatchResult] = []
            for now in gate.ticks(until):
                await self._tick(now)
                released = [r for _, _, r in gate.release()]
                if released:
                    results.append(await self._apply_batch(released))
        self._count(results, sum(sum(r.consumed.values()) for r in results), started)

    def install_model(self, value: bytes) -> None:
        """A record of the models channel: the model to serve (every worker, the trainer too)."""
        try:
            model, _card, early_warning = decode_published(value)
        except ValueError as exc:
            log.error("churn model record ignored: %s", exc)
            self.metrics.churn_model_refused()
            return
        self.core.early_warning = early_warning
        self.metrics.churn_early_warning(early_warning.card if early_warning is not None else None)
        previous = self.core.churn_model.version if self.core.churn_model is not None else "hand-set"
        self.core.churn_model = model
        now = model.version if model is not None else "hand-set"
        if now != previous:
            log.info("churn model installed: %s -> %s", previous, now)
        self.metrics.churn_model(model.card if model is not None else None)

    async def _apply_batch(self, records: list[RawRecord], cursor: dict | None = None) -> BatchResult:
        """Process and emit a micro-batch (under the lock): a record failing to be applied, to
        become rows or to be serialized is dead-lettered `processing_error` (emit guard).
        With the batch's offset `cursor` the write is overlapped: it returns with the write in
        flight, and the offsets advance when it completes; without, it returns complete."""
        now = self.clock.time()   # received_at, the processing clock: the plausible window ends at it + the allowed skew
        held = self._held_offsets if self.gate is not None and len(self.gate) else None
        prepared = guarded_batch(
            records, lambda recs, load: self.core.process(recs, load, received_at=now, source_offsets=True, held=held),
            self.load_state, now, self.rows.build_rows)
        result = prepared.result
        if result.latest_event_time:
            self.stream_clock.observe(result.latest_event_time, self.clock.time())
        await self._emit(result, prepared, cursor=cursor, overlap=cursor is not None)
        return result

    def _held_offsets(self, rec: RawRecord) -> list[int]:
        """The offsets of the records the tick gate holds of `rec`'s customer and topic."""
        assert self.gate is not None
        return [offset for _, offset, _ in self.gate.held_of((rec.key, rec.topic))]

    async def release_idle(self) -> None:
        """Records held for an empty partition of their group go once its wait is over, when no
        records arrive to carry them with the agent's next micro-batch (one micro-batch per
        tick: a ClickHouse insert per batch, so the timer does not split the agent's batches).
        The caller skips the tick during a rebalance."""
        if ((self.merge.buffered() or self.ticks_waiting()) and not self.lock.locked()
                and self.clock.monotonic() - self.agent_batch_at >= self.config.batch_within):
            await self.apply_released(max_batches=1)

    # --- operator actions ----------------------------------------------------------------
    async def apply_action(self, rec: RawRecord) -> None:
        """An operator action on an alert case (`cxpulse ack`/`close`), co-partitioned with the
        state: Core.process_actions applies it (dead letters with reasons, duplicates ignored);
        the outputs and the case rows go out like a batch's. A record that fails is
        dead-lettered `processing_error` (never stops the agent, never lost silently)."""
        async with self.lock:
            try:
                result = self.core.process_actions([rec], self.load_state, received_at=self.clock.time())
            except Exception as exc:
                log.exception("action record %s/%d@%d failed", rec.topic, rec.partition, rec.offset)
                result = BatchResult(dead_letters=[dead_letter(rec, "processing_error", f"{type(exc).__name__}: {exc}",
                                                               self.clock.time())])
            await self._emit(result)
        for topic, n in result.consumed.items():
            self.metrics.consumed(topic, n)

    # --- emitting ------------------------------------------------------------------------
    async def _emit(self, result: BatchResult, prepared: PreparedBatch | None = None, *,
                    cursor: dict | None = None, overlap: bool = False) -> None:
        """Publish outputs, write ClickHouse rows (durable), and only then store the states
        and advance the input offsets (`cursor`) of the batch.

        The order makes a crash (kill -9) safe: a state reaches the store's changelog only
        after the batch's outputs are acknowledged by the broker and its rows are in
        ClickHouse, and its offsets count as done (committable) only after that. A crash
        before that leaves the changelog without the batch, so the re-delivered events are
        applied again and their outputs repeated (ReplacingMergeTree, the insert dedup token
        and the compacted score topic absorb repeats). Storing the states first lost data:
        the recovered state already held the events, their re-delivery counted as
        `duplicate`, and scores / rows that had not left the process never did.
        Rows and messages come prepared (`guarded_batch`: a record whose rows or messages
        cannot be built is a dead letter already); rows ClickHouse refuses as data come back
        as `unstorable` dead letters.

        Overlapped (`overlap`, the agent's batches): the write and what follows it run in a
        task (`_complete`) and this returns at once, so the next batch is taken and processed
        meanwhile; its states wait in `pending` (encoded now: what this batch computed) and
        serve the next batch's loads. The batch before is completed first (`settle`): its
        states are stored and its offsets advanced before anything of this one goes out, and
        if its write failed nothing of this one does. A crash with a write in flight loses
        no more than a crash in the serial order: neither batch's states are stored nor
        offsets committed, so both are re-delivered.
        """
        prepared = prepared or prepare(result, self.rows.build_rows)
        if self.left_behind.waiting:
            self._withdraw_due(result, prepared)
        self._track_past_sla(result)
        if self.writing is not None and self.writing.done():
            await self.settle()   # raises what completing the batch before raised: nothing of this one goes out
        # Buffered sends, no await per record: the flush in `_complete` (or the commit's
        # flush) puts them on the broker before the states are stored / the inputs count as done.
        # They go while the batch before is still being written (its rows, flush and states):
        # a score waits for its own batch, not for the write before it.
        for msg in prepared.messages:
            self.outputs.send(msg.kind, msg.key, msg.value)
        rows = sum(len(table_rows) for table_rows in prepared.rows.values())
        grouped = (overlap and self.write_in_flight()
                   and self._queued_rows + rows <= self.config.write_group_rows)
        if not grouped:
            await self.settle()
        m = self.metrics
        for score in result.scores:
            m.churn_risk(score["churn_risk"], score["tier"])
        for alert in result.alerts:
            if alert["status"] == "firing":
                m.alert_raised(alert["type"], alert["tier"], alert["severity"])
            else:
                m.alert_resolved(alert["type"], alert["tier"], alert["severity"])
        for dl in result.dead_letters:
            m.deadlettered(dl["source_topic"], dl["reason"])
        m.scores_published(len(result.scores))
        if grouped:   # the write in flight writes it next, with the others waiting
            self.waiting.add(result.states)
            self.queue.append((result, prepared, cursor, self._generation))
            self._queued_rows += rows
            return
        self.pending.hold(result.states)
        task = asyncio.get_running_loop().create_task(self._complete([(result, prepared, cursor, self._generation)]))
        task.add_done_callback(self._completed)
        self.writing = task
        if not overlap:
            await self.settle()

    async def _complete(self, batches: list[tuple[BatchResult, PreparedBatch, dict | None, int]]) -> None:
        """The rest of `_emit` for `batches` (result, prepared, offset cursor, generation), in
        order: their rows written in one insert per table (durable; refused ones
        dead-lettered), the producer flushed, their states stored, their offsets advanced.
        Then the same for the batches emitted meanwhile, until none waits."""
        m = self.metrics
        while True:
            rows: dict[str, list] = {}
            for _, prepared, _, _ in batches:
                for table, table_rows in prepared.rows.items():
                    rows.setdefault(table, []).extend(table_rows)
            unstorable = []
            if any(rows.values()):
                unstorable = await self.rows.write(rows)
                for msg in messages_of(BatchResult(dead_letters=unstorable)):
                    self.outputs.send(msg.kind, msg.key, msg.value)
                for dl in unstorable:
                    m.deadlettered(dl["source_topic"], dl["reason"])
            if len(self.pending):
                if unstorable or any(prepared.messages for _, prepared, _, _ in batches):
                    await self.outputs.flush()
                for cid, raw, state in self.pending.release():
                    self.store.put(cid, raw, state)
            for result, _, cursor, generation in batches:
                if cursor and generation == self._generation:   # after a revocation the next owner reads them again
                    self.guard.advance(cursor)
                self._schedule(result)
            if not self.queue:
                return
            batches, self.queue, self._queued_rows = self.queue, [], 0
            self.pending, self.waiting = self.waiting, self.pending   # the released overlay waits for the next

    def _completed(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            if self.writing is task:
                self.writing = None
        else:   # kept in `writing`: every later `settle` raises it
            log.error("a micro-batch failed after processing (ClickHouse write, flush or state store): %r; "
                      "no later batch is emitted, its states are not stored nor its offsets committed", exc,
                      exc_info=exc)

    async def settle(self) -> None:
        """Wait for the batch whose write is in flight to complete (rows durable, outputs
        flushed, states stored, offsets advanced). Raises what completing it raised, every
        time: no batch after a failed one is emitted (the agent fails loudly, as a write
        that raises did before the overlap). A cancelled waiter leaves the batch running."""
        task = self.writing
        if task is None:
            return
        await asyncio.shield(task)
        if self.writing is task:
            self.writing = None

    def write_in_flight(self) -> bool:
        return self.writing is not None and not self.writing.done()

    def _schedule(self, result: BatchResult) -> None:
        """Index mode: every customer the result evaluated gets its next check."""
        index, recheck = self.sweep_index, self.config.sweep_recheck_seconds
        if index is not None and recheck is not None:
            for cid, (deadline, as_of) in result.deadlines.items():
                index.schedule(cid, deadline, as_of, recheck)

    def _track_past_sla(self, result: BatchResult) -> None:
        for cid, (tier, n) in result.past_sla.items():
            if n:
                self.past_sla[cid] = (tier, n)
            else:
                self.past_sla.pop(cid, None)
        by_tier: dict[str, int] = {}
        for tier, n in self.past_sla.values():
            by_tier[tier] = by_tier.get(tier, 0) + n
        self.metrics.complaints_past_sla(by_tier)

    # --- input offsets -------------------------------------------------------------------
    async def select_in_order(self, delivered: Sequence[Delivered], stale: int = 0) -> Selection:
        """The delivered records that continue their partitions exactly (OffsetGuard), where
        each stands in the merge (records received but not applied yet)."""
        try:
            await self.start_partitions({d.tp for d in delivered} - self.guard.next.keys())
        except Exception as exc:   # their records are dropped; the stall watchdog seeks back later
            log.warning("could not read committed offsets: %r", exc)
        selection = self.guard.select(((d.tp, d.record.offset, d) for d in delivered), self.merge.expected)
        if stale or selection.redelivered or selection.ahead:
            log.info("batch of %d: %d applied in order, %d of an older generation, %d re-read, ahead of %s",
                     len(delivered) + stale, len(selection.accepted), stale, selection.redelivered,
                     {f"{tp.topic}/{tp.partition}": (self.guard.next[tp], o) for tp, o in selection.ahead.items()})
        return selection

    async def start_partitions(self, tps) -> None:
        generation = self._generation
        for tp in tps:
            offset = await self.inputs.start_offset(tp)
            if generation != self._generation:   # revoked meanwhile: an offset read for the old assignment
                return
            if not self.guard.knows(tp):      # the agent and the watchdog may both get here
                self.guard.start(tp, offset)
                self.merge.start(tp, offset)

    async def seek(self, tp: TP, pos: int) -> None:
        """Read `tp` again from `pos`; records buffered for alignment come again from there."""
        self.merge.drop(tp, pos)
        await self.inputs.seek(tp, pos)

    async def seek_back(self, ahead: dict) -> None:
        """Records beyond `next` were delivered, so some were skipped: read from `next` again."""
        if not ahead:
            return
        seek_now, check = self.guard.seeks_due(ahead)
        for tp in check:   # the hole survived several seeks: is it in the log itself?
            pos = self.guard.next[tp]
            first = await self.inputs.first_offset_at(tp, pos)
            if self.guard.accept_gap(tp, first):
                log.warning("%s/%d has no records in [%d, %d) (a hole in the log); continuing at %d",
                            tp.topic, tp.partition, pos, first, first)
                seek_now[tp] = first
            else:
                seek_now[tp] = pos
        for tp, pos in seek_now.items():
            log.info("%s/%d: records after %d delivered before it; seeking back to %d", tp.topic, tp.partition, pos, pos)
            await self.seek(tp, pos)

    def _assigned_inputs(self) -> list:
        return [tp for tp in self.inputs.assignment() if tp.topic in self._input_topics]   # type: ignore[attr-defined]

    async def watch_stalls(self) -> None:
        """Input partitions that have records beyond `next` but applied none for
        `stall_seconds` are sought back to `next` (records skipped with nothing after them to
        reveal the gap). Partitions nothing was delivered from yet start at their committed
        offset. Not while a micro-batch is in flight (the lock is held): its records are
        released from the event-time buffer but not yet advanced, and a slow emit (a
        ClickHouse insert split by partition) is progress, not a stall — seeking back then
        re-applied the batch and sent its dead letters twice. The caller skips the tick
        during a rebalance. Nor while a batch's write is in flight (its offsets advance when it
        completes)."""
        if self.lock.locked() or self.write_in_flight():
            return
        tps = self._assigned_inputs()
        if not tps:
            return
        generation = self._generation
        try:
            await self.start_partitions([tp for tp in tps if not self.guard.knows(tp)])
            asked = self.merge.clock()
            ends = await self.inputs.log_ends(tps)
        except Exception as exc:   # broker unreachable, rebalance: next tick
            log.info("stall watchdog skipped a tick: %r", exc)
            return
        if generation != self._generation:   # revoked meanwhile: those books are gone (a seek would be to an old offset)
            return
        for tp, end in ends.items():
            if self.guard.knows(tp) and not self.merge.knows(tp):   # kept through a rebalance
                self.merge.start(tp, self.guard.next[tp])
            self.merge.observe_end(tp, end, asked_at=asked)
        held = self.merge.held()   # buffered or paused for event-time alignment: waiting on purpose
        stall = self.config.stall_seconds
        for tp, pos in self.guard.stalled({tp: end for tp, end in ends.items() if tp not in held}, stall).items():
            log.warning("%s/%d: %d records behind and no progress for %.0fs; seeking back to %d",
                        tp.topic, tp.partition, ends[tp] - pos, stall, pos)
            await self.seek(tp, pos)

    async def commit_completed_inputs(self) -> None:
        """Commit each input partition's `next` offset (only offsets whose batches were fully
        emitted), after flushing the producer so their changelog writes are on the broker."""
        assignment = set(self.inputs.assignment())
        offsets = {tp: o for tp, o in self.guard.to_commit().items() if tp in assignment}
        if self.gate is not None:   # a record held for a tick is not applied: commit below it
            for tp, offset, _ in self.gate.held():
                if tp in offsets:
                    offsets[tp] = min(offsets[tp], offset)
        if not offsets:
            return
        await self.outputs.flush()
        if await self.inputs.commit(offsets):
            self.guard.committed_at(offsets)

    def report_consumer_lag(self) -> None:
        """Consumer lag per assigned input partition: log end offset − committed offset.
        Partitions whose log end is not known yet (just (re)assigned) are left out: the
        timer crashed the worker on them after a broker restart (highwater None)."""
        lags = {}
        for tp in self._assigned_inputs():
            end = self.inputs.log_end(tp)
            if end is None:
                continue
            committed = self.guard.committed.get(tp, self.inputs.last_committed(tp))  # before the first batch: the consumer's
            lags[(tp.topic, tp.partition)] = max(0, end - (committed or 0))
        self.metrics.consumer_lag(lags)

    async def find_left_behind(self) -> None:
        """Once per assignment, before its first records are applied: the numbered alerts (churn
        risk, failed recovery) ClickHouse holds firing, never resolved, that the states of this
        worker's customers do not know (pipeline/domain/left_behind_alerts.py). A batch writes
        its rows and sends its outputs before it stores its states, so a crash in between
        leaves its alerts out and its states unstored; the redelivery evaluates the customers at
        other points. Each is withdrawn by the first batch that evaluates its customer as of its
        instant without firing it again (`_withdraw_due`)."""
        generation = self._generation
        self._withdrawn_for = generation
        self.left_behind = LeftBehindAlerts()
        if self.fetch_open_alerts is None:
            return
        async with self.lock:
            await self.settle()   # ClickHouse holds every write of this worker, the store its states
            try:
                stored = await self.rows.run(self.fetch_open_alerts)
            except Exception:   # a clean-up: ClickHouse failing to answer must not stop the worker
                log.exception("could not read the alerts never resolved; none withdrawn for this assignment")
                return
            # a state decoded for each (about 70 µs): 35,000 open alerts held the event loop 2.4 s in one go
            left, owned, held = LeftBehindAlerts(), self._owned_slots(), 0
            async for alert in self._in_slices(stored):
                held += left.hold(alert, self.load_state(alert.customer_id), owned)
            if generation != self._generation:   # revoked meanwhile: the next assignment looks again
                self._withdrawn_for = None
                return
            self.left_behind = left
            if held:
                log.info("%d alert(s) fired by a batch a crash undid: withdrawn unless fired again by the "
                         "time their customers are evaluated as of them", held)

    def _withdraw_due(self, result: BatchResult, prepared: PreparedBatch) -> None:
        """Withdraw, into this batch, the alerts left behind (`find_left_behind`) of its customers
        evaluated as of the alert's instant or later without firing it again."""
        def evaluated(cid: str) -> float:
            return result.deadlines[cid][1] if cid in result.deadlines else float("-inf")
        due = BatchResult(alerts=self.left_behind.withdraw_due(result.states, evaluated))
        if due.alerts:
            log.warning("withdrew %d alert(s) a crash left behind (fired by a batch whose states were not "
                        "stored, not fired again): %s", len(due.alerts),
                        ", ".join(f"{a['customer_id']}/{a['type']}/{a['alert_id']}" for a in due.alerts[:10]))
            extra = prepare(due, self.rows.build_rows)
            result.alerts += due.alerts
            prepared.messages += extra.messages
            for table, rows in extra.rows.items():
                prepared.rows.setdefault(table, []).extend(rows)

    # --- rebalances ----------------------------------------------------------------------
    def on_assigned(self, assigned) -> None:
        """Every assigned input partition is a member of its group from the start (one not heard
        of yet must not let the others run ahead); `start_partitions` adds its offset."""
        self._rescan_in = 0   # index mode: the customers recovered for them are found by the next sweep
        for tp in assigned:
            if tp.topic in self._input_topics:
                self.merge.start(tp)

    async def on_revoked(self, revoked) -> None:
        """Partitions revoked: their offset books go, the records buffered for alignment are
        dropped (never applied: read again from the committed offsets after the rebalance),
        everything paused is resumed, and the past-SLA gauge is recounted by the sweep. Records
        of the old assignment delivered from now on are dropped (`deliver`).

        Then the batch being applied and the writes in flight complete (bounded by
        `drain_seconds`) and the producer is flushed before the worker re-joins the group: their
        states are stored and on the changelog before the next owner recovers the table, but
        their offsets do not advance (the next owner reads their records again from the
        committed offsets; the stored offsets make them duplicates). A state stored after the
        rebalance instead (the write returned later) could land on the changelog after the next
        owner's newer state of that customer, and a recovery after that read the older one
        (docs/fault-tolerance.md, §2c)."""
        self._generation += 1
        self.guard.forget(revoked)
        if self.gate is not None:   # read again from the committed offsets (at or below them) by the next owner
            gone = set(revoked)
            self.gate.drop(lambda item: item[0] not in gone)
            for tp in gone:
                self.progress.pop(tp, None)
        self.inputs.resume(self.merge.resume_all())
        self.merge.clear()
        self.past_sla.clear()   # some of them are another worker's now; the sweep recounts this worker's
        if self.stopping:       # `drain` waits for them (and keeps the lock)
            return

        async def finish_writes() -> None:
            async with self.lock:   # the batch being applied (of the old assignment) emits first
                await self.settle()
                await self.outputs.flush()
        try:
            await asyncio.wait_for(finish_writes(), self.config.drain_seconds)
        except asyncio.TimeoutError:
            log.warning("partitions revoked with a micro-batch still in flight after %.0f s: its states are "
                        "stored when its write completes", self.config.drain_seconds)
        except Exception as exc:   # its offsets were never advanced: the next owner reads it again
            log.warning("partitions revoked after a failed micro-batch: %r", exc)

    # --- time-driven rules ---------------------------------------------------------------
    async def sweep(self) -> None:
        """Time-driven rules for a bounded slice of the store: deadlines passing or close
        (`sla_at_risk`), silence. Only for this worker's customers: the store keeps those of
        partitions given away in a rebalance, whose owner now evaluates (and stores) them.
        The caller skips the tick during a rebalance."""
        if self.sweep_index is not None:
            await self._sweep_indexed()
            return
        if not self.sweep_cursor:
            self.sweep_cursor = list(self.store.keys())
        n = self.config.sweep_max
        chunk, self.sweep_cursor = self.sweep_cursor[:n], self.sweep_cursor[n:]
        await self._sweep_slices(chunk, self.merge.hold_back(self.now()))   # not ahead of a group catching up

    async def _sweep_indexed(self) -> None:
        """Index mode: the customers whose next check is due (at most `sweep_max`), plus a slice
        of the stored customers the index does not hold (rescanned every `sweep_rescan_ticks`)."""
        index = self.sweep_index
        assert index is not None
        n = self.config.sweep_max
        if not self.sweep_cursor and self._rescan_in <= 0:
            self.sweep_cursor = [cid for cid in self.store.keys() if cid not in index]
            self._rescan_in = self.config.sweep_rescan_ticks
        self._rescan_in -= 1
        chunk, self.sweep_cursor = self.sweep_cursor[:n], self.sweep_cursor[n:]
        now = self.merge.hold_back(self.now())   # not ahead of a group catching up
        await self._sweep_slices(list(dict.fromkeys(index.due(now, limit=n) + chunk)), now)

    async def _sweep_slices(self, customers: list[str], now: float) -> None:
        """Evaluate `customers` at stream time `now`, `sweep_slice` at a time, each slice under
        the lock and emitted like a batch (its write overlapped): between slices the lock is
        free, so a sweep with thousands due (the stream time jumping, a refit) delays the
        agent's batches by one slice at a time, not by the whole sweep and its write. A slice
        loads the latest states (`load_state`: those of batches waiting for a write or being
        written come from their overlays)."""
        size = max(1, self.config.sweep_slice)
        for start in range(0, len(customers), size):
            async with self.lock:
                loaded = self.owned_states(customers[start:start + size])
                if not loaded:
                    continue
                result = self.core.sweep(loaded, now)
                if result.scores or result.alerts:
                    await self._emit(result, overlap=True)
                else:
                    self._track_past_sla(result)
                    self._schedule(result)
            await asyncio.sleep(0)   # let a woken agent reach the lock (asyncio.Lock is fair: it goes next)

    def _fits_population(self) -> bool:
        """Whether this worker re-fits the population on the wall-clock timer: the owner of
        input partition 0 when the workers share the store of parameters (ClickHouse, with the
        partition count known), so that every worker serves the same; each worker for itself
        when they cannot share (an embedded chDB is one process's) or nothing stores the fits."""
        return self.populations is None or self.config.partitions is None or 0 in self._input_partitions()

    async def refit_population(self) -> None:
        """Re-fit the churn model's population parameters from this worker's customers (on
        the wall-clock timer, by the worker `_fits_population` names; a learning worker re-fits
        at its event-time ticks instead). The
        fit reads the first POPULATION_MAX_CUSTOMERS owned customers by id (as `fit_population`
        does): their inputs are gathered on the event loop a slice at a time
        (TICK_LOAD_TURN_SECONDS), batches going on between slices, and the fit runs in a thread.
        At 100k customers the old way decoded every state in one go and held the loop for 6-7 s."""
        if self.gate is not None or self.refitting or not self._fits_population():
            return
        self.refitting = True
        try:
            as_of = self.now()
            owned = self._owned_slots()
            inputs: list[PopulationInput] = []
            async for cid in self._in_slices(sorted(self.store.keys())):
                if len(inputs) >= POPULATION_MAX_CUSTOMERS:
                    break
                state = self.load_state(cid)
                if state is not None and state.fed_from(owned):
                    inputs.append(population_input(state, as_of))
            params = await asyncio.get_running_loop().run_in_executor(
                None, fit_population_inputs, inputs, self.core.population)
        finally:
            self.refitting = False
        self._serve_population(params, "re-fitted")
        if self.populations is not None and params.fitted_on:
            try:
                await self.rows.run(self.populations.save, params, self.clock.time())
            except Exception:   # the parameters serve; only a restart before the next re-fit misses them
                log.exception("population parameters not stored")

    async def follow_population(self) -> None:
        """A worker that does not re-fit (`_fits_population`): the parameters the fitting
        worker stored last, when they changed (on a timer, every `POPULATION_READ_SECONDS`)."""
        if not self._fits_population():
            await self.read_population(quiet=True)

    async def read_population(self, quiet: bool = False) -> None:
        """A worker that does not learn: the parameters of the latest stored re-fit, so a
        restarted worker does not score with the priors until its next re-fit (an interval
        after start-up), and one that does not re-fit serves what the fitting worker stored.
        The configured horizon stays. When they change, every customer is due for a sweep."""
        if self.populations is None or self.gate is not None:
            return
        try:
            params = await self.rows.run(self.populations.load)
        except Exception as exc:
            if quiet:   # on the timer: the next read tries again
                log.warning("stored population parameters not read (%r): the current ones serve", exc)
            else:
                log.exception("stored population parameters not read: the starting ones serve")
            return
        if params is None:
            return
        params = replace(params, horizon_days=self.core.population.horizon_days)
        if params == self.core.population:
            return
        self._serve_population(params, "read from the fitting worker's latest re-fit" if quiet
                               else "read back from the latest re-fit")

    def _serve_population(self, params: PopulationParams, how: str) -> None:
        """Score with `params` (re-fitted here, or read from the store) from now on."""
        self.core.use_population(params)
        if self.sweep_index is not None:   # everyone's risk moved: everyone is due
            self.sweep_index.schedule_all(self.now())
        log.info("population %s: %s", how, self.core.population)

    async def live_backtest(self) -> None:
        """Export the live backtest of churn_risk and of the early warning (pipeline/service/
        live_backtest.py), in the sink's thread, once the row sink is open."""
        if self.fetch_backtest_rows is not None and self.rows.is_open:
            await self.rows.run(refresh_live_backtest, self.fetch_backtest_rows, self.metrics.churn_backtest,
                                self.config.churn_horizon_days, self.clock.time(), self.fetch_early_warning_rows)

    # --- erasure and lookups -------------------------------------------------------------
    async def erase_request(self, rec: RawRecord, requested_at: float) -> None:
        """A record of the erasure topic (`cxpulse erase`): the customer of its key is erased
        (`erase`), or, when the key names none (`Core.erasure_of`), the record is dead-lettered
        with the reason and nothing is erased. (A null key used to be skipped silently, and a
        key not UTF-8 raised in the erasure agent.)"""
        cid = self.core.erasure_of(rec, received_at=self.clock.time())
        if isinstance(cid, dict):
            log.error("erasure request %s/%d@%d refused: %s", rec.topic, rec.partition, rec.offset, cid["error"])
            async with self.lock:
                await self._emit(BatchResult(dead_letters=[cid]))
            return
        await self.erase(cid.encode(), requested_at)

    async def erase(self, key: bytes, requested_at: float) -> None:
        """Replace the customer's state by an erasure marker (no personal data; events that
        occurred up to the request and arrive later are dropped) and tombstone its score."""
        async with self.lock:
            await self.settle()   # a batch in flight must not store its state over the marker
            cid = key.decode()
            state = self.load_state(cid) or CustomerState(customer_id=cid)
            self.store.store(cid, state.erasure_marker(requested_at))
            if self.learner is not None:   # nor is the customer kept in the churn model's snapshots
                self.learner.book.forget(cid)
        await self.outputs.delete_score(key)
        log.info("erased customer state (%d-byte key)", len(key))

    def customer_score(self, customer_id: str) -> ScoreDict | None:
        """The customer's current score record, or None (never seen, or erased)."""
        state = self.load_state(customer_id)
        if state is None or not state.n:   # never seen, or erased (an erasure marker)
            return None
        p = profile(state, self.now(), self.core.params, self.core.population, self.core.rates)
        return score_record(state, p)

    # --- stopping ------------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait for the batch in flight (the lock, then its write), commit the input offsets it
        completed, and keep the lock: no batch, sweep or erasure starts on a worker that is
        stopping."""
        self.stopping = True

        async def stop_batches() -> None:
            await self.lock.acquire()
            await self.settle()
        try:
            await asyncio.wait_for(stop_batches(), self.config.drain_seconds)
        except asyncio.TimeoutError:
            log.warning("stopping with a micro-batch still in flight after %.0f s; it will be re-delivered",
                        self.config.drain_seconds)
            return
        except Exception as exc:   # its offsets were never advanced: re-delivered from the last commit
            log.warning("stopping after a failed micro-batch (%r); it will be re-delivered", exc)
            return
        try:
            await self.commit_completed_inputs()
        except Exception as exc:   # the next owner re-delivers from the last commit; offsets in the states dedupe
            log.warning("final commit of input offsets failed: %r", exc)
