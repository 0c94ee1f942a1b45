"""agents.faust_internals and agents.factory: the pinned-version check, that nothing but
agents.app builds objects or patches aiokafka at import, and what create_app wires."""
from __future__ import annotations

import collections
import subprocess
import sys

import pytest

from agents import faust_internals


def test_the_pinned_versions_are_installed():
    faust_internals.check_versions()


def test_another_version_fails_loudly_naming_it():
    versions = {**faust_internals.PINNED, "aiokafka": "0.15.0"}
    with pytest.raises(faust_internals.UnsupportedVersion, match=r"aiokafka 0\.15\.0 \(pinned 0\.14\.0\)"):
        faust_internals.check_versions(versions.__getitem__)


def test_a_missing_package_fails_loudly():
    def version(name: str) -> str:
        if name == "mode-streaming":
            raise faust_internals.importlib.metadata.PackageNotFoundError(name)
        return faust_internals.PINNED[name]

    with pytest.raises(faust_internals.UnsupportedVersion, match="mode-streaming not installed"):
        faust_internals.check_versions(version)


def test_the_pins_agree_with_pyproject():
    text = (faust_internals.__file__.rsplit("/agents/", 1)[0] + "/pyproject.toml")
    with open(text) as f:
        pyproject = f.read()
    for name, version in faust_internals.PINNED.items():
        assert f'"{name}=={version}"' in pyproject


def test_importing_the_worker_modules_builds_nothing_and_patches_nothing():
    code = ("import agents.factory, agents.ports, agents.faust_internals\n"
            "from aiokafka.consumer.group_coordinator import GroupCoordinator\n"
            "assert not getattr(GroupCoordinator, '_cxpulse_patched', False)\n"
            "import faust\n"
            "objs = [v for m in (agents.factory, agents.ports, agents.faust_internals) for v in vars(m).values()\n"
            "        if isinstance(v, faust.App)]\n"
            "assert objs == [], objs\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_create_app_wires_a_worker_loop_to_faust(tmp_path):
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    from agents.factory import PRODUCER_MAX_BATCH_BYTES, create_app
    from agents.ports import TableStates
    from pipeline.config import Settings

    settings = Settings(data_dir=tmp_path)
    app = create_app(settings)
    loop = app.worker_loop
    assert app.settings is settings and loop is not None
    assert set(app.agents) == {"agents.app.score_events", "agents.app.apply_actions", "agents.app.erase_customers"}
    assert isinstance(loop.store, TableStates) and loop.store.table is app.tables["customer-state"]
    assert loop.config.input_topics == set(settings.input_topics)
    assert loop.config.batch_max == settings.batch_max
    assert loop.config.write_group_rows == settings.write_group_rows
    assert GroupCoordinator._cxpulse_patched
    # the producer's per-partition batch: Faust's 16 KiB default held a live worker's scores
    # behind the broker's round trips; aiokafka gets the larger one
    assert app.producer._settings_default()["max_batch_size"] == PRODUCER_MAX_BATCH_BYTES > 16384


def test_flush_producer_waits_until_faust_buffer_is_empty():
    """Faust's ProducerBuffer.flush gives up after 0.1 s without a send, messages still buffered;
    the worker's flush (before every state write and commit) must not."""
    import asyncio

    from agents.faust_internals import flush_producer

    class Buffer:
        size = 5

        async def flush(self) -> None:   # like flush_atmost(None) timing out after 2 sends
            self.size = max(0, self.size - 2)

    class Producer:
        def __init__(self) -> None:
            self.buffer, self.flushed_with = Buffer(), None

        async def flush(self) -> None:
            self.flushed_with = self.buffer.size

    p = Producer()
    asyncio.run(flush_producer(p))
    assert p.buffer.size == 0 and p.flushed_with == 0


def test_a_partition_paused_while_its_fetch_is_delivered_still_delivers_that_fetch(tmp_path):
    """Pausing stops further fetches of a partition; the records of it Faust fetched already
    are still delivered (Faust's pause_partitions alone dropped them: a gap, a seek back and
    the records read again)."""
    import asyncio

    from aiokafka.structs import ConsumerRecord

    from agents.factory import create_app
    from pipeline.config import Settings

    app = create_app(Settings(data_dir=tmp_path))
    consumer = app.consumer
    a, b = (app.consumer._new_topicpartition(t, 0) for t in ("cx.orders", "cx.touchpoints"))
    consumer._set_active_tps({a, b})

    def rec(tp, offset):
        return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"{}", None, 1, 2, ())

    records = {a: [rec(a, i) for i in range(3)], b: [rec(b, i) for i in range(3)]}

    async def wait_next_records(timeout):
        return records, consumer._get_active_partitions()

    consumer._wait_next_records = wait_next_records
    consumer.highwater = lambda tp: 3   # the end offset Faust's monitor tracks (no broker here)
    consumer.assignment = lambda: {a, b}

    async def drain() -> list:
        seen = []
        async for tp, message in consumer.getmany(timeout=0.1):
            seen.append((tp.topic, message.offset))
            if len(seen) == 1:
                faust_internals.pause(consumer, {a, b})   # mid-delivery, as the worker's flow control does
        return seen

    seen = asyncio.run(drain())
    assert sorted(seen) == sorted((tp.topic, r.offset) for tp, rs in records.items() for r in rs)
    assert not {a, b} & consumer._get_active_partitions()   # no more fetches of either
    faust_internals.resume(consumer, {a, b})
    assert not consumer._buffered_partitions & {a, b}


