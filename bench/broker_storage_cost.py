"""What the embedded broker (noida-db) costs in CPU: per record written, and for the data it holds.

`cxpulse bench` reads the broker's CPU next to the worker's. On the embedded broker that figure
is mostly not per record: its `autosave` thread re-serializes the data the broker holds while
any client is active (writing, or only fetching), so its CPU grows with the data stored,
whatever the write rate. This script measures both on a fresh broker, no worker: records
written at a few steady rates to an empty broker; then, after `--stored-mb` MB of other
records were written once, the broker with no client, with one consumer fetching at the end of
a partition (nothing written), and the same steady rates. It prints the broker's CPU in cores
(and per record), by thread name, and the size of its data directory. Apache Kafka
(production) appends to its log segments and has no such cost.

    .venv/bin/python bench/broker_storage_cost.py
    .venv/bin/python bench/broker_storage_cost.py --stored-mb 120 --rates 500,2000
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

RECORD_BYTES = 300    # about a touchpoint's JSON


def main() -> None:
    args, rates = arguments(__doc__, stored_mb=60.0, rates="200,1000,3000", seconds=10.0)

    from confluent_kafka import Producer

    broker, work = fresh_broker("cxpulse-broker-cost-")
    assert broker.data_dir is not None and broker.pid is not None
    pid, data_dir = broker.pid, broker.data_dir
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
    payload = b"x" * RECORD_BYTES
    try:
        print(f"embedded broker pid {pid}, data in {data_dir}; {RECORD_BYTES}-byte records, linger 5 ms")
        for label in ("empty broker", f"after {args.stored_mb:g} MB written once"):
            if label != "empty broker":
                write_once(producer, args.stored_mb, payload)
                quiet(pid, data_dir, "no client", args.seconds)
                reading(broker.bootstrap, pid, data_dir, args.seconds)
            for rate in rates:
                steady(producer, pid, data_dir, label, rate, args.seconds, payload)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def arguments(doc: str | None, *, stored_mb: float, rates: str, seconds: float) -> tuple[argparse.Namespace, list[float]]:
    """The command line of a broker script (`--stored-mb`, `--rates`, `--seconds`, with these
    defaults): the parsed arguments and the rates; exits with a usage error on bad values."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--stored-mb", type=float, default=stored_mb, help="MB of records written once before the second round")
    parser.add_argument("--rates", default=rates, help="records/s of the steady writes, comma-separated")
    parser.add_argument("--seconds", type=float, default=seconds, help="length of each steady write")
    args = parser.parse_args()
    try:
        values = [float(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates must be numbers separated by commas, not {args.rates!r}")
    if not values or min(values) <= 0 or args.stored_mb < 0 or args.seconds <= 0:
        parser.error("--rates must be positive, --stored-mb 0 or more, --seconds positive")
    return args, values


def fresh_broker(prefix: str):
    """A started embedded broker on a free port with its data in a new temporary folder:
    (the broker, the folder; remove it after `broker.stop()`)."""
    from pipeline.adapters.kafka.broker import EmbeddedBroker
    from pipeline.config import Settings
    from pipeline.tools.bench import free_port

    work = Path(tempfile.mkdtemp(prefix=prefix))
    settings = Settings().model_copy(update={"data_dir": work, "kafka_port": free_port()})
    return EmbeddedBroker(settings).start(), work


def write_once(producer, stored_mb: float, payload: bytes) -> None:
    """`stored_mb` MB of `payload` records written once to topic `stored`, then 5 s for the
    broker to settle."""
    for i in range(int(stored_mb * 1e6 / len(payload))):
        producer.produce("stored", key=str(i % 1000).encode(), value=payload)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(300)
    time.sleep(5)


def steady(producer, pid: int, data_dir: Path, label: str, rate: float, seconds: float, payload: bytes) -> None:
    cpu0, threads0, t0 = cpu_seconds_of(pid), thread_cpu(pid), time.monotonic()
    sent = 0
    while (now := time.monotonic()) - t0 < seconds:
        while sent < int((now - t0) * rate):
            producer.produce("steady", key=str(sent).encode(), value=payload)
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(60)
    wall = time.monotonic() - t0
    cores = (cpu_seconds_of(pid) - cpu0) / wall
    print(f"{label:>47}: {sent / wall:6,.0f} records/s written -> broker {cores:.3f} cores = "
          f"{cores / (sent / wall) * 1e6:6,.0f} µs/record ({by_thread(thread_cpu(pid), threads0, wall)}); "
          f"data dir {dir_mb(data_dir):,.0f} MB", flush=True)


def quiet(pid: int, data_dir: Path, label: str, seconds: float) -> None:
    cpu0, threads0, t0 = cpu_seconds_of(pid), thread_cpu(pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    print(f"{label:>47}: broker {(cpu_seconds_of(pid) - cpu0) / wall:.3f} cores"
          f" ({by_thread(thread_cpu(pid), threads0, wall)}); data dir {dir_mb(data_dir):,.0f} MB", flush=True)


def reading(bootstrap: str, pid: int, data_dir: Path, seconds: float) -> None:
    """One consumer, no group, polling at the end of the stored partitions: fetches only."""
    import threading

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    parts = consumer.list_topics("stored", timeout=10).topics["stored"].partitions
    consumer.assign([TopicPartition("stored", p, -1) for p in parts])   # -1: the end
    stop = threading.Event()
    poller = threading.Thread(target=lambda: [consumer.poll(0.2) for _ in iter(stop.is_set, True)])
    poller.start()
    try:
        time.sleep(3)
        quiet(pid, data_dir, "one consumer fetching at the end, nothing written", seconds)
    finally:
        stop.set()
        poller.join()
        consumer.close()


def cpu_seconds_of(pid: int) -> float:
    from pipeline.tools.bench import cpu_seconds

    return cpu_seconds(pid)


def by_thread(now: dict[str, float], before: dict[str, float], wall: float) -> str:
    busy = [f"{name} {(sec - before.get(name, 0.0)) / wall:.2f}" for name, sec in sorted(now.items())
            if sec - before.get(name, 0.0) > 0.01 * wall]
    return "by thread: " + (", ".join(busy) or "none above 0.01")


def thread_cpu(pid: int) -> dict[str, float]:
    """Seconds on a CPU per thread name (`comm`), from /proc/PID/task/TID/schedstat."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[name] = out.get(name, 0.0) + int((task / "schedstat").read_text().split()[0]) / 1e9
        except OSError:   # the thread ended
            pass
    return out


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


if __name__ == "__main__":
    sys.exit(main())
