"""Every use of Faust and aiokafka internals in the worker, in one place, and the versions
they were read from.

The worker relies on private attributes and behaviour of faust-streaming, mode-streaming
and aiokafka (read in the installed sources of the pinned versions, PINNED below). An
upgrade can silently change any of them, so `check_versions()` runs when the app is
created (agents/factory.py) and refuses to start on other versions: re-read the uses
below against the new sources, then update PINNED together with pyproject.toml.

The uses:
- `install_aiokafka_patch()`: aiokafka's GroupCoordinator keeps its member id on
  ILLEGAL_GENERATION (`GroupCoordinator._send_req`, `reset_generation`; below).
- `install_empty_fetch_pause()`: aiokafka's `Fetcher._proc_fetch_request` waits a moment
  after a fetch that brought no records, before the next one goes out (below;
  `Fetcher._in_flight`).
- `committed_offset()`: the group's committed offset of a partition, asked from the broker
  in the consumer's thread (`Consumer._thread`, `ConsumerThread._ensure_consumer()`).
- `commit()`: Faust's own commit path without its ack books, in the consumer's thread
  (`AIOKafkaConsumerThread.call_thread`, `.assignment()`, `._commit`).
- `last_committed()`: Faust's record of committed offsets (`Consumer._committed_offset`).
- `pause()` / `resume()` / `highwater()`, for event-time alignment
  (pipeline/service/event_time_merge.py): Faust's `Consumer.pause_partitions` /
  `resume_partitions` take partitions out of (and back into) the set it fetches and
  delivers from; Faust clears the pauses of revoked partitions itself and keeps those of
  partitions it keeps in a rebalance (the worker resumes everything it paused when
  partitions are revoked). `Consumer.highwater` is the log end offset Faust keeps from its
  fetches (not an int before the first fetch of a partition).
- `kafka_producer()`: the aiokafka producer inside Faust's (`Producer._ensure_producer()`),
  which the worker's outputs are sent with (agents/ports.py `TopicOutputs`).
- `RecoveryWatchdog`: the table recovery's progress (`Recovery._recovery_started_at`,
  `Recovery._active_events_received_at`).
- `BatchingConsumer` / `BatchingTransport` (batch intake, below): a subclass of the aiokafka
  driver's `Consumer` whose `_drain_messages` (a copy of `faust.transport.consumer.Consumer.
  _drain_messages` with one change) hands the records of the input topics over a fetch at a
  time; the app creates it through `App._new_transport`.

## Batch intake (the hot path, #18)

Faust delivers every fetched record on its own: `Consumer._drain_messages` runs
`wait_first(callback(message), suspend_flow.wait())` per record (four tasks and an
`asyncio.wait`), the conductor puts it in the agent's stream, and the stream hands it out
through its chain of async iterators, with sensors and acks per record — about half the
event loop's work per input event in `make bench` (bench/results/profile.txt). The input
topics need none of it: the worker decodes, orders and acknowledges their records itself
(pipeline/service/worker_loop.py). `BatchingConsumer._drain_messages` keeps Faust's loop for
every other topic (changelogs, actions, erasures) and collects the records of the input
topics (`WorkerApp.batch_topics`) of one fetch in a list, put as one item on
`input_batches` (`InputBatches`: at most 10,000 records, the stream buffer's role; a full
buffer holds the fetcher). As in Faust's loop, the put gives up when the flow is suspended (a rebalance):
those records are of the old generation, which the worker drops anyway, and Faust seeks
every assigned partition back to its committed offset. The agent of the input topics
(agents/factory.py) still subscribes the consumer to them, and takes the batches from
`input_batches` instead of its stream.

## aiokafka 0.14.0: keep the member id on ILLEGAL_GENERATION (as the Java client and kafka-python do).

aiokafka answers an ILLEGAL_GENERATION error on OffsetCommit, Heartbeat or SyncGroup with
`GroupCoordinator.reset_generation()`, which forgets the generation *and the member id*:
the consumer then re-joins as a brand-new member and its old member id stays registered
in the group until the broker expires it. The Java consumer stopped doing that in Kafka
3.2 (KAFKA-13419, apache/kafka#11451) and kafka-python in 2.x (dpkp/kafka-python#3017):
ILLEGAL_GENERATION resets the generation only, and the member re-joins under its own id
(UNKNOWN_MEMBER_ID still resets both).

Why it matters here (docs/fault-tolerance.md, scenario 2): the embedded broker (noida-db
0.2.3) answers an OffsetCommit sent by the current members while another member is
joining with ILLEGAL_GENERATION (Apache Kafka accepts it or answers
REBALANCE_IN_PROGRESS), and it never drops a member that fails to re-join: it keeps the
orphaned member id and names it the group leader. The worker commits every 0.2-1 s, so
when a second worker joins, the first one's commit almost always lands in that window;
with aiokafka's reset both workers then join as followers of the orphaned id, no leader
ever sends the assignment, and SyncGroup fails every session timeout — the group of two
never forms. Keeping the member id, the first worker re-joins as itself and the group
forms within about a second.

`install_aiokafka_patch()` patches aiokafka's `GroupCoordinator` in the current process (idempotent):
the coordinator's `_send_req` notes when a response to OffsetCommit, Heartbeat or
SyncGroup carries ILLEGAL_GENERATION, and `reset_generation()` called while handling that
response (aiokafka calls it synchronously after the await, for each failed partition)
keeps the member id. Any other reset (UNKNOWN_MEMBER_ID, leaving the group, a failed
JoinGroup) is unchanged. Remove once aiokafka keeps the member id itself.

## aiokafka 0.14.0 on a broker that answers an empty fetch at once: pause after it.

aiokafka's fetcher sends the next fetch to a broker as soon as the previous one is answered
(`Fetcher._fetch_requests_routine`, `_proc_fetch_request`), and relies on the broker to hold
a fetch that finds nothing for `fetch_max_wait_ms` (Faust sets 1,500 ms), as Apache Kafka
does. The embedded broker (noida-db 0.2.3) ignores `fetch_max_wait_ms` and `fetch_min_bytes`
and answers an empty fetch at once. Each fetch is built and parsed in Python, with every
assigned partition in it (inputs, changelogs, actions, erasures), so an idle worker sent
1,400–3,200 fetch requests a second: 0.6–0.8 of a core in the consumer's thread, and 0.14 in
the broker, with nothing to do, on the 2 cores the broker, the load and the worker share
(#18; every drill, demo and bench on the embedded broker paid it).

`install_empty_fetch_pause()` patches `Fetcher._proc_fetch_request` in the current process
(idempotent): when a fetch brought no new records (its result, `has_new_data`, is False) and
the assignment is still the one it was sent for, its task waits `EMPTY_FETCH_PAUSE` before
it ends. The fetcher sends no new request to that broker while the task is pending
(`Fetcher._in_flight`), so empty fetches come at most about 1/EMPTY_FETCH_PAUSE times a
second, and a record that arrives just after an empty answer waits at most
EMPTY_FETCH_PAUSE longer. On Apache Kafka an empty answer comes only after the broker waited
`fetch_max_wait_ms`, so the pause changes nothing there. A fetch that brought records is
never delayed; a task cancelled during the pause (revocation, close) ends at once and
quietly, as aiokafka's own fetch tasks do.
"""
from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import logging
import time
from typing import Any, Awaitable, Callable, Iterable, Mapping

