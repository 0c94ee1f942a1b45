"""The raw consume limit with aiokafka, the client Faust runs on: `cxpulse bench` compares the
worker with it (pipeline/tools/bench.py; aiokafka is imported under agents/ only)."""
from __future__ import annotations

import asyncio
import time
from typing import Iterable

import orjson


def raw_consume_aiokafka(bootstrap: str, topics: Iterable[str], expected: int, timeout: float = 600.0) -> float:
    """Read every record of `topics` from the beginning with `getmany` and `orjson.loads`
    each value (no processing): events/s. For `cxpulse bench` (pipeline/tools/bench.py)."""

    async def read() -> float:
        from aiokafka import AIOKafkaConsumer, TopicPartition as TP

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="cxpulse-bench-raw-aio",
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_min_bytes=1, fetch_max_wait_ms=100, max_poll_records=50_000, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [TP(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            n = 0
            loads = orjson.loads
            deadline = time.monotonic() + timeout
            started = time.perf_counter()
            while n < expected:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"raw consume (aiokafka) read {n:,} of {expected:,} records in {timeout:.0f} s")
                for batch in (await consumer.getmany(timeout_ms=200, max_records=50_000)).values():
                    for rec in batch:
                        try:
                            loads(rec.value)
                        except orjson.JSONDecodeError:
                            pass
                    n += len(batch)
            return n / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    return asyncio.run(read())
