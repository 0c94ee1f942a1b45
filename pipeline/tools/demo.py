"""`cxpulse demo`: the whole pipeline on the embedded defaults, end to end.

Starts the embedded broker, creates the topics, starts one Faust worker, produces a
synthetic stream (with a few percent invalid records), waits until the worker's
committed offsets reach the end of every input topic, stops everything cleanly and
prints a summary read back from Kafka and ClickHouse.
"""
from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.kafka.broker import EmbeddedBroker
from pipeline.config import Settings
from pipeline.tools.generator import generate
from pipeline.tools.progress import bar, console
from pipeline.adapters.kafka.worker_process import WorkerProcess


@dataclass
class DemoReport:
    produced: int = 0
    invalid_generated: int = 0
    duplicates_generated: int = 0
    accepted: int = 0
    deadletters: Counter = field(default_factory=Counter)
    customers_scored: int = 0
    scores_published: int = 0
    alerts: Counter = field(default_factory=Counter)
    table_counts: dict[str, int] = field(default_factory=dict)
    kpis: dict[str, object] = field(default_factory=dict)
    charts: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(settings: Settings, customers: int = 2000, days: int = 60, seed: int = 7,
             invalid_ratio: float = 0.03, quiet: bool = False, keep_data: bool = False,
             charts_dir: Path | None = None) -> DemoReport:
    """The stream covers `days` of history, produced in one go while the worker runs: a
    backfill at full speed (days of event time per second), with the configured lateness
    bound (default 1 hour). The worker applies the three input topics in event-time order
    (pipeline/service/event_time_merge.py), so nothing of it is `too_late`."""
    report = DemoReport()
    settings = settings.model_copy(update={"commit_interval": 0.2})
    t0 = time.monotonic()
    if not keep_data and settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(settings) if settings.embedded_broker else None
    worker = WorkerProcess(settings)
    try:
        if broker:
            broker.start()
            say(quiet, f"broker    embedded Kafka-protocol broker on {broker.bootstrap} (log {broker.log_path})")
        counts = topics.ensure_topics(settings)
        say(quiet, f"topics    {', '.join(f'{t}×{n}' for t, n in counts.items())}")
        worker.start()
        say(quiet, f"worker    {worker.url} (log {worker.log_path})")

        stream = generate(customers=customers, days=days, seed=seed, invalid_ratio=invalid_ratio)
        report.invalid_generated = stream.n_invalid
        report.duplicates_generated = stream.n_duplicates
        topic_for = settings.topic_for_type
        records = [(topic_for[r.kind], r.key, r.value) for r in stream.records]
        t1 = time.monotonic()
        say(quiet, f"stream    {len(records):,} records, {customers:,} customers, {days} days; "
                   f"produced in one go (lateness bound {settings.lateness_seconds / 3600:g} h)")
        with bar("produce+process", len(records), quiet) as b:
            report.produced = kafka_io.produce(settings, records)
            topics.wait_caught_up(
                settings, settings.app_id, list(settings.input_topics), timeout=1200,
                on_progress=lambda remaining: b.update(completed=report.produced - remaining),
                alive=lambda: worker.alive)
            b.update(completed=report.produced)
        report.seconds["produce+process"] = time.monotonic() - t1

        scores = kafka_io.read_topic(settings, settings.topic_scores)
        report.scores_published = len(scores)
        report.customers_scored = len({m.key for m in scores})
        for m in kafka_io.read_topic(settings, settings.topic_deadletter):
            report.deadletters[orjson.loads(m.value)["reason"]] += 1
        for m in kafka_io.read_topic(settings, settings.topic_alerts):
            a = orjson.loads(m.value)
            if a["status"] == "firing":
                report.alerts[a["type"]] += 1
        worker.stop()
        if broker:
            broker.stop()
        # The worker has released the embedded ClickHouse; read the analytics model.
        from pipeline.adapters.clickhouse import queries
        from pipeline.adapters.clickhouse.sink import ClickHouseSink

        with ClickHouseSink(settings.dsn) as sink:
            report.table_counts = queries.table_counts(sink.client)
            report.accepted = report.table_counts.get("cx_events", 0)
            report.kpis = queries.kpis(sink.client)
            if charts_dir is not None and _has_charts():
                from pipeline.tools.charts import write_charts

                report.charts = write_charts(sink.client, charts_dir)
    finally:
        worker.stop()
        if broker:
            broker.stop()
    report.seconds["total"] = time.monotonic() - t0
    return report


def _has_charts() -> bool:
    import importlib.util

    return importlib.util.find_spec("pipeline.tools.charts") is not None


def say(quiet: bool, text: str) -> None:
    if not quiet:
        console.print(text)


def _kpi(v: object) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_kpi(x)}" for k, x in v.items()) or "—"
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def print_report(report: DemoReport) -> None:
    from rich.table import Table

    out = Table(title="cxpulse demo", show_header=True, header_style="bold")
    out.add_column("what")
    out.add_column("value", justify="right")
    out.add_row("events produced", f"{report.produced:,}")
    out.add_row("  of which invalid (generated)", f"{report.invalid_generated:,}")
    out.add_row("  of which exact duplicates (generated)", f"{report.duplicates_generated:,}")
    out.add_row("events accepted (in ClickHouse)", f"{report.accepted:,}")
    out.add_row("dead-lettered", f"{sum(report.deadletters.values()):,}")
    for reason, n in sorted(report.deadletters.items()):
        out.add_row(f"  {reason}", f"{n:,}")
    out.add_row("customers scored", f"{report.customers_scored:,}")
    out.add_row("score records published", f"{report.scores_published:,}")
    for kind, n in sorted(report.alerts.items()):
        out.add_row(f"alerts fired: {kind}", f"{n:,}")
    for table, n in report.table_counts.items():
        out.add_row(f"ClickHouse {table}", f"{n:,}")
    for k, v in report.kpis.items():
        out.add_row(k.replace("_", " "), _kpi(v))
    for step, secs in report.seconds.items():
        out.add_row(f"time: {step}", f"{secs:.1f} s")
    Console = type(console)
    Console(highlight=False).print(out)
    for path in report.charts:
        print(f"chart: {path}")
