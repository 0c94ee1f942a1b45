"""Prometheus metrics of the cxpulse worker, behind one plain-method facade.

No other module touches prometheus objects: the worker, the scoring core and the
ClickHouse sink call methods of the single `METRICS` instance, and the worker's
`/metrics` web view returns `render()`.

Conventions: every family starts with `cxpulse_`, values are in base units
(seconds, messages, rows, ratios 0..1), counters end in `_total`. Labels are
low-cardinality only (topic, partition, reason, table, alert type, tier,
severity); never a customer id, staff id or anything personal. Label values
outside the known vocabularies are folded into "other" so that a bug upstream
can never explode the series count.

`METRIC_NAMES` lists every family name as it appears in the exposition (counters
with `_total`); `referenced_metric_names(deploy_dir)` lists the metric names the
Prometheus rules and the Grafana dashboards use, so a live scrape can be checked
against them.
"""
from __future__ import annotations

import bisect
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pipeline.adapters.clickhouse.tables import SINK_TABLES
from pipeline.domain.vocabulary import ALERT_SEVERITIES, ALERT_TYPES, TIERS
from pipeline.domain.vocabulary import DEAD_LETTER_REASONS as DEADLETTER_REASONS

# `_created` series double the sample count and nobody here queries them.
prometheus_client.disable_created_metrics()

# --- vocabularies (DESIGN.md section 2): pipeline/domain/vocabulary.py -----------------
DEFAULT_INPUT_TOPICS: tuple[str, ...] = ("cx.touchpoints", "cx.orders", "cx.complaints")

OTHER = "other"

