"""Plain Kafka I/O for tools (demo, produce, tail, tests): kafka-python, no Faust."""
from __future__ import annotations

import time
from typing import Callable, Iterable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.config import Settings


def producer(settings: Settings, linger_ms: int = 20) -> KafkaProducer:
    # Default partitioner = murmur2 on the key, the same as Java clients and Faust's
    # aiokafka producer, so a customer's events and state share a partition.
    return KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=linger_ms,
                         delivery_timeout_ms=max(120_000, linger_ms + 60_000),
                         batch_size=256 * 1024, max_request_size=4 * 1024 * 1024, client_id="cxpulse-tools")


def produce(settings: Settings, records: Iterable[tuple[str, bytes | None, bytes | None]],
            on_sent: Callable[[int], None] | None = None, linger_ms: int = 20) -> int:
    """Send (topic, key, value) records; return how many were acknowledged. `linger_ms`: how
    long a partition's record batch waits for more records before it is sent (the flush at the
    end sends every batch at once: a long linger puts up to 256 KiB of a partition's records
    in one record batch, which a consumer's fetch never splits)."""
    p = producer(settings, linger_ms)
    n = 0
    futures = []
    try:
        for topic, key, value in records:
            futures.append(p.send(topic, key=key, value=value))
            n += 1
            if on_sent and n % 1000 == 0:
                on_sent(1000)
        p.flush()
        for f in futures:
            f.get(timeout=30)
        if on_sent and n % 1000:
            on_sent(n % 1000)
    finally:
        p.close()
    return n


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list:
    """Every record of `topic` from the beginning up to its current end offsets. `timeout`
    bounds the time without progress (no record read), not the whole read: a large topic
    on a busy machine is read to the end as long as records keep coming."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             client_id="cxpulse-reader", consumer_timeout_ms=1000)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: no record for {timeout}s "
                                   f"({len(out)} read, {sum(ends.values())} expected)")
            for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                out.extend(batch)
                deadline = time.monotonic() + timeout
        return out
    finally:
        consumer.close()


def first_offset_at(settings: Settings, topic: str, partition: int, offset: int, timeout: float = 10.0) -> int | None:
    """The offset of the first record at or after `offset` in one partition (None if the
    partition ends there): tells a hole in the log (transaction markers, compaction) from
    records a consumer failed to deliver."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             client_id="cxpulse-offset-probe")
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if consumer.position(tp) >= consumer.end_offsets([tp])[tp]:
                return None
            for batch in consumer.poll(timeout_ms=500, max_records=1).values():
                if batch:
                    return batch[0].offset
        return None
    finally:
        consumer.close()