from faust.transport import consumer as faust_consumer   # the module Faust's drain loop lives in
from faust.transport.drivers import aiokafka as faust_aiokafka
from pipeline.service import recovery_check

log = logging.getLogger("cxpulse.kafka_compat")
wlog = logging.getLogger("cxpulse.worker")

PINNED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}


# --- versions --------------------------------------------------------------------------
class UnsupportedVersion(RuntimeError):
    """An installed Faust/aiokafka version differs from the one these internals were read from."""


def check_versions(version: Callable[[str], str] = importlib.metadata.version) -> None:
    """Fail loudly when faust-streaming, mode-streaming or aiokafka is not the pinned version."""
    wrong = []
    for name, pinned in PINNED.items():
        try:
            installed = version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            wrong.append(f"{name} {installed} (pinned {pinned})")
    if wrong:
        raise UnsupportedVersion(
            "the cxpulse worker uses private internals of faust-streaming, mode-streaming and aiokafka "
            f"read from the pinned versions, and found {', '.join(wrong)}. Install the versions of "
            "pyproject.toml (make install), or re-check every use listed in agents/faust_internals.py "
            "against the new sources and update PINNED there.")


# --- the aiokafka patch ------------------------------------------------------------------
ILLEGAL_GENERATION = 22
_MARK = "_cxpulse_keep_member_id"   # member id to keep on the next reset_generation(), or None