# --- buckets ------------------------------------------------------------------------
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
CHURN_RISK_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- the registry ------------------------------------------------------------------
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Families contributed by the process/platform/GC collectors (Linux; the process
# collector exports nothing where /proc is missing).
RUNTIME_METRIC_NAMES: tuple[str, ...] = tuple(sorted(
    {m.name + ("_total" if m.type == "counter" else "") for m in REGISTRY.collect()}
))

# Every cxpulse family, as it appears in /metrics.
CXPULSE_METRIC_NAMES: tuple[str, ...] = (
    "cxpulse_build_info",
    "cxpulse_events_consumed_total",
    "cxpulse_events_applied_total",
    "cxpulse_events_deadlettered_total",
    "cxpulse_events_duplicate_total",
    "cxpulse_events_erased_total",
    "cxpulse_processing_latency_seconds",
    "cxpulse_batch_size_events",
    "cxpulse_event_time_lag_seconds",
    "cxpulse_last_applied_timestamp_seconds",
    "cxpulse_consumer_lag_messages",
    "cxpulse_scores_published_total",
    "cxpulse_alerts_raised_total",
    "cxpulse_alerts_firing",
    "cxpulse_complaints_past_sla",
    "cxpulse_churn_risk_ratio",
    "cxpulse_churn_backtest_auc",
    "cxpulse_churn_backtest_brier",
    "cxpulse_churn_backtest_brier_base_rate",
    "cxpulse_churn_backtest_customers",
    "cxpulse_churn_backtest_churn_rate",
    "cxpulse_churn_backtest_horizon_days",
    "cxpulse_churn_backtest_timestamp_seconds",
    "cxpulse_churn_backtest_precision",
    "cxpulse_churn_backtest_recall",
    "cxpulse_early_warning_backtest_auc",
    "cxpulse_early_warning_backtest_brier",
    "cxpulse_early_warning_backtest_brier_base_rate",
    "cxpulse_early_warning_backtest_customers",
    "cxpulse_early_warning_backtest_leave_rate",
    "cxpulse_early_warning_backtest_mean_early_warning",
    "cxpulse_churn_model_trained",
    "cxpulse_churn_model_trained_at_seconds",
    "cxpulse_churn_model_validation_auc",
    "cxpulse_churn_model_validation_brier",
    "cxpulse_churn_model_pool_missing_partitions",
    "cxpulse_churn_model_records_refused_total",
    "cxpulse_churn_early_warning_trained",
    "cxpulse_churn_early_warning_validation_auc",
    "cxpulse_sink_rows_total",
    "cxpulse_sink_flushes_total",
    "cxpulse_sink_flush_duration_seconds",
    "cxpulse_sink_failures_total",
    "cxpulse_sink_retries_total",
    "cxpulse_sink_queue_rows",
)

METRIC_NAMES: list[str] = sorted(CXPULSE_METRIC_NAMES + RUNTIME_METRIC_NAMES)


def _default_topics() -> tuple[str, ...]:
    try:
        from pipeline.config import load
        return tuple(load().input_topics)
    except Exception:  # settings invalid or not importable: metrics must still work
        return DEFAULT_INPUT_TOPICS


def _fold(value: object, known: tuple[str, ...]) -> str:
    v = getattr(value, "value", value)  # accept str Enums
    v = str(v)
    return v if v in known else OTHER


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("cxpulse")
    except Exception:
        return "unknown"


class Metrics:
    """All metrics of one worker process; methods are cheap and never raise on bad labels."""

    def __init__(self, registry: CollectorRegistry = REGISTRY,
                 topics: Iterable[str] | None = None) -> None:
        self.registry = registry
        self.topics: tuple[str, ...] = tuple(topics) if topics is not None else _default_topics()
        r = registry

        self._info = Info("cxpulse_build", "cxpulse build and version", registry=r)
        self._info.info({"version": _version()})

        # consumption
        self._consumed = Counter("cxpulse_events_consumed", "Input records read from Kafka",
                                 ["topic"], registry=r)
        self._applied = Counter("cxpulse_events_applied", "Input events applied to a customer profile",
                                ["topic"], registry=r)
        self._deadlettered = Counter("cxpulse_events_deadlettered",
                                     "Input records sent to the dead-letter topic", ["topic", "reason"],
                                     registry=r)
        self._duplicates = Counter("cxpulse_events_duplicate",
                                   "Input events ignored because their event_id was already applied",
                                   ["topic"], registry=r)
        self._erased = Counter("cxpulse_events_erased",
                               "Input events dropped because their customer was erased after they occurred",
                               ["topic"], registry=r)
        self._latency = Histogram("cxpulse_processing_latency_seconds",
                                  "Per-event processing latency: seconds from the micro-batch being taken "
                                  "to its events being applied and published", registry=r,
                                  buckets=LATENCY_BUCKETS)
        self._batch = Histogram("cxpulse_batch_size_events", "Events per micro-batch", registry=r,
                                buckets=BATCH_SIZE_BUCKETS)
        self._event_lag = Gauge("cxpulse_event_time_lag_seconds",
                                "Wall-clock now minus occurred_at of the last applied event", registry=r)
        self._event_lag.set_function(self._event_time_lag_now)
        self._last_applied = Gauge("cxpulse_last_applied_timestamp_seconds",
                                   "Unix time at which an event was last applied", registry=r)
        self._consumer_lag = Gauge("cxpulse_consumer_lag_messages",
                                   "Messages between the committed offset and the log end, per assigned partition",
                                   ["topic", "partition"], registry=r)
        self._lag_keys: set[tuple[str, str]] = set()
        self._last_occurred: float | None = None

        # outputs
        self._scores = Counter("cxpulse_scores_published", "Score records published to cx.scores", registry=r)
        self._alerts_raised = Counter("cxpulse_alerts_raised", "Alerts that started firing",
                                      ["type", "tier", "severity"], registry=r)
        self._firing: dict[tuple[str, str, str], int] = {}
        self._alerts_firing = Gauge("cxpulse_alerts_firing", "Alerts currently firing",
                                    ["type", "tier", "severity"], registry=r)
        self._past_sla = Gauge("cxpulse_complaints_past_sla",
                               "Open complaints past their sunset-rule deadline", ["tier"], registry=r)
        self._churn = Histogram("cxpulse_churn_risk_ratio", "Churn risk (0..1) of each published score",
                                ["tier"], registry=r, buckets=CHURN_RISK_BUCKETS)
        # the churn model that serves (issue #16): 0 = the hand-set model (cold start)
        self._model_trained = Gauge("cxpulse_churn_model_trained",
                                    "1 when a model learned from this business's history scores churn_risk, "
                                    "0 while the hand-set model serves (cold start)", registry=r)
        self._model_trained_at = Gauge("cxpulse_churn_model_trained_at_seconds",
                                       "Event time (unix) at which the serving churn model was trained", registry=r)
        self._model_auc = Gauge("cxpulse_churn_model_validation_auc",
                                "ROC AUC of the serving churn model on its held-out latest snapshots", registry=r)
        self._model_brier = Gauge("cxpulse_churn_model_validation_brier",
                                  "Brier score of the serving churn model on its held-out latest snapshots", registry=r)
        self._ew_trained = Gauge("cxpulse_churn_early_warning_trained",
                                 "1 when an early-warning model (P(leaves within the horizon | still here)) fills "
                                 "early_warning in the score records, 0 while none is trained", registry=r)
        self._ew_auc = Gauge("cxpulse_churn_early_warning_validation_auc",
                             "ROC AUC of the serving early-warning model on its held-out latest snapshots", registry=r)
        self._model_refused = Counter("cxpulse_churn_model_records_refused",
                                      "Records of the models topic this build cannot serve (a model of another "
                                      "build's features, or no model document): the serving model stays", registry=r)
        self._pool_missing = Gauge("cxpulse_churn_model_pool_missing_partitions",
                                   "Input partitions whose rows the trainer's last pooled training went without "
                                   "(their workers had not stored its tick within CXPULSE_CHURN_POOL_WAIT_SECONDS)",
                                   registry=r)

        # live backtest of churn_risk (pipeline/domain/backtest.py): predictions made one
        # horizon ago against what happened since; NaN while undefined (one class only)
        self._bt = {k: Gauge(f"cxpulse_churn_backtest_{k}", help_, registry=r) for k, help_ in (
            ("auc", "ROC AUC of churn_risk published one horizon ago for no activity since"),
            ("brier", "Brier score of churn_risk published one horizon ago (0 = perfect)"),
            ("brier_base_rate", "Brier score of predicting the observed churn rate, for comparison"),
            ("customers", "Customers with a churn_risk published one horizon ago"),
            ("churn_rate", "Share of them with no activity since"),
            ("horizon_days", "Backtest horizon H in days"),
            ("timestamp_seconds", "Unix time of the last backtest computation"))}
        self._bt_precision = Gauge("cxpulse_churn_backtest_precision",
                                   "Precision of the churn alert thresholds (each tier's) one horizon ago",
                                   ["level"], registry=r)
        self._bt_recall = Gauge("cxpulse_churn_backtest_recall",
                                "Recall of the churn alert thresholds (each tier's) one horizon ago",
                                ["level"], registry=r)
        # and of the early warning: published two horizons ago, among the customers still there
        # one horizon later, for leaving since (pipeline/domain/backtest.py early_warning_figures)
        self._ew_bt = {k: Gauge(f"cxpulse_early_warning_backtest_{k}", help_, registry=r) for k, help_ in (
            ("auc", "ROC AUC of early_warning published two horizons ago, among the customers active in the "
                    "horizon after it, for no activity in the last horizon"),
            ("brier", "Brier score of early_warning published two horizons ago (0 = perfect)"),
            ("brier_base_rate", "Brier score of predicting the observed leave rate, for comparison"),
            ("customers", "Customers with an early_warning published two horizons ago and active in the horizon after"),
            ("leave_rate", "Share of them with no activity in the last horizon"),
            ("mean_early_warning", "Mean early_warning they were given (against leave_rate: calibration in the large)"))}

        # ClickHouse sink
        self._sink_rows = Counter("cxpulse_sink_rows", "Rows written to ClickHouse", ["table"], registry=r)
        self._sink_flushes = Counter("cxpulse_sink_flushes", "Successful ClickHouse flushes", registry=r)
        self._sink_flush_seconds = Histogram("cxpulse_sink_flush_duration_seconds",
                                             "Duration of successful ClickHouse flushes", registry=r,
                                             buckets=FLUSH_BUCKETS)
        self._sink_failures = Counter("cxpulse_sink_failures", "Failed ClickHouse insert attempts", registry=r)
        self._sink_retries = Counter("cxpulse_sink_retries", "Retried ClickHouse insert attempts", registry=r)
        self._sink_queue = Gauge("cxpulse_sink_queue_rows", "Rows buffered for ClickHouse", registry=r)

        self._preinitialise()

    def _preinitialise(self) -> None:
        for topic in self.topics:
            self._consumed.labels(topic)
            self._applied.labels(topic)
            self._duplicates.labels(topic)
            self._erased.labels(topic)
            for reason in DEADLETTER_REASONS:
                self._deadlettered.labels(topic, reason)
        for t in ALERT_TYPES:
            for tier in TIERS:
                for sev in ALERT_SEVERITIES:
                    self._alerts_raised.labels(t, tier, sev)
                    self._alerts_firing.labels(t, tier, sev)
        for tier in TIERS:
            self._past_sla.labels(tier)
            self._churn.labels(tier)
        for table in SINK_TABLES:
            self._sink_rows.labels(table)

    # --- consumption -------------------------------------------------------------
    def consumed(self, topic: str, n: int = 1) -> None:
        """`n` records read from `topic` (before parsing)."""
        self._consumed.labels(topic).inc(n)

    def applied(self, topic: str, n: int = 1, last_occurred_at: datetime | float | None = None) -> None:
        """`n` events from `topic` applied; `last_occurred_at` feeds the event-time lag gauge."""
        self._applied.labels(topic).inc(n)
        self._last_applied.set(time.time())
        if last_occurred_at is not None:
            self.event_time(last_occurred_at)

    def deadlettered(self, topic: str, reason: str, n: int = 1) -> None:
        """`n` records from `topic` dead-lettered for `reason` (invalid_json, invalid_record, ...)."""
        self._deadlettered.labels(topic, _fold(reason, DEADLETTER_REASONS)).inc(n)

    def duplicate(self, topic: str, n: int = 1) -> None:
        """`n` events ignored as duplicates (event_id already seen)."""
        self._duplicates.labels(topic).inc(n)

    def erased(self, topic: str, n: int = 1) -> None:
        """`n` events dropped: their customer asked to be erased after they occurred."""
        self._erased.labels(topic).inc(n)

    def event_time(self, occurred_at: datetime | float) -> None:
        """Record the event time (datetime, or Unix seconds) of the last applied event."""
        if isinstance(occurred_at, datetime):
            if occurred_at.tzinfo is None:
                occurred_at = occurred_at.replace(tzinfo=timezone.utc)
            ts = occurred_at.timestamp()
        else:
            ts = float(occurred_at)
        if math.isfinite(ts):
            self._last_occurred = ts

    def _event_time_lag_now(self) -> float:
        if self._last_occurred is None:
            return 0.0
        return max(0.0, time.time() - self._last_occurred)

    def processing_latency(self, seconds: float, n: int = 1) -> None:
        """Observe `n` events that each took `seconds` to process."""
        _observe_n(self._latency, seconds, n)

    def batch(self, size: int, seconds: float) -> None:
        """One micro-batch of `size` events processed in `seconds`: observes the batch size
        once and the processing latency once per event (every event of a micro-batch waits
        for the whole batch)."""
        if size <= 0:
            return
        self._batch.observe(size)
        _observe_n(self._latency, seconds, size)

    def consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace the consumer-lag series with `{(topic, partition): messages}` for the
        partitions currently assigned; series of revoked partitions are removed."""
        keys = {(str(t), str(p)) for (t, p) in lags}
        for gone in self._lag_keys - keys:
            try:
                self._consumer_lag.remove(*gone)
            except KeyError:
                pass
        for (t, p), lag in lags.items():
            self._consumer_lag.labels(str(t), str(p)).set(max(0, lag))
        self._lag_keys = keys

    # --- outputs -------------------------------------------------------------------
    def scores_published(self, n: int = 1) -> None:
        self._scores.inc(n)

    def churn_risk(self, risk: float, tier: str) -> None:
        """Observe the churn risk (0..1) of one published score."""
        self._churn.labels(_fold(tier, TIERS)).observe(min(1.0, max(0.0, float(risk))))

    def alert_raised(self, type: str, tier: str, severity: str) -> None:  # noqa: A002 - wire name
        """An alert episode started firing: counts it and adds it to the firing gauge."""
        labels = (_fold(type, ALERT_TYPES), _fold(tier, TIERS), _fold(severity, ALERT_SEVERITIES))
        self._alerts_raised.labels(*labels).inc()
        self._firing[labels] = self._firing.get(labels, 0) + 1
        self._alerts_firing.labels(*labels).set(self._firing[labels])

    def alert_resolved(self, type: str, tier: str, severity: str) -> None:  # noqa: A002
        """An alert episode resolved: removes it from the firing gauge (never below 0)."""
        labels = (_fold(type, ALERT_TYPES), _fold(tier, TIERS), _fold(severity, ALERT_SEVERITIES))
        n = max(0, self._firing.get(labels, 0) - 1)
        self._firing[labels] = n
        self._alerts_firing.labels(*labels).set(n)

    def alerts_firing(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Set the firing gauge from `{(type, tier, severity): n}` (e.g. after a rebalance);
        every known combination missing from `counts` is set to 0."""
        folded: dict[tuple[str, str, str], int] = {}
        for (t, tier, sev), n in counts.items():
            k = (_fold(t, ALERT_TYPES), _fold(tier, TIERS), _fold(sev, ALERT_SEVERITIES))
            folded[k] = folded.get(k, 0) + int(n)
        for t in ALERT_TYPES:
            for tier in TIERS:
                for sev in ALERT_SEVERITIES:
                    folded.setdefault((t, tier, sev), 0)
        self._firing = folded
        for k, n in folded.items():
            self._alerts_firing.labels(*k).set(n)

    def complaints_past_sla(self, by_tier: Mapping[str, int]) -> None:
        """Set open complaints past the sunset-rule deadline, `{tier: n}`; missing tiers are 0."""
        folded = dict.fromkeys(TIERS, 0)
        for tier, n in by_tier.items():
            k = _fold(tier, TIERS)
            folded[k] = folded.get(k, 0) + int(n)
        for tier, n in folded.items():
            self._past_sla.labels(tier).set(n)

    # --- live backtest ---------------------------------------------------------------
    def churn_backtest(self, figures: Mapping[str, object], horizon_days: float, at: float) -> None:
        """Export pipeline.domain.backtest.backtest_figures (None → NaN), computed at Unix time `at`."""
        def num(v: object) -> float:
            return float("nan") if v is None else float(v)  # type: ignore[arg-type]

        for k in ("auc", "brier", "brier_base_rate", "customers", "churn_rate"):
            self._bt[k].set(num(figures.get(k)))
        self._bt["horizon_days"].set(horizon_days)
        self._bt["timestamp_seconds"].set(at)
        for level in ("warning", "critical"):
            self._bt_precision.labels(level).set(num(figures.get(f"precision_{level}")))
            self._bt_recall.labels(level).set(num(figures.get(f"recall_{level}")))
        early_warning = figures.get("early_warning")
        if isinstance(early_warning, Mapping):
            for k, gauge in self._ew_bt.items():
                gauge.set(num(early_warning.get(k)))

    # --- ClickHouse sink -------------------------------------------------------------
    def sink_rows(self, table: str, n: int) -> None:
        """`n` rows of `table` written (after a successful insert)."""
        self._sink_rows.labels(table).inc(n)

    def sink_flush(self, seconds: float | None = None) -> None:
        """One successful flush (optionally how long it took)."""
        self._sink_flushes.inc()
        if seconds is not None:
            self._sink_flush_seconds.observe(seconds)

    def sink_failure(self) -> None:
        """One failed insert attempt (whether or not it will be retried)."""
        self._sink_failures.inc()

    def sink_retry(self) -> None:
        """One retry of a failed insert."""
        self._sink_retries.inc()

    def sink_queue(self, n: int) -> None:
        """Rows currently buffered for ClickHouse."""
        self._sink_queue.set(n)


    def churn_model(self, card) -> None:
        """The serving churn model changed (a pipeline.learning.churn_trainer.ModelCard;
        None: back to the hand-set model)."""
        self._model_trained.set(0 if card is None else 1)
        if card is not None:
            self._model_trained_at.set(card.trained_at)
            self._model_auc.set(card.auc_validation if card.auc_validation is not None else math.nan)
            self._model_brier.set(card.brier_validation if card.brier_validation is not None else math.nan)

    def churn_early_warning(self, card) -> None:
        """The early-warning model installed (its ModelCard; None: none serves)."""
        self._ew_trained.set(0 if card is None else 1)
        # none serving (withdrawn by a retraining): no AUC, not the last one's
        self._ew_auc.set(card.auc_validation if card is not None and card.auc_validation is not None else math.nan)

    def churn_model_refused(self) -> None:
        """A record of the models topic was refused (this build cannot serve it)."""
        self._model_refused.inc()

    def churn_pool_missing(self, partitions: int) -> None:
        self._pool_missing.set(partitions)


def _observe_n(h: Histogram, value: float, n: int) -> None:
    """`h.observe(value)` n times, in O(log buckets) instead of O(n)."""
    if n <= 0 or not math.isfinite(value):
        return
    bounds = getattr(h, "_upper_bounds", None)
    buckets = getattr(h, "_buckets", None)
    total = getattr(h, "_sum", None)
    if bounds is None or buckets is None or total is None:  # prometheus-client internals changed
        for _ in range(n):
            h.observe(value)
        return
    total.inc(value * n)
    buckets[bisect.bisect_left(bounds, value)].inc(n)


METRICS = Metrics()


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The Prometheus text exposition of `registry`: (body, content type).

    The body is the classic text format with legacy (underscore) names, so the content
    type is the one prometheus-client's own HTTP handler sends for it: version 0.0.4,
    which every Prometheus 2.x/3.x accepts."""
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


# --- names used by the deploy files ---------------------------------------------------
# Prometheus synthesises these on scrape / rule evaluation; no target exports them.
PROMETHEUS_BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                                 "scrape_samples_post_metric_relabeling", "scrape_series_added",
                                 "ALERTS", "ALERTS_FOR_STATE"})
_NAME_RE = re.compile(r"(?<![\w:.\-$])((?:cxpulse|process|python)_[A-Za-z0-9_]*)(?![\w:(])")
_HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def _strip_suffix(name: str) -> str:
    for suffix in _HIST_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _promql_exprs(deploy_dir: Path) -> list[str]:
    """PromQL of the Prometheus rule files, Grafana alert rules and Prometheus panels.
    Rule files are scanned whole (minus comments), so names in annotations count too."""
    exprs: list[str] = []
    prom = deploy_dir / "prometheus"
    for f in sorted(prom.glob("*.yml")):
        if "test" in f.name or f.name == "prometheus.yml":
            continue
        exprs.append(_strip_yaml_comments(f.read_text()))
    alerting = deploy_dir / "grafana" / "provisioning" / "alerting"
    for f in sorted(alerting.glob("*.yml")):
        exprs.extend(re.findall(r"^\s*expr:\s*(.+)$", f.read_text(), flags=re.M))
    for f in sorted((deploy_dir / "grafana" / "dashboards").glob("*.json")):
        exprs.extend(_dashboard_promql(json.loads(f.read_text())))
    return exprs


def _strip_yaml_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _dashboard_promql(dashboard: dict) -> list[str]:
    out: list[str] = []

    def walk(panels: list) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append(t["expr"])
    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        if var.get("type") == "query" and isinstance(q, str):
            out.append(q)
    return out


def recording_rule_names(deploy_dir: str | Path) -> set[str]:
    """Names of the series recorded by the Prometheus recording rules."""
    names: set[str] = set()
    for f in sorted((Path(deploy_dir) / "prometheus").glob("*.yml")):
        if "test" in f.name:
            continue
        names.update(re.findall(r"^\s*-?\s*record:\s*([A-Za-z_:][A-Za-z0-9_:]*)", f.read_text(), flags=re.M))
    return names


def referenced_recording_rules(deploy_dir: str | Path) -> set[str]:
    """Recording-rule names (`level:metric:operation`) used by alerts and dashboards."""
    used: set[str] = set()
    pattern = re.compile(r"(?<![\w:])([a-z_]+:[A-Za-z0-9_]+:[A-Za-z0-9_]+)(?![\w:])")
    for expr in _promql_exprs(Path(deploy_dir)):
        for line in expr.splitlines():
            if re.match(r"^\s*-?\s*record:", line):
                continue
            used.update(pattern.findall(line.replace("http://", "").replace("https://", "")))
    return used


def referenced_metric_names(deploy_dir: str | Path) -> set[str]:
    """Exported metric family names (as in /metrics, histogram suffixes stripped) that the
    Prometheus rules, the Grafana alert rules and the dashboards refer to. Recording-rule
    names and series Prometheus synthesises itself (`up`, ...) are not included."""
    names: set[str] = set()
    for expr in _promql_exprs(Path(deploy_dir)):
        for name in _NAME_RE.findall(expr):
            names.add(_strip_suffix(name))
    return names - PROMETHEUS_BUILTINS
