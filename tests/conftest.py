"""Fixtures shared by tests/integration and tests/drills: the real embedded broker
(session-scoped: one per run, whichever folders run) and worker processes. tests/unit uses none
of them (the unit tests need no broker).

Integration tests run against a real Kafka-protocol broker (noida-db) and the real
ClickHouse engine (chDB) — no mocks. Ports are picked free at start.
"""
from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pipeline.adapters.kafka.broker import EmbeddedBroker
from pipeline.config import Settings
from pipeline.adapters.kafka.topics import ensure_topics
from pipeline.adapters.kafka.worker_process import WorkerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    root = tmp_path_factory.mktemp("broker")
    settings = Settings(data_dir=root, kafka_port=free_port())
    b = EmbeddedBroker(settings, data_dir=root / "data", log_path=root / "broker.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def make_settings(broker: EmbeddedBroker, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one isolated pipeline on the shared broker: own topics (unique
    prefix), own consumer group, own chDB path and web port."""

    def make(**overrides) -> Settings:
        tag = uuid.uuid4().hex[:8]
        base = dict(
            kafka_port=broker.settings.kafka_port, data_dir=tmp_path / f"data-{tag}", web_port=free_port(),
            app_id=f"cxpulse-test-{tag}", partitions=2, batch_within=0.05, sweep_seconds=1.0,
            commit_interval=0.2,
            topic_touchpoints=f"{tag}.touchpoints", topic_orders=f"{tag}.orders",
            topic_complaints=f"{tag}.complaints", topic_scores=f"{tag}.scores", topic_alerts=f"{tag}.alerts",
            topic_deadletter=f"{tag}.deadletter", topic_erasures=f"{tag}.erasures", topic_actions=f"{tag}.actions",
            topic_models=f"{tag}.models",
        )
        base.update(overrides)
        s = Settings(**base)
        ensure_topics(s)
        return s

    return make


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings, **env) -> WorkerProcess:
        w = WorkerProcess(settings, extra_env={k: str(v) for k, v in env.items()})
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.stop()
