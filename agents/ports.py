"""The worker loop's ports (pipeline/service/worker_ports.py) over Faust and the ClickHouse
sink: the customer-state table with the state codec, the output topics, the ClickHouse sink
in its own thread, the input consumer, the system clock. Metrics are pipeline's METRICS."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any, Callable, Iterable, Mapping, TypeVar

import faust

from agents import faust_internals
from pipeline.adapters.clickhouse import rows as ch_rows
from pipeline.adapters.clickhouse.sink import ClickHouseSink, sink_dead_letters
from pipeline.adapters.kafka.kafka_io import first_offset_at
from pipeline.adapters.kafka.model_feed import MODEL_KEY
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.service.live_states import LiveStates
from pipeline.config import Settings
from pipeline.domain.state import CustomerState
from pipeline.learning.churn_model_codec import encode_model
from pipeline.service.processor import BatchResult
from pipeline.service.worker_ports import Rows
from schemas.records import DeadLetterDict

log = logging.getLogger("cxpulse.worker")
R = TypeVar("R")


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class TableStates:
    """The customer-state table: key = customer_id bytes, value = encode_state(state). Decoded
    states are kept between micro-batches while the table holds the very bytes they were
    stored as (pipeline/service/live_states.py): a customer seen again is not decoded again.
    At most `live_max` of them (a decoded state is about 4 KB against 1 KB stored, for a
    customer of ~30 events: 5,000 cost ~20 MB whatever the number of customers)."""

    def __init__(self, table: Any, live_max: int = 5_000) -> None:
        self.table = table
        self.live: LiveStates[CustomerState] = LiveStates(decode_state, max_entries=live_max)

    def load(self, customer_id: str) -> CustomerState | None:
        return self.live.load(customer_id, self.table.get(customer_id.encode()) or None)

    def store(self, customer_id: str, state: CustomerState) -> None:
        self.put(customer_id, encode_state(state), state)

    def encode(self, state: CustomerState) -> bytes:
        return encode_state(state)

    def decode(self, customer_id: str, raw: bytes) -> CustomerState:
        return decode_state(raw, customer_id)

    def put(self, customer_id: str, raw: bytes, state: CustomerState | None) -> None:
        self.table[customer_id.encode()] = raw
        if state is None:
            self.live.forget(customer_id)
        else:
            self.live.stored(customer_id, raw, state)

    def keys(self) -> Iterable[str]:
        return [key.decode() for key in self.table.keys()]


class TopicOutputs:
    """cx.scores, cx.alerts and cx.deadletter, sent by the app's aiokafka producer itself.

    Not through Faust's `send_soon`: its ProducerBuffer sends one message per await through
    `Topic.publish_message` (a FutureMessage, sensors, a callback each), and the flush before
    a batch's states are stored waited for that buffer to drain — in `make bench` the flushes
    took as long as the ClickHouse writes (a third of the paced phase's critical path). Here
    `send` queues the message and one task (`_send_queued`) hands the queue to aiokafka in
    order (aiokafka batches per partition; the key picks the partition, as Faust's path did);
    `flush` waits for that task, for Faust's own buffer (the state table's changelog) and
    aiokafka's batches, then for every message's delivery, and raises the first failure: a
    batch whose outputs did not reach the broker stores no state (pipeline/service/
    worker_loop.py `_complete`), where Faust's path only logged it."""

    def __init__(self, app: faust.App, scores: faust.TopicT, alerts: faust.TopicT, deadletter: faust.TopicT) -> None:
        self.app = app
        self.scores = scores
        topic_of = {"score": scores, "alert": alerts, "deadletter": deadletter}
        self.topic_name = {kind: topic.get_topic_name() for kind, topic in topic_of.items()}
        self._queued: list[tuple[str, bytes | None, bytes]] = []
        self._sent: list[asyncio.Future] = []
        self._sending: asyncio.Task | None = None
        self._failure: BaseException | None = None

    def send(self, kind: str, key: bytes | None, value: bytes) -> None:
        """Queue a message. One task at a time hands the queue to aiokafka, so messages go in
        the order they were sent, also while a `flush` waits (a second task could overtake
        the first one's rest, and a customer's older score land last on the compacted topic)."""
        self._queued.append((self.topic_name[kind], key, value))
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send_queued())
            self._sending.add_done_callback(self._sending_done)

    def _sending_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()   # the next flush raises it

    async def _send_queued(self) -> None:
        producer = faust_internals.kafka_producer(self.app)
        sent = self._sent
        while self._queued:
            queued, self._queued = self._queued, []
            for topic, key, value in queued:
                sent.append(await producer.send(topic, value, key=key))

    async def flush(self) -> None:
        while self._sending is not None and not self._sending.done():
            await asyncio.wait([self._sending])   # sends during the wait go on in the same task
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        await faust_internals.flush_producer(self.app.producer)
        sent, self._sent = self._sent, []
        for delivered in sent:
            await delivered   # raises the delivery error, if any

    async def delete_score(self, key: bytes) -> None:
        await self.scores.send(key=key, value=None)


