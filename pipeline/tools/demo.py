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
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.kafka.broker import EmbeddedBroker
from pipeline.config import Settings
from pipeline.tools import demo_operators
from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import PRESETS
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
    action_deadletters: Counter = field(default_factory=Counter)   # operator actions refused (cx.actions)
    open_cases_worked: int = 0
    actions_sent: int = 0
    cases: list[dict] = field(default_factory=list)        # case outcomes by alert type (ClickHouse)
    uplift: dict[str, Any] = field(default_factory=dict)   # the generator's operators: planted vs measured
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

        stream = generate(customers=customers, days=days, seed=seed, invalid_ratio=invalid_ratio,
                          model=PRESETS["strong"], operators=demo_operators.POLICY)
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

        # The service-recovery loop: the operator team works the open cases (demo_operators).
        alerts = demo_operators.decode(m.value for m in kafka_io.read_topic(settings, settings.topic_alerts))
        actions = demo_operators.case_actions(alerts, stream, datetime.now(timezone.utc))
        report.open_cases_worked = len(demo_operators.open_alerts(alerts))
        report.actions_sent = kafka_io.produce(settings, [(settings.topic_actions, k, v) for k, v in actions])
        topics.wait_caught_up(settings, settings.app_id, [settings.topic_actions], timeout=300,
                              alive=lambda: worker.alive)
        say(quiet, f"operators {report.actions_sent:,} actions on {report.open_cases_worked:,} open cases")
        report.uplift = demo_operators.generated_uplift(stream, seed=seed)

        scores = kafka_io.read_topic(settings, settings.topic_scores)
        report.scores_published = len(scores)
        report.customers_scored = len({m.key for m in scores})
        for m in kafka_io.read_topic(settings, settings.topic_deadletter):
            dl = orjson.loads(m.value)
            (report.action_deadletters if dl["source_topic"] == settings.topic_actions
             else report.deadletters)[dl["reason"]] += 1
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
            report.cases = queries.case_outcomes(sink.client, by="alert_type")
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


def _share(v: object) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{v:.0%}"


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
    if report.open_cases_worked:
        out.add_row("open cases worked by the operators", f"{report.open_cases_worked:,} ({report.actions_sent:,} actions)")
    for reason, n in sorted(report.action_deadletters.items()):
        out.add_row(f"  actions dead-lettered: {reason}", f"{n:,}")
    for c in report.cases:
        out.add_row(f"cases {c['key']}: closed / all", f"{c['closed']:,} / {c['cases']:,}")
        out.add_row(f"  retained / lost (of closed)", f"{_share(c['retained_share'])} / {_share(c['lost_share'])}")
    u = report.uplift
    if u:
        out.add_row("generator's operators: cases (30-day window)",
                    f"{u['cases']:,} ({u['treated']:,} called, {u['control']:,} control)")
        out.add_row(f"  planted churn uplift (call cuts hazard {u['effect']:.0%} for {u['effect_days']} d)",
                    "—" if u["planted"] is None else f"{u['planted']:+.3f}")
        ci = u.get("ci")
        out.add_row("  measured churn uplift (95 % CI)", "—" if u["measured"] is None else
                    f"{u['measured']:+.3f} ({ci[0]:+.3f} to {ci[1]:+.3f})" if ci else f"{u['measured']:+.3f}")
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