def test_pause_and_resume_keep_only_faust_tps_in_the_active_set(tmp_path):
    """Partitions given as aiokafka TopicPartitions (as a rebalance callback hands them) are
    made Faust TPs: Faust's resume_partitions adds what it is given to the active set as is,
    and getmany asserts that set holds TPs only (the fetcher crashed in the rebalance drill)."""
    from aiokafka.structs import TopicPartition

    from agents.factory import create_app
    from faust.types import TP
    from pipeline.config import Settings

    app = create_app(Settings(data_dir=tmp_path))
    consumer = app.consumer
    a, b = (consumer._new_topicpartition(t, 0) for t in ("cx.orders", "cx.touchpoints"))
    consumer._set_active_tps({a, b})
    consumer.assignment = lambda: {a, b}
    raw = {TopicPartition("cx.orders", 0), TopicPartition("cx.touchpoints", 0)}

    faust_internals.pause(consumer, raw)
    assert not consumer._get_active_partitions()
    faust_internals.resume(consumer, {TopicPartition("cx.orders", 0)})
    active = consumer._get_active_partitions()   # asserts every member is a TP
    assert active == {a} and all(type(tp) is TP for tp in active)
    assert all(type(tp) is TP for tp in consumer._buffered_partitions)


# --- batch intake ------------------------------------------------------------------------------
def test_create_app_builds_the_batching_consumer_for_the_input_topics(tmp_path):
    from agents.factory import create_app
    from pipeline.config import Settings

    settings = Settings(data_dir=tmp_path)
    app = create_app(settings)
    assert app.batch_topics == frozenset(settings.input_topics)
    assert isinstance(app.transport, faust_internals.BatchingTransport)
    assert isinstance(app.consumer, faust_internals.BatchingConsumer)
    assert app.consumer.input_batches.max_records == faust_internals.INPUT_BATCHES_RECORDS


class _Flag:
    def __init__(self) -> None:
        self.set_ = False

    def is_set(self) -> bool:
        return self.set_