def illegal_generation(response: Any) -> bool:
    """True for an OffsetCommit, Heartbeat or SyncGroup response that says ILLEGAL_GENERATION."""
    name = type(response).__name__
    if name.startswith("OffsetCommitResponse"):
        return any(error == ILLEGAL_GENERATION for _topic, parts in response.topics for _p, error in parts)
    if name.startswith(("HeartbeatResponse", "SyncGroupResponse")):
        return response.error_code == ILLEGAL_GENERATION
    return False


def install_aiokafka_patch() -> bool:
    """Patch aiokafka's GroupCoordinator; returns False when it was already patched."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    if getattr(GroupCoordinator, "_cxpulse_patched", False):
        return False
    send_req, reset_generation = GroupCoordinator._send_req, GroupCoordinator.reset_generation

    async def _send_req(self, request):
        setattr(self, _MARK, None)
        response = await send_req(self, request)
        if illegal_generation(response) and self.member_id:
            setattr(self, _MARK, self.member_id)
        else:
            setattr(self, _MARK, None)
        return response

    def _reset_generation(self):
        member_id, generation = self.member_id, self.generation
        reset_generation(self)
        if member_id and getattr(self, _MARK, None) == member_id:
            self.member_id = member_id
            if generation >= 0:   # once per response, not per failed partition
                log.info("group %s: generation %d out of date (ILLEGAL_GENERATION); re-joining as member %s",
                         self.group_id, generation, member_id)

    GroupCoordinator._send_req = _send_req
    GroupCoordinator.reset_generation = _reset_generation
    GroupCoordinator._cxpulse_patched = True
    return True


# --- the empty-fetch pause ----------------------------------------------------------------
EMPTY_FETCH_PAUSE = 0.01   # seconds: at most ~100 empty fetches a second; a record waits at most 10 ms more


def install_empty_fetch_pause(pause: float = EMPTY_FETCH_PAUSE) -> bool:
    """Patch aiokafka's Fetcher to wait `pause` after a fetch that brought no new records
    (module docstring); returns False when it was already patched."""
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher, "_cxpulse_empty_fetch_pause", None) is not None:
        return False
    proc_fetch_request = Fetcher._proc_fetch_request

    async def _proc_fetch_request(self, assignment, node_id, request):
        has_new_data = await proc_fetch_request(self, assignment, node_id, request)
        if not has_new_data and assignment.active:
            try:
                await asyncio.sleep(Fetcher._cxpulse_empty_fetch_pause)
            except asyncio.CancelledError:   # as aiokafka's own: a cancelled fetch task ends quietly
                return False
        return has_new_data

    Fetcher._proc_fetch_request = _proc_fetch_request
    Fetcher._cxpulse_empty_fetch_pause = pause
    return True


# --- the consumer's offsets ---------------------------------------------------------------
async def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The group's committed offset of `tp`, asked from the broker (Faust keeps a copy only
    after its post-assignment seek and exposes none), in the consumer's own thread."""
    from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

    thread = consumer._thread
    return await thread.call_thread(thread._ensure_consumer().committed, ensure_aiokafka_TP(tp))


