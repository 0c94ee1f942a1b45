"""Topic layout: created with the admin client before any worker starts.

Source topics are co-partitioned (same partition count, key = customer_id); auto-created
topics would get one partition and Faust would then fail with PartitionsMismatch.
"""
from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from pipeline.config import Settings


class TopicLayoutError(RuntimeError):
    pass


def topic_specs(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """name → (partitions, configs)."""
    p = settings.partitions
    return {
        settings.topic_touchpoints: (p, {}),
        settings.topic_orders: (p, {}),
        settings.topic_complaints: (p, {}),
        settings.topic_scores: (p, {"cleanup.policy": "compact"}),
        settings.topic_alerts: (p, {}),
        settings.topic_deadletter: (p, {}),
        settings.topic_erasures: (p, {}),   # keyed by customer_id: the owner of the state erases it
        settings.topic_actions: (p, {}),    # keyed by customer_id: the owner of the state keeps the case
        settings.topic_models: (1, {"cleanup.policy": "compact"}),   # the served churn model: every worker reads all of it
    }


def admin(settings: Settings, timeout: float = 30.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="cxpulse-admin")
        except (KafkaConnectionError, KafkaTimeoutError):
            if time.monotonic() > deadline:
                raise TopicLayoutError(
                    f"no Kafka broker answers at {settings.bootstrap}; start one or set CXPULSE_KAFKA_BOOTSTRAP"
                ) from None
            time.sleep(0.5)


def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, client_id="cxpulse-admin")
    try:
        out = {}
        for name in names:
            parts = consumer.partitions_for_topic(name)
            out[name] = len(parts) if parts else 0
        return out
    finally:
        consumer.close()


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics; verify the source topics are co-partitioned. Idempotent."""
    specs = topic_specs(settings)
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        missing = [NewTopic(name, parts, 1, topic_configs=cfg)
                   for name, (parts, cfg) in specs.items() if name not in existing]
        if missing:
            try:
                client.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        client.close()
    counts = partition_counts(settings, list(specs))
    sources = {t: counts[t] for t in settings.input_topics}
    if len(set(sources.values())) != 1 or 0 in sources.values():
        raise TopicLayoutError(
            f"input topics must exist with the same partition count (co-partitioned by customer_id); found {sources}"
        )
    return counts


def ensure_worker_topics(settings: Settings) -> dict[str, int]:
    """What a worker needs before it joins its group: every topic (missing ones are created
    with CXPULSE_PARTITIONS partitions, as `cxpulse produce` does), and input topics that
    are co-partitioned with exactly CXPULSE_PARTITIONS partitions (the worker's state table
    and changelog follow that setting; a different count would mis-assign customers)."""
    counts = ensure_topics(settings)
    sources = {t: counts[t] for t in settings.input_topics}
    got = next(iter(sources.values()))
    if got != settings.partitions:
        raise TopicLayoutError(
            f"the input topics have {got} partitions but CXPULSE_PARTITIONS={settings.partitions}; "
            f"start the worker with CXPULSE_PARTITIONS={got}, or recreate the input topics with "
            f"{settings.partitions} partitions (`cxpulse doctor` checks the layout)")
    return counts


def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, client_id="cxpulse-admin")
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        return consumer.end_offsets(tps)
    finally:
        consumer.close()


def committed_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    client = admin(settings)
    try:
        offsets = client.list_group_offsets({group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        client.close()


def consumer_lag(settings: Settings, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    ends = end_offsets(settings, topics)
    done = committed_offsets(settings, group)
    return {tp: max(0, end - max(done.get(tp, 0), 0)) for tp, end in ends.items()}


def wait_caught_up(settings: Settings, group: str, topics: list[str], timeout: float = 300.0,
                   on_progress=None, alive=lambda: True) -> None:
    """Block until the consumer group's committed offsets reach the end offsets (not by sleeping
    a fixed time). `on_progress(remaining)` is called on each poll; `alive()` False aborts."""
    deadline = time.monotonic() + timeout
    ends = end_offsets(settings, topics)
    while True:
        try:
            done = committed_offsets(settings, group)
        except KafkaError:
            done = {}
        remaining = sum(max(0, end - max(done.get(tp, 0), 0)) for tp, end in ends.items())
        if on_progress:
            on_progress(remaining)
        if remaining == 0:
            return
        if not alive():
            raise TopicLayoutError("the worker stopped before consuming every event")
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumer group {group} still {remaining} events behind after {timeout}s")
        time.sleep(0.25)