class _DrainStub:
    """What BatchingConsumer._drain_messages reads of its consumer, with fetches given as lists
    of (tp, message); the fetcher stops after the last one."""

    consumer_stopped_errors = ()
    should_stop = False

    def __init__(self, fetches, batch_topics):
        import asyncio
        from types import SimpleNamespace

        self.fetches = list(fetches)
        self.fetcher = SimpleNamespace(_stopped=_Flag())
        self._stopped = _Flag()
        self._read_offset = collections.defaultdict(lambda: None)   # as Faust keeps it
        self._commit_every = None
        self._n_acked = 0
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: False),
                                   batch_topics=frozenset(batch_topics))
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.input_batches = faust_internals.InputBatches()
        self.suspend_flow = asyncio.Event()
        self.called = []
        self.log = SimpleNamespace(exception=lambda *a: None, info=lambda *a: None)

    async def callback(self, message):
        self.called.append(message)

    async def getmany(self, timeout):
        fetch = self.fetches.pop(0)
        if not self.fetches:
            self.fetcher._stopped.set_ = True
        for tp, message in fetch:
            yield tp, message

    async def sleep(self, seconds):
        pass

    async def wait_first(self, *coros):
        import asyncio

        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()


def _msg(topic, partition, offset):
    from types import SimpleNamespace

    return SimpleNamespace(topic=topic, partition=partition, offset=offset, tp=(topic, partition))


def test_the_drain_hands_a_fetch_of_input_records_over_as_one_batch_and_the_rest_one_by_one():
    import asyncio

    a0, a1, b0 = _msg("cx.touchpoints", 0, 0), _msg("cx.touchpoints", 0, 1), _msg("cx.orders", 1, 7)
    c0, old = _msg("cx.actions", 0, 3), _msg("cx.touchpoints", 0, 0)
    second = _msg("cx.touchpoints", 0, 2)
    stub = _DrainStub([[(a0.tp, a0), (c0.tp, c0), (b0.tp, b0), (a1.tp, a1)],
                       [(old.tp, old), (second.tp, second)]],
                      batch_topics={"cx.touchpoints", "cx.orders"})
    async def run():
        await faust_internals.BatchingConsumer._drain_messages(stub, stub.fetcher)
        batches = []
        while len(stub.input_batches):
            batches.append(await stub.input_batches.take(1))   # a fetch is never split
        return batches

    batches = asyncio.run(run())
    # one item per fetch, in fetch order; the record already read (offset below the read offset) is dropped
    assert batches == [[a0, b0, a1], [second]]
    assert stub.called == [c0]   # other topics: Faust's per-record callback, as before
    assert stub._read_offset == {a0.tp: 2, b0.tp: 7, c0.tp: 3}


def test_a_batch_is_given_up_when_the_flow_is_suspended_for_a_rebalance():
    import asyncio

    async def run():
        a0 = _msg("cx.touchpoints", 0, 0)
        stub = _DrainStub([[(a0.tp, a0)]], batch_topics={"cx.touchpoints"})
        stub.input_batches = faust_internals.InputBatches(max_records=1)
        await stub.input_batches.put(["earlier fetch, not taken yet"])   # full: the put waits
        stub.suspend_flow.set()
        await asyncio.wait_for(faust_internals.BatchingConsumer._drain_messages(stub, stub.fetcher), 1.0)
        return len(stub.input_batches), await stub.input_batches.take(10)

    assert asyncio.run(run()) == (1, ["earlier fetch, not taken yet"])


def test_a_micro_batch_takes_the_buffered_fetches_up_to_batch_max_and_waits_only_when_empty():
    import asyncio

    async def run():
        batches = faust_internals.InputBatches()
        for fetch in ([1], [2, 3], [4], [5, 6, 7], [8]):
            await batches.put(fetch)
        first = await batches.take(4)
        second = await batches.take(4)
        waiting = asyncio.ensure_future(batches.take(4))
        await asyncio.sleep(0.01)
        assert not waiting.done()           # nothing buffered: it waits
        await batches.put([9])
        return first, second, await asyncio.wait_for(waiting, 1.0), len(batches)

    first, second, third, left = asyncio.run(run())
    assert first == [1, 2, 3, 4]        # stops once at batch_max
    assert second == [5, 6, 7, 8]       # what is buffered, no more
    assert third == [9] and left == 0