async def commit(consumer: Any, offsets: Mapping[Any, int]) -> bool:
    """Commit `offsets` through Faust's own commit path, minus its ack books (the input topics
    are `acks=False`: pipeline/service/offset_guard.py decides what is committed).

    Only the partitions assigned when the commit runs in the consumer's thread, and nothing
    (False) when none of them is: Faust's `AIOKafkaConsumerThread._commit` keeps the assigned
    ones itself and hands aiokafka an empty dict when a rebalance took them all after the
    worker chose them (the assignment is empty from the revocation to the new assignment);
    aiokafka raises ValueError on it and Faust *crashes the consumer* on any exception there:
    the worker stopped (the two-worker catch-up drill, once in 15 runs)."""
    thread = consumer._thread

    async def commit_assigned() -> bool:
        assigned = thread.assignment()
        kept = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        return bool(kept) and bool(await thread._commit(kept))   # no await between the two looks

    return bool(await thread.call_thread(commit_assigned))


def last_committed(consumer: Any, tp: Any) -> int | None:
    """Faust's record of the committed offset of `tp` (set by its post-assignment seek)."""
    return consumer._committed_offset.get(tp)


# --- fetching: pause, resume, log end --------------------------------------------------------
def pause(consumer: Any, tps: Iterable[Any]) -> None:
    """Stop fetching `tps`, but still deliver the records of theirs Faust has fetched already.

    `Consumer.pause_partitions` alone takes `tps` out of the very set `Consumer.getmany`
    filters its current fetch by, so the rest of a fetch being delivered was dropped for a
    paused partition: the worker saw the gap, sought back and read those records again (in
    `make bench`, 95 seeks; of 28,055 records delivered in the batches with a gap, 8,586 could
    be applied). Faust's own flow control for a full stream buffer pauses the way this does:
    out of the active set (no more fetches), into `_buffered_partitions` (still delivered)."""
    from faust.transport.consumer import ensure_TPset

    tps = ensure_TPset(tps)
    if tps:
        consumer.pause_partitions(tps)
        consumer._buffered_partitions.update(tps)


def resume(consumer: Any, tps: Iterable[Any]) -> None:
    """Undo `pause`. Partitions are made Faust TPs first: Faust's `resume_partitions` adds the
    partitions it is given to the active set unconverted, and `Consumer.getmany` asserts that
    set holds TPs only (an aiokafka TopicPartition there crashed the fetcher in a rebalance
    drill: `AssertionError` in `_get_active_partitions`, the worker stopped)."""
    from faust.transport.consumer import ensure_TPset

    tps = ensure_TPset(tps)
    consumer._buffered_partitions.difference_update(tps)
    tps &= set(consumer.assignment())
    if tps:
        consumer.resume_partitions(tps)


def highwater(consumer: Any, tp: Any) -> int | None:
    """The log end offset of `tp` as of the consumer's last fetch (None before the first)."""
    try:
        end = consumer.highwater(tp)
    except Exception:   # not assigned (any more)
        return None
    return end if isinstance(end, int) and end >= 0 else None


# --- batch intake ------------------------------------------------------------------------------
INPUT_BATCHES_RECORDS = 10_000   # fetched input records waiting for the worker loop, at most (the stream buffer's role)


class InputBatches:
    """Fetched records of the input topics waiting for the worker loop, a fetch per item,
    at most `max_records` of them: a full buffer holds the fetcher (one producer, the drain
    loop; one consumer, the input agent). The bound is in records, not fetches: while the loop
    waits for a ClickHouse write, a paced stream's fetches are a few records each, and a bound
    of a few fetches held the fetcher with a few dozen records buffered, so micro-batches
    stayed small and the worker fell behind at half its catch-up rate."""

    def __init__(self, max_records: int = INPUT_BATCHES_RECORDS) -> None:
        self.max_records = max_records
        self._fetches: collections.deque[list] = collections.deque()
        self._records = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        """Records buffered."""
        return self._records

    async def put(self, fetch: list) -> None:
        """Add one fetch's records; waits while the buffer is full."""
        while self._records >= self.max_records:
            self._changed.clear()
            await self._changed.wait()
        self._fetches.append(fetch)
        self._records += len(fetch)
        self._changed.set()

    async def take(self, most: int) -> list:
        """The buffered fetches, oldest first, until `most` records are taken (a fetch is never
        split): waits only while nothing is buffered (adaptive micro-batches)."""
        while not self._fetches:
            self._changed.clear()
            await self._changed.wait()
        taken: list = []
        while self._fetches and len(taken) < most:
            fetch = self._fetches.popleft()
            taken.extend(fetch)
            self._records -= len(fetch)
        self._changed.set()
        return taken