class TopicModels:
    """The compacted cx.models topic: the churn model to serve, one key, awaited."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic

    async def publish(self, model: Any, card: Any, early_warning: Any = None) -> None:
        await self.topic.send(key=MODEL_KEY, value=encode_model(model, card, early_warning))


class ConsumerInputs:
    """The app's consumer, for the offset books and event-time alignment of the input topics."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app, self.settings = app, settings

    def assignment(self) -> Iterable[Any]:
        return self.app.consumer.assignment()

    async def start_offset(self, tp: Any) -> int:
        """The group's committed offset, or the log start if the group has not committed
        there yet (auto_offset_reset=earliest)."""
        committed = await faust_internals.committed_offset(self.app.consumer, tp)
        if committed is None or committed < 0:
            committed = (await self.app.consumer.earliest_offsets(tp)).get(tp) or 0
        return committed

    async def commit(self, offsets: Mapping[Any, int]) -> bool:
        return await faust_internals.commit(self.app.consumer, offsets)

    async def seek(self, tp: Any, offset: int) -> None:
        try:
            await self.app.consumer.seek_wait({tp: offset})
        except Exception as exc:   # e.g. revoked meanwhile: the next assignment seeks anyway
            log.warning("seek %s/%d -> %d failed: %r", tp.topic, tp.partition, offset, exc)

    async def log_ends(self, tps: list[Any]) -> Mapping[Any, int]:
        return await self.app.consumer.highwaters(*tps)

    def log_end(self, tp: Any) -> int | None:
        return faust_internals.highwater(self.app.consumer, tp)

    async def first_offset_at(self, tp: Any, offset: int) -> int | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, first_offset_at, self.settings, tp.topic, tp.partition, offset)

    def last_committed(self, tp: Any) -> int | None:
        return faust_internals.last_committed(self.app.consumer, tp)

    def pause(self, tps: set[Any]) -> None:
        faust_internals.pause(self.app.consumer, tps)

    def resume(self, tps: set[Any]) -> None:
        faust_internals.resume(self.app.consumer, tps)


class ExecutorRowSink:
    """The ClickHouse sink in its own thread: opens (and migrates) ClickHouse on first use,
    writes rows durably and hands back the rows it refused as data as `unstorable` dead letters."""

    def __init__(self, sink: ClickHouseSink, executor: Executor) -> None:
        self.sink, self.executor = sink, executor
        self._opening: asyncio.Lock | None = None
        self._open = False

    def build_rows(self, result: BatchResult) -> Rows:
        return ch_rows.batch_rows(result)

    @property
    def is_open(self) -> bool:
        return self._open

    async def _ensure_open(self) -> None:
        """Open (and migrate) ClickHouse on first use, in the sink's thread."""
        if not self._open:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if not self._open:
                    await asyncio.get_running_loop().run_in_executor(self.executor, self.sink.open)
                    self._open = True

    async def write(self, rows: Rows) -> list[DeadLetterDict]:
        """Write rows in the sink's thread; opens (and migrates) ClickHouse on first use."""
        await self._ensure_open()
        await asyncio.get_running_loop().run_in_executor(self.executor, self.sink.write, rows)
        return sink_dead_letters(self.sink.take_rejected(), time.time())

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """`fn(*args)` in the sink's thread; opens (and migrates) ClickHouse on first use."""
        await self._ensure_open()
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.sink.close()
