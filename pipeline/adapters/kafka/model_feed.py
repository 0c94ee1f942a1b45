"""The compacted `cx.models` topic as every worker reads it: the whole topic, from the start,
without a consumer group (each worker installs every model; a group would give the one
partition to one worker). A kafka-python consumer in its own thread hands each record's
value to `on_record` in the event loop. Compaction keeps the latest model per key, so a
worker that starts installs the model serving now before it scores much."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable

from kafka import KafkaConsumer, TopicPartition

from pipeline.config import Settings

log = logging.getLogger("cxpulse.worker")
MODEL_KEY = b"churn"
IDLE_WAIT_SECONDS = 1.0
POLL_MS = 20


class ModelFeed:
    def __init__(self, settings: Settings, on_record: Callable[[bytes], None]) -> None:
        self.settings = settings
        self.on_record = on_record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._run, args=(loop,), name="cx.models", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None,
                                             enable_auto_commit=False, client_id=f"{self.settings.app_id}-models")
                    tp = TopicPartition(self.settings.topic_models, 0)
                    consumer.assign([tp])
                    consumer.seek_to_beginning(tp)
                batches = consumer.poll(timeout_ms=POLL_MS)
                for records in batches.values():
                    for rec in records:
                        if rec.value is not None:
                            loop.call_soon_threadsafe(self.on_record, rec.value)
                if not batches:
                    # A broker may answer a fetch of an empty partition at once instead of
                    # waiting fetch.max.wait.ms (the embedded one does): polling again at once
                    # spun this thread at ~0.9 of a core, taking the GIL from the worker's loop.
                    # Models come seldom; a second's delay in installing one costs nothing.
                    self._stop.wait(IDLE_WAIT_SECONDS)
            except Exception as exc:   # broker away: try again (the served model stays)
                log.warning("cx.models feed: %r; retrying", exc)
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()