def test_the_buffer_holds_the_fetcher_by_records_not_fetches():
    """Many small fetches (a paced stream) are buffered up to the record bound: a micro-batch
    then takes them all, instead of the fetcher stopping after a few fetches."""
    import asyncio

    async def run():
        batches = faust_internals.InputBatches(max_records=100)
        for i in range(50):
            await asyncio.wait_for(batches.put([i, i]), 1.0)   # 50 fetches of 2: room for all
        held = asyncio.ensure_future(batches.put(["more"]))
        await asyncio.sleep(0.01)
        assert not held.done()              # 100 records: the fetcher waits
        taken = await batches.take(1000)
        await asyncio.wait_for(held, 1.0)   # room again: it goes on
        return taken, await batches.take(1000)

    taken, rest = asyncio.run(run())
    assert len(taken) == 100 and rest == ["more"]


def test_the_worker_sweeps_by_the_index_unless_told_none(tmp_path, monkeypatch):
    """The sweep index is the default (a tick touches only customers with something due);
    CXPULSE_SWEEP_RECHECK_SECONDS=none brings back the round-robin sweep."""
    from agents.factory import create_app
    from pipeline.config import Settings

    app = create_app(Settings(data_dir=tmp_path))
    assert app.worker_loop is not None and app.worker_loop.sweep_index is not None
    assert app.worker_loop.config.sweep_recheck_seconds == 3600.0
    monkeypatch.setenv("CXPULSE_SWEEP_RECHECK_SECONDS", "none")
    settings = Settings(data_dir=tmp_path / "rr")
    assert settings.sweep_recheck_seconds is None
    app = create_app(settings)
    assert app.worker_loop is not None and app.worker_loop.sweep_index is None


# --- outputs sent by aiokafka itself ----------------------------------------------------------
class _FakeKafkaProducer:
    """aiokafka's `send`: a coroutine returning the message's delivery future."""

    def __init__(self, fail_on: bytes | None = None):
        self.sent: list = []
        self.futures: list = []
        self.fail_on = fail_on

    async def send(self, topic, value, key=None):
        import asyncio

        self.sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        self.futures.append((fut, value))
        return fut

    def deliver(self):
        for fut, value in self.futures:
            if not fut.done():
                if value == self.fail_on:
                    fut.set_exception(RuntimeError("broker said no"))
                else:
                    fut.set_result("metadata")


def _outputs(kafka):
    from types import SimpleNamespace

    import faust

    from agents.ports import TopicOutputs

    app = faust.App("outputs-test", broker="kafka://localhost:1")

    class FaustProducer:   # Faust's producer: its buffer (the changelog) and aiokafka's flush
        buffer = SimpleNamespace(size=0)
        flushed = 0

        def _ensure_producer(self):
            return kafka

        async def flush(self):
            FaustProducer.flushed += 1
            kafka.deliver()

    app.producer = FaustProducer()
    raw = dict(key_serializer="raw", value_serializer="raw")
    return TopicOutputs(app, app.topic("cx.scores", **raw), app.topic("cx.alerts", **raw),
                        app.topic("cx.deadletter", **raw)), FaustProducer


def test_outputs_go_to_aiokafka_in_order_and_flush_waits_for_their_delivery():
    import asyncio

    kafka = _FakeKafkaProducer()

    async def run():
        outputs, faust_producer = _outputs(kafka)
        outputs.send("score", b"a", b"s1")
        outputs.send("alert", b"a", b"a1")
        outputs.send("deadletter", None, b"d1")
        outputs.send("score", b"b", b"s2")
        await outputs.flush()
        return faust_producer.flushed

    flushed = asyncio.run(run())
    assert kafka.sent == [("cx.scores", b"a", b"s1"), ("cx.alerts", b"a", b"a1"),
                          ("cx.deadletter", None, b"d1"), ("cx.scores", b"b", b"s2")]
    assert flushed == 1 and all(fut.done() for fut, _ in kafka.futures)


