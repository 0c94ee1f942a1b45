"""How long the embedded broker (noida-db) takes to deliver a record, with no worker at all.

`cxpulse bench` judges the worker's p99 produce→score latency at half its catch-up rate
against 0.5 s (issue #18), on this machine's embedded broker. This script measures the part
of any such latency that is the broker's alone: a producer sends records at a steady rate
(confluent-kafka, linger 5 ms, acks=all, as the bench's load generator), each carrying the
wall clock of its `produce()` call, and one consumer (confluent-kafka, no group, reading
from the end) notes when it receives each. Produce→receive is what the broker adds before a
worker could even start on an event. It is measured on an empty broker, then again after
`--stored-mb` MB of other records were written once (the bench's broker holds 100–280 MB
when its paced phases start: `broker_data_mb`), and prints p50 / p99 / max per rate with the
broker's CPU.

    .venv/bin/python bench/broker_delivery_latency.py
    .venv/bin/python bench/broker_delivery_latency.py --stored-mb 120 --rates 1000,5000 --seconds 20
"""
from __future__ import annotations

import shutil
import struct
import threading
import time

from broker_storage_cost import RECORD_BYTES, arguments, dir_mb, fresh_broker, write_once   # bench/, beside this script

STAMP = struct.Struct("<dq")   # send wall clock, sequence number


def main() -> None:
    args, rates = arguments(__doc__, stored_mb=120.0, rates="1000,3000,5000", seconds=15.0)

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipeline.tools.bench import cpu_seconds, quantile

    broker, work = fresh_broker("cxpulse-broker-latency-")
    assert broker.data_dir is not None and broker.pid is not None
    pid, data_dir = broker.pid, broker.data_dir
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("paced", 4, 1), NewTopic("stored", 4, 1)]).values():
        f.result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
    padding = b"x" * (RECORD_BYTES - STAMP.size)
    print(f"embedded broker pid {pid}, data in {data_dir}; {RECORD_BYTES}-byte records, linger 5 ms, acks=all; "
          f"{args.seconds:g} s per rate", flush=True)
    try:
        for label in ("empty broker", f"after {args.stored_mb:g} MB written once"):
            if label != "empty broker":
                write_once(producer, args.stored_mb, b"x" * RECORD_BYTES)
            for rate in rates:
                received: dict[int, float] = {}
                stop = threading.Event()
                ready = threading.Event()
                reader = threading.Thread(target=consume, args=(broker.bootstrap, received, stop, ready))
                reader.start()
                ready.wait(30)
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                sent: dict[int, float] = {}
                seq = 0
                while (now := time.monotonic()) - t0 < args.seconds:
                    while seq < int((now - t0) * rate):
                        sent[seq] = time.time()
                        producer.produce("paced", key=str(seq).encode(), value=STAMP.pack(sent[seq], seq) + padding)
                        seq += 1
                    producer.poll(0)
                    time.sleep(0.002)
                producer.flush(120)
                deadline = time.monotonic() + 60
                while len(received) < len(sent) and time.monotonic() < deadline:
                    time.sleep(0.1)
                wall = time.monotonic() - t0
                stop.set()
                reader.join()
                lat = sorted(received[s] - t for s, t in sent.items() if s in received)
                missing = len(sent) - len(lat)
                print(f"{label:>30}, {rate:6,.0f} records/s: produce→receive p50 {quantile(lat, 0.5) * 1000:7,.1f} ms, "
                      f"p99 {quantile(lat, 0.99) * 1000:7,.1f} ms, max {lat[-1] * 1000:7,.1f} ms"
                      f"{f', {missing} not received' if missing else ''}; broker {(cpu_seconds(pid) - cpu0) / wall:.2f} cores; "
                      f"data dir {dir_mb(data_dir):,.0f} MB", flush=True)
    finally:
        del producer, admin   # their connections close before the broker stops (no reconnect noise)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def consume(bootstrap: str, received: dict[int, float], stop: threading.Event, ready: threading.Event) -> None:
    """Read `paced` from its end until `stop`, noting each record's arrival (wall clock) by its sequence number."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 100})
    parts = consumer.list_topics("paced", timeout=10).topics["paced"].partitions
    consumer.assign([TopicPartition("paced", p, -1) for p in parts])   # -1: the end
    try:
        for _ in range(20):   # the assignment is live once a poll has returned
            consumer.poll(0.05)
        ready.set()
        while not stop.is_set():
            for msg in consumer.consume(10_000, 0.05):
                if msg.error() is None:
                    at = time.time()
                    _, seq = STAMP.unpack_from(msg.value())
                    received[seq] = at
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
