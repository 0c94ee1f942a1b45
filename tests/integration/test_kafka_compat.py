"""agents.faust_internals (the aiokafka patches): aiokafka keeps its member id on ILLEGAL_GENERATION,
and pauses after an empty fetch.

Unit tests drive the patched GroupCoordinator methods with a stub client; the
integration test forms a two-member group with committing consumers on the embedded
broker (the case that never formed before: docs/fault-tolerance.md, scenario 2).
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.commit import OffsetCommitResponse_v3
from aiokafka.protocol.group import HeartbeatResponse_v1, JoinGroupResponse_v5, SyncGroupResponse_v3

from agents import faust_internals
from tests.fetch_requests import count_fetch_requests

faust_internals.install_aiokafka_patch()


class StubClient:
    def __init__(self, response):
        self.response = response

    async def send(self, node_id, request, group=None):
        return self.response


class StubCoordinator:
    """What GroupCoordinator._send_req / reset_generation touch."""

    def __init__(self, response, member_id="m-1", generation=4):
        self.coordinator_id, self._client = 1, StubClient(response)
        self.group_id, self.member_id, self.generation = "g", member_id, generation
        self.rejoins = 0

    def request_rejoin(self):
        self.rejoins += 1

    def respond(self):
        return asyncio.run(GroupCoordinator._send_req(self, object()))

    def reset(self):
        GroupCoordinator.reset_generation(self)


def test_install_is_idempotent():
    assert faust_internals.install_aiokafka_patch() is False
    assert GroupCoordinator._cxpulse_patched


@pytest.mark.parametrize("response", [
    OffsetCommitResponse_v3(0, [("t", [(0, 22), (1, 22)])]),
    OffsetCommitResponse_v3(0, [("t", [(0, 0), (1, 22)])]),
    HeartbeatResponse_v1(0, 22),
    SyncGroupResponse_v3(0, 22, b""),
])
def test_illegal_generation_resets_the_generation_and_keeps_the_member_id(response):
    c = StubCoordinator(response)
    c.respond()
    for _ in range(3):          # aiokafka resets once per failed partition
        c.reset()
    assert (c.member_id, c.generation, c.rejoins) == ("m-1", -1, 3)


@pytest.mark.parametrize("response", [
    OffsetCommitResponse_v3(0, [("t", [(0, 25)])]),       # UNKNOWN_MEMBER_ID
    HeartbeatResponse_v1(0, 25),
    SyncGroupResponse_v3(0, 25, b""),
    HeartbeatResponse_v1(0, 27),                           # REBALANCE_IN_PROGRESS (aiokafka does not reset)
    JoinGroupResponse_v5(0, 22, -1, "", "", "", []),        # only the three generation-checked APIs count
])
def test_other_errors_reset_the_member_id_as_before(response):
    c = StubCoordinator(response)
    c.respond()
    c.reset()
    assert (c.member_id, c.generation) == ("", -1)


def test_a_later_response_clears_the_mark():
    c = StubCoordinator(HeartbeatResponse_v1(0, 22))
    c.respond()
    c._client.response = HeartbeatResponse_v1(0, 25)
    c.respond()
    c.reset()
    assert c.member_id == ""


def test_reset_without_any_response_resets_the_member_id():
    c = StubCoordinator(None)
    c.reset()                   # e.g. after LeaveGroup
    assert c.member_id == ""


@pytest.mark.integration
@pytest.mark.timeout(120)   # without the patch the group never forms and the consumers hang on stop
def test_two_committing_consumers_form_a_group_on_the_embedded_broker(broker):
    """The first consumer commits every 100 ms, so a commit lands while the second joins
    (the embedded broker answers it with ILLEGAL_GENERATION). The group of two forms,
    the first consumer keeps its member id, and after the second leaves the first takes
    every partition back."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    boot, topic, group = broker.bootstrap, f"compat-{uuid.uuid4().hex[:8]}", f"compat-{uuid.uuid4().hex[:8]}"

    def consumer(name):
        return AIOKafkaConsumer(topic, bootstrap_servers=boot, group_id=group, client_id=name,
                                enable_auto_commit=True, auto_commit_interval_ms=100,
                                session_timeout_ms=10_000, heartbeat_interval_ms=3_000)

    async def until(cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    async def poll(c):
        while True:
            await c.getmany(timeout_ms=200)

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=boot)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 4, 1)])
        finally:
            await admin.close()
        first, second = consumer("first"), consumer("second")
        await first.start()
        tasks = [asyncio.create_task(poll(first))]
        try:
            await until(lambda: len(first.assignment()) == 4, 20)
            member = first._coordinator.member_id
            await asyncio.sleep(0.5)
            await second.start()
            tasks.append(asyncio.create_task(poll(second)))
            await until(lambda: first.assignment() and second.assignment(), 20)
            a, b = {tp.partition for tp in first.assignment()}, {tp.partition for tp in second.assignment()}
            assert a | b == {0, 1, 2, 3} and not a & b
            assert first._coordinator.member_id == member
            tasks.pop().cancel()
            await second.stop()
            await until(lambda: len(first.assignment()) == 4, 20)
            assert first._coordinator.member_id == member
        finally:
            for t in tasks:
                t.cancel()
            await first.stop()
            await second.stop()

    asyncio.run(run())


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_idle_consumer_pauses_between_empty_fetches_and_still_gets_a_new_record_at_once(broker, monkeypatch):
    """The embedded broker answers an empty fetch at once (it ignores fetch_max_wait_ms):
    unpatched, an idle aiokafka consumer sent 1,400–3,200 fetch requests a second. With the
    pause it sends about 1/EMPTY_FETCH_PAUSE, and a record produced while it idles still
    arrives within a fraction of a second."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.conn import AIOKafkaConnection

    faust_internals.install_empty_fetch_pause()
    assert faust_internals.install_empty_fetch_pause() is False
    fetches = count_fetch_requests(monkeypatch, AIOKafkaConnection, "send")
    boot, topic = broker.bootstrap, f"idle-{uuid.uuid4().hex[:8]}"

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=boot)
        await producer.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=1500)
        try:
            await producer.send_and_wait(topic, b"first", partition=0)
            await consumer.start()
            consumer.assign([TopicPartition(topic, 0)])
            got = await consumer.getmany(timeout_ms=5000)
            assert [m.value for ms in got.values() for m in ms] == [b"first"]
            before, t0 = fetches[0], time.monotonic()
            while time.monotonic() - t0 < 2.0:      # idle: nothing to fetch
                assert not await consumer.getmany(timeout_ms=200)
            rate = (fetches[0] - before) / (time.monotonic() - t0)
            assert 0 < rate <= 1.5 / faust_internals.EMPTY_FETCH_PAUSE, f"{rate:.0f} fetch requests/s while idle"
            sent = time.monotonic()
            await producer.send_and_wait(topic, b"second", partition=0)
            got = await consumer.getmany(timeout_ms=5000)
            assert [m.value for ms in got.values() for m in ms] == [b"second"]
            assert time.monotonic() - sent < 0.5
        finally:
            await consumer.stop()
            await producer.stop()

    asyncio.run(run())
