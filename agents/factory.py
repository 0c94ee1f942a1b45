"""The worker's composition root: `create_app(settings)` builds the Faust app, its topics,
the customer-state table, the ClickHouse sink and its thread, and wires a WorkerLoop
(pipeline/service/worker_loop.py) to them through agents/ports.py. Nothing here decides
anything about records, offsets or states; the Faust handlers below only translate Faust's
callbacks into loop calls.

One agent consumes the three co-partitioned input topics (key = customer_id) in
micro-batches (a fetch at a time from the batching consumer, agents/faust_internals.py) and
hands each to `WorkerLoop.deliver`, which applies
them in event-time order across the three topics' partitions of the same number
(pipeline/service/event_time_merge.py). Input offsets are committed by the loop, not by
Faust's acks (see pipeline/service/offset_guard.py for why). Two more agents take operator
actions on alert cases (cx.actions) and erasure requests. Timers: the idle release of
records held for alignment, the sweep (SLA deadlines passing or close, customers going
quiet), the offset commit, the stall and recovery watchdogs, consumer lag, the population
re-fit, the live backtest. With CXPULSE_LEARN_CHURN the loop learns the churn model at
event-time ticks and publishes it on cx.models; every worker follows cx.models (ModelFeed)
and installs what is published there. Web views: /healthz, /metrics, /customers/{id}.
"""
from __future__ import annotations

import asyncio
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import faust
from aiohttp.web import Response

from agents import faust_internals
from agents.ports import ConsumerInputs, ExecutorRowSink, SystemClock, TableStates, TopicModels, TopicOutputs
from pipeline.adapters.kafka.model_feed import ModelFeed
from pipeline.adapters.clickhouse.queries import early_warning_backtest_rows, live_backtest_rows, open_numbered_alerts
from pipeline.adapters.observability.metrics import METRICS, render
from pipeline.bootstrap import build_core, build_sink
from pipeline.config import Settings
from pipeline.adapters.clickhouse.churn_history import ClickHouseChurnHistory
from pipeline.adapters.clickhouse.dsn import chdb_path
from pipeline.adapters.clickhouse.population import ClickHousePopulation
from pipeline.service.churn_learning import ChurnLearner
from pipeline.service.processor import Core, RawRecord
from pipeline.service.worker_loop import POPULATION_READ_SECONDS, Delivered, LoopConfig, WorkerLoop
from pipeline.tools.erasure import requested_at as erasure_requested_at

# aiokafka keeps one batch per partition open and, once it is full, waits for the one being
# sent: with Faust's 16 KiB default (about a dozen scores or states), a live worker's
# scores and changelog writes queued behind the broker's round trips (bench/README.md).
PRODUCER_MAX_BATCH_BYTES = 512 * 1024


class WorkerApp(faust.App):
    """The Faust app with the settings it was built from and its WorkerLoop (set by create_app)."""

    settings: Settings
    worker_loop: WorkerLoop | None = None
    # topics whose records the consumer hands over a fetch at a time (faust_internals.BatchingConsumer)
    batch_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> Any:
        """The aiokafka transport with the batching consumer (agents/faust_internals.py)."""
        return faust_internals.BatchingTransport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        """Finish the micro-batch in flight before Faust stops the consumer, the tables and
        (on_before_shutdown) the ClickHouse sink: a worker that leaves by SIGTERM then hands
        over whole batches, not one whose rows are written but whose states are not."""
        if self.worker_loop is not None:
            await self.worker_loop.drain()
        await super().on_stop()


def loop_config(settings: Settings) -> LoopConfig:
    return LoopConfig(
        topic_for_type=settings.topic_for_type, batch_max=settings.batch_max, batch_within=settings.batch_within,
        align_idle_seconds=settings.align_idle_seconds, align_fetch_wait_seconds=settings.align_fetch_wait_seconds,
        align_ahead_seconds=settings.align_ahead_seconds, churn_horizon_days=settings.churn_horizon_days,
        sweep_recheck_seconds=settings.sweep_recheck_seconds, write_group_rows=settings.write_group_rows,
        # an embedded chDB store is one process's: learning workers share no history, so none pools,
        # and every worker re-fits its own population (with a shared ClickHouse the owner of partition 0 does)
        partitions=None if chdb_path(settings.dsn) else settings.partitions,
        pool_wait_seconds=settings.churn_pool_wait_seconds)