def test_a_message_the_broker_refused_fails_the_flush():
    """A batch whose outputs did not reach the broker must not store its states: the flush
    before the store raises (Faust's send_soon only logged the failure)."""
    import asyncio

    kafka = _FakeKafkaProducer(fail_on=b"s2")

    async def run():
        outputs, _ = _outputs(kafka)
        for i in range(3):
            outputs.send("score", b"k", b"s%d" % i)
        with pytest.raises(RuntimeError, match="broker said no"):
            await outputs.flush()
        outputs.send("score", b"k", b"s3")   # the next flush starts clean
        await outputs.flush()

    asyncio.run(run())
    assert [v for _, _, v in kafka.sent] == [b"s0", b"s1", b"s2", b"s3"]


class _SlowKafkaProducer(_FakeKafkaProducer):
    """aiokafka's `send` when its batch is full: it waits (here for `room`) before taking a
    message; `refuse` makes a send raise (a message too large, an unknown topic)."""

    def __init__(self, refuse: bytes | None = None):
        super().__init__()
        import asyncio
        self.room = asyncio.Event()
        self.refuse = refuse

    async def send(self, topic, value, key=None):
        if value == self.refuse:
            raise ValueError("message refused by the client")
        import asyncio
        await self.room.wait()
        await asyncio.sleep(0)   # a send that suspends: another task could run in between
        return await super().send(topic, value, key=key)


def test_messages_sent_while_a_flush_waits_keep_their_order():
    """A batch's outputs go out while the batch before is flushed (pipeline/service/
    worker_loop.py `_emit`): they must not overtake the messages still being handed to
    aiokafka, or a customer's older score would land last on the compacted topic."""
    import asyncio

    async def run():
        kafka = _SlowKafkaProducer()
        outputs, _ = _outputs(kafka)
        for i in range(3):
            outputs.send("score", b"k", b"s%d" % i)
        flush = asyncio.create_task(outputs.flush())
        for _ in range(5):
            await asyncio.sleep(0)
        outputs.send("score", b"k", b"s3")     # the next batch, during the flush
        outputs.send("score", b"k", b"s4")
        for _ in range(5):
            await asyncio.sleep(0)
        assert not flush.done() and kafka.sent == []
        kafka.room.set()
        await flush
        await outputs.flush()
        return kafka.sent

    assert [v for _, _, v in asyncio.run(run())] == [b"s0", b"s1", b"s2", b"s3", b"s4"]


def test_a_send_that_raised_fails_the_next_flush_even_after_more_sends():
    import asyncio

    async def run():
        kafka = _SlowKafkaProducer(refuse=b"bad")
        kafka.room.set()
        outputs, _ = _outputs(kafka)
        outputs.send("score", b"k", b"bad")
        for _ in range(5):
            await asyncio.sleep(0)              # the sending task failed ...
        outputs.send("score", b"k", b"good")    # ... and a later send starts another one
        with pytest.raises(ValueError, match="refused"):
            await outputs.flush()
        await outputs.flush()                   # raised once: the next flush starts clean
        return kafka.sent

    assert [v for _, _, v in asyncio.run(run())] == [b"good"]


def test_a_commit_keeps_only_the_partitions_assigned_when_it_runs_and_none_commits_nothing():
    """Faust's consumer thread crashes the worker when aiokafka is handed no offsets (the
    assignment is empty from a revocation to the next assignment); `commit` looks at the
    assignment in that thread, right before Faust's commit, and skips it when nothing is left."""
    import asyncio

    class Thread:
        def __init__(self, assigned):
            self.assigned, self.committed = set(assigned), []

        def assignment(self):
            return set(self.assigned)

        async def call_thread(self, fun, *args):
            return await fun(*args)

        async def _commit(self, offsets):
            assert offsets, "aiokafka raises ValueError({}) and Faust crashes the consumer"
            self.committed.append(dict(offsets))
            return True

    class Consumer:
        def __init__(self, thread):
            self._thread = thread

    revoked = Thread(assigned=())
    assert asyncio.run(faust_internals.commit(Consumer(revoked), {"t/0": 5})) is False
    assert revoked.committed == []
    kept = Thread(assigned={"t/1"})
    assert asyncio.run(faust_internals.commit(Consumer(kept), {"t/0": 5, "t/1": 7})) is True
    assert kept.committed == [{"t/1": 7}]