class BatchingConsumer(faust_aiokafka.Consumer):
    """The aiokafka driver's consumer, handing the records of `app.batch_topics` to
    `input_batches` a fetch at a time (module docstring, "Batch intake")."""

    input_batches: InputBatches

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.input_batches = InputBatches()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover  (exercised by make faults / bench)
        # A copy of faust.transport.consumer.Consumer._drain_messages (faust-streaming 0.15.3):
        # records of the batch topics are collected per fetch instead of `callback(message)`.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        batch_topics = frozenset(getattr(self.app, "batch_topics", ()))
        put_batch = self.input_batches.put

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    batch: list = []
                    async for tp, message in ait:
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            if message.topic in batch_topics:
                                batch.append(message)
                                set_read_offset(tp, offset)
                                continue
                            num_since_yield += 1
                            if num_since_yield > yield_every:
                                await sleep(0)
                                num_since_yield = 0
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    if batch:
                        await self.wait_first(put_batch(batch), self.suspend_flow.wait())
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class BatchingTransport(faust_aiokafka.Transport):
    """The aiokafka transport with the batching consumer."""

    Consumer = BatchingConsumer


# --- the producer --------------------------------------------------------------------------
def kafka_producer(app: Any) -> Any:
    """The app's aiokafka producer (started with the app), for sends that skip Faust's
    per-message path (agents/ports.py `TopicOutputs`)."""
    return app.producer._ensure_producer()


async def flush_producer(producer: Any) -> None:
    """Put every buffered message on the broker. Faust's `Producer.flush` drains its
    `ProducerBuffer` with `flush_atmost(None)`, which returns as soon as no message was sent
    within 0.1 s — with messages still buffered (faust/transport/producer.py) — and then
    flushes only what aiokafka already holds. Under load a commit could then go before the
    changelog records the state table sent with `send_soon`: a crash after it would lose
    them. So flush until the buffer is empty (while the broker is unreachable this waits, as
    a commit must)."""
    while producer.buffer.size:
        await producer.buffer.flush()
    await producer.flush()


# --- table recovery ------------------------------------------------------------------------
RECOVERY_STALL_SECONDS = 3.0


class RecoveryWatchdog:
    """Table recovery that stalled because its changelog records were fetched and dropped
    (a Faust race when two rebalances follow each other: pipeline/service/recovery_check.py):
    seek those changelog partitions back to the next offset the recovery needs."""

    def __init__(self, app: Any, stall_seconds: float = RECOVERY_STALL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.seeks: dict[Any, float] = {}   # changelog tp -> when it was last sought (one seek per stall period)

    async def tick(self, seek: Callable[[Any, int], Awaitable[None]]) -> None:
        recovery = self.app.tables.recovery
        if not recovery.in_recovery or recovery._recovery_started_at is None:
            return
        tps = [tp for tp in recovery.active_tps if tp in recovery.active_highwaters]
        if not tps:
            return
        positions = {}
        try:
            for tp in tps:
                positions[tp] = await asyncio.wait_for(self.app.consumer.position(tp), timeout=1.0)
        except Exception as exc:   # rebalance, no position yet: next tick
            wlog.info("recovery watchdog skipped a tick: %r", exc)
            return
        started = recovery._recovery_started_at
        last_event_at = dict(recovery._active_events_received_at)
        for tp, at in self.seeks.items():
            if at >= started:
                last_event_at[tp] = max(at, last_event_at.get(tp, at))
        seeks = recovery_check.stalled(dict(recovery.active_offsets), dict(recovery.active_highwaters), positions,
                                       last_event_at, started, self.clock(), self.stall_seconds)
        for tp, pos in seeks.items():
            wlog.warning("table recovery of %s/%d stalled: the consumer is at %s but the recovery needs %d "
                         "(records fetched and dropped during a rebalance); seeking back to %d",
                         tp.topic, tp.partition, positions[tp], pos, pos)
            self.seeks[tp] = self.clock()
            await seek(tp, pos)