def create_app(settings: Settings, *, core: Core | None = None) -> WorkerApp:
    """A worker for `settings` (checks the Faust/aiokafka versions and patches aiokafka first)."""
    faust_internals.check_versions()
    # aiokafka 0.14.0 forgets its member id on ILLEGAL_GENERATION and re-joins as a new member;
    # on the embedded broker the orphaned id then blocks the group for good (agents/faust_internals.py).
    faust_internals.install_aiokafka_patch()
    # noida-db answers an empty fetch at once (no fetch_max_wait_ms): without a pause an idle
    # worker spins on fetch requests, most of a core (agents/faust_internals.py).
    faust_internals.install_empty_fetch_pause()

    app = WorkerApp(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir / "worker"),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        broker_commit_every=10_000,
        broker_commit_interval=settings.commit_interval,
        # A worker that dies without leaving the group (kill -9, lost host) holds its
        # partitions until its session expires; Faust's default 60 s stalls the whole group
        # that long after a crash. 10 s (Kafka's classic default) with 3 s heartbeats.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_rebalance_timeout=20.0,
        producer_linger_ms=5,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        table_standby_replicas=0,
    )

    def raw_topic(*names: str, **kwargs) -> faust.TopicT:
        return app.topic(*names, key_serializer="raw", value_serializer="raw", **kwargs)

    # acks=False: Faust neither tracks nor commits these offsets; the loop's OffsetGuard does
    # (Faust acks records it skipped during rebalances, which let commits pass records that
    # were never applied, and froze commits on gaps: docs/fault-tolerance.md).
    inputs = raw_topic(*settings.input_topics, acks=False)
    app.batch_topics = frozenset(settings.input_topics)
    outputs = TopicOutputs(app, raw_topic(settings.topic_scores), raw_topic(settings.topic_alerts),
                           raw_topic(settings.topic_deadletter))
    erasures = raw_topic(settings.topic_erasures)
    actions = raw_topic(settings.topic_actions)

    # Per-customer state: key = customer_id bytes, value = encode_state(state).
    # use_partitioner: the changelog partition follows the key (same partitioner as the
    # producers), so a coalesced write after a micro-batch lands on the customer's partition.
    states = app.Table(
        "customer-state", default=None, partitions=settings.partitions,
        key_type=bytes, value_type=bytes, use_partitioner=True,
    )

    clickhouse = build_sink(settings, METRICS)
    sink = ExecutorRowSink(clickhouse, ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse"))

    def fetch_backtest_rows(horizon_days: float, as_of: datetime | None):
        return live_backtest_rows(clickhouse.client, horizon_days, as_of)

    def fetch_early_warning_rows(horizon_days: float, as_of: datetime):
        return early_warning_backtest_rows(clickhouse.client, horizon_days, as_of)

    def fetch_open_alerts():
        return open_numbered_alerts(clickhouse.client)

    loop = WorkerLoop(
        core or build_core(settings), loop_config(settings),
        store=TableStates(states), outputs=outputs, rows=sink, inputs=ConsumerInputs(app, settings),
        clock=SystemClock(), metrics=METRICS, fetch_backtest_rows=fetch_backtest_rows,
        fetch_early_warning_rows=fetch_early_warning_rows, fetch_open_alerts=fetch_open_alerts,
        learner=ChurnLearner(settings.churn_horizon_days) if settings.learn_churn else None,
        history=ClickHouseChurnHistory(clickhouse) if settings.learn_churn else None,
        populations=None if settings.learn_churn else ClickHousePopulation(clickhouse),
        models=TopicModels(raw_topic(settings.topic_models)),
        # trainings in a process of their own: a thread shares the interpreter lock with the
        # event loop (bench/worker_retrain_stall.py measures both)
        train_executor=ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        if settings.learn_churn else None)
    # every worker installs the model on cx.models (the learning worker publishes it there)
    model_feed = ModelFeed(settings, loop.install_model)
    app.settings, app.worker_loop = settings, loop
    recovery = faust_internals.RecoveryWatchdog(app)

    # --- agents ---------------------------------------------------------------------------
    @app.agent(inputs, name="agents.app.score_events")
    async def score_events(stream):
        """The input topics. The agent's stream subscribes the consumer to them, but their
        records come a fetch at a time from the batching consumer (agents/faust_internals.py,
        "Batch intake"), not through the stream: a micro-batch is what is queued, up to
        `batch_max` records, with no wait for more (adaptive batches)."""
        consumer = app.consumer
        assert isinstance(consumer, faust_internals.BatchingConsumer)   # WorkerApp._new_transport
        batches = consumer.input_batches
        while True:
            messages = await batches.take(settings.batch_max)
            # Records fetched under an older consumer generation or for partitions no longer
            # assigned are dropped (Faust seeks every assigned partition back to its committed
            # offset after a rebalance, so they come again), and all of them while the group
            # rebalances: from the revocation until the table is recovered for the new
            # assignment (`app.rebalancing`). A record applied during the recovery loaded a
            # state the recovery had not reached yet and stored an older one on top of it.
            generation, assignment = app.consumer_generation_id, app.consumer.assignment()
            current = [] if app.rebalancing else [
                m for m in messages if m.generation_id == generation and m.tp in assignment]
            await loop.deliver(
                [Delivered(m.tp, RawRecord(m.topic, m.partition, m.offset, m.key, m.value)) for m in current],
                stale=len(messages) - len(current))

    @app.agent(actions, name="agents.app.apply_actions")
    async def apply_actions(stream):
        """Operator actions on alert cases (`cxpulse ack`/`close`), co-partitioned with the state."""
        async for event in stream.events():
            m = event.message
            await loop.apply_action(RawRecord(m.topic, m.partition, m.offset, event.key, event.value))

    @app.agent(erasures, name="agents.app.erase_customers")
    async def erase_customers(stream):
        """Erasure requests (`cxpulse erase`), co-partitioned with the state."""
        async for event in stream.events():
            m = event.message
            await loop.erase_request(RawRecord(m.topic, m.partition, m.offset, event.key, event.value),
                                     erasure_requested_at(event.value, time.time()))

    @app.task
    async def follow_models() -> None:
        model_feed.start(asyncio.get_running_loop())

    # --- timers ---------------------------------------------------------------------------
    @app.timer(interval=0.1, name="agents.app.release_idle")
    async def release_idle() -> None:
        if not app.rebalancing:
            await loop.release_idle()

    @app.timer(interval=settings.commit_interval, name="agents.app.commit_inputs")
    async def commit_inputs() -> None:
        await loop.commit_completed_inputs()

    @app.timer(interval=settings.sweep_seconds, name="agents.app.sweep")
    async def sweep() -> None:
        if not app.rebalancing:
            await loop.advance_ticks()   # learning: ticks the quiet stream's time has passed
            await loop.sweep()

    @app.timer(interval=1.0, name="agents.app.stall_watchdog")
    async def stall_watchdog() -> None:
        if not app.rebalancing:
            await loop.watch_stalls()

    @app.timer(interval=1.0, name="agents.app.recovery_watchdog")
    async def recovery_watchdog() -> None:
        await recovery.tick(loop.seek)

    @app.timer(interval=5.0, name="agents.app.report_consumer_lag")
    async def report_consumer_lag() -> None:
        loop.report_consumer_lag()

    @app.timer(interval=settings.refit_seconds, name="agents.app.refit_population")
    async def refit_population() -> None:
        await loop.refit_population()

    @app.timer(interval=POPULATION_READ_SECONDS, name="agents.app.follow_population")
    async def follow_population() -> None:
        await loop.follow_population()   # the workers that do not re-fit serve the stored re-fit

    @app.timer(interval=settings.backtest_seconds, name="agents.app.live_backtest")
    async def live_backtest() -> None:
        await loop.live_backtest()

    # --- rebalances and shutdown ------------------------------------------------------------
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args, signal=)
    async def align_assigned(app_: faust.App, assigned, **kwargs) -> None:
        loop.on_assigned(assigned)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args, signal=)
    async def forget_revoked(app_: faust.App, revoked, **kwargs) -> None:
        await loop.on_revoked(revoked)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args, signal=)
    def close_sink(app_: faust.App, **kwargs) -> None:
        model_feed.stop()
        if loop.train_executor is not None:
            loop.train_executor.shutdown(wait=False, cancel_futures=True)
        sink.close()

    # --- web views --------------------------------------------------------------------------
    @app.page("/healthz", name="healthz")
    async def healthz(web, request):
        return web.json({"status": "ok", "app": settings.app_id})

    @app.page("/metrics", name="metrics_view")
    async def metrics_view(web, request):
        body, content_type = render()
        return Response(body=body, headers={"Content-Type": content_type})

    @app.page("/customers/{customer_id}", name="customer_view")
    @app.table_route(table=states, match_info="customer_id")
    async def customer_view(web, request, customer_id: str):
        record = loop.customer_score(customer_id)
        if record is None:
            return web.json({"error": f"unknown customer {customer_id}"}, status=404)
        return web.json(record)

    return app
