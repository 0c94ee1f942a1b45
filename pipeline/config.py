"""All settings in one typed object, read from `CXPULSE_*` environment variables.

Every field's environment variable is `CXPULSE_` + the field name in upper case,
e.g. `CXPULSE_KAFKA_PORT=29092`. The README's configuration table lists them.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Latest time any timestamp may have, whatever the clock says (ClickHouse's DateTime range).
from pipeline.domain.plausible_time import TIME_CEILING_HARD  # noqa: E402

_UTC = timezone.utc


class Settings(BaseSettings):
    # env_parse_none_str: `none` unsets an optional setting (CXPULSE_SWEEP_RECHECK_SECONDS=none)
    model_config = SettingsConfigDict(env_prefix="CXPULSE_", extra="ignore", frozen=True, env_parse_none_str="none")

    # --- broker -------------------------------------------------------------------
    kafka_bootstrap: str = Field("", description="bootstrap servers; empty = the embedded broker on kafka_host:kafka_port")
    kafka_host: str = Field("127.0.0.1", description="embedded broker listen address")
    kafka_port: int = Field(19092, description="embedded broker Kafka port")
    partitions: int = Field(4, ge=1, description="partitions of every input topic (co-partitioned)")
    topic_touchpoints: str = Field("cx.touchpoints", description="input: touchpoint events")
    topic_orders: str = Field("cx.orders", description="input: order events")
    topic_complaints: str = Field("cx.complaints", description="input: complaint events")
    topic_scores: str = Field("cx.scores", description="output: one score per customer update (compacted)")
    topic_alerts: str = Field("cx.alerts", description="output: churn, SLA and recovery alerts")
    topic_deadletter: str = Field("cx.deadletter", description="output: rejected records with the reason")
    topic_erasures: str = Field("cx.erasures", description="input: erasure requests (`cxpulse erase`)")
    topic_actions: str = Field("cx.actions", description="input: operator actions on alerts (`cxpulse ack`, `cxpulse close`)")
    topic_models: str = Field("cx.models", description="the churn model every worker serves (compacted, one partition; published by the learning worker)")

    # --- storage ------------------------------------------------------------------
    data_dir: Path = Field(PROJECT_ROOT / "data", description="project-local data (broker, chDB, worker state)")
    clickhouse_dsn: str = Field("", description="chdb:///abs/path or http(s)://user:pass@host:8123/db; empty = chDB under data_dir")
    sink_batch_rows: int = Field(5000, ge=1, description="backfill (`replay --to-clickhouse`): rows per insert; the worker inserts per write (CXPULSE_WRITE_GROUP_ROWS)")
    write_group_rows: int = Field(40_000, ge=0, description="worker: rows (all tables) of the micro-batches processed while a ClickHouse write is in flight that wait to go in the next write together; a batch beyond it waits for the write (0: one write per micro-batch)")
    sink_flush_seconds: float = Field(1.0, gt=0, description="backfill: longest wait before buffered rows are inserted")
    sink_max_queue_rows: int = Field(200_000, ge=1, description="backfill: rows buffered at most (backpressure)")

    # --- worker -------------------------------------------------------------------
    app_id: str = Field("cxpulse", description="Faust app id = consumer group")
    web_port: int = Field(6066, description="worker HTTP port (/metrics, /healthz, /customers/{id})")
    web_host: str = Field("127.0.0.1", description="worker HTTP listen address (0.0.0.0 in containers)")
    batch_max: int = Field(5000, ge=1, description="micro-batch size, at most (what the consumer fetched and is buffered, up to this)")
    batch_within: float = Field(0.2, gt=0, description="records held for event-time alignment go by timer once no micro-batch came for this long (seconds)")
    commit_interval: float = Field(1.0, gt=0, description="seconds between Kafka offset commits")
    align_idle_seconds: float = Field(0.2, ge=0, description="event-time alignment: how long an empty, caught-up input partition holds back the other topics' partitions of its number (like Kafka Streams' max.task.idle.ms); not a record within half the lateness bound of its last record. A learning worker's event-time tick waits as long for such a partition of any number")
    align_fetch_wait_seconds: float = Field(300.0, ge=0, description="event-time alignment: how long an empty input partition that has records not fetched yet holds back its group")
    align_ahead_seconds: float = Field(600.0, gt=0, description="event-time alignment: a partition buffered this far ahead of its group is paused until the others catch up")
    sweep_seconds: float = Field(5.0, gt=0, description="wall-clock seconds between timer sweeps (SLA, silence)")
    sweep_recheck_seconds: float | None = Field(
        3600.0, gt=0, description="the sweep index: a sweep evaluates only customers with an SLA/escalation deadline due, "
                                  "and re-checks each customer's churn drift this many seconds (stream time) after its "
                                  "last evaluation; unset: each sweep re-evaluates the next 5,000 stored customers "
                                  "round-robin (CXPULSE_SWEEP_RECHECK_SECONDS=none)")
    log_level: str = Field("info", description="worker log level")

    # --- scoring ------------------------------------------------------------------
    half_life_days: float = Field(90.0, gt=0, description="half-life of dimension evidence")
    lateness_seconds: int = Field(3600, ge=0, description="out-of-order bound; older events are dead-lettered too_late")
    timezone: str = Field("UTC", description="business time zone for the sunset rule")
    cutoff_hour: float = Field(18.0, ge=0, lt=24, description="end of the business day for the sunset rule")
    sla_max_ack_seconds: float = Field(0.0, ge=0, description="cap on the time to acknowledge a complaint (0 = sunset rule only)")
    working_days: str = Field("mon-fri", description="business calendar: working weekdays, e.g. `mon-fri`, `mon,tue,wed,thu,fri,sat`, `sun-thu`")
    open_hour: float = Field(9.0, ge=0, lt=24, description="business calendar: start of business hours (local); they end at the cut-off")
    holiday_country: str = Field("", description="business calendar: public holidays of this country (ISO code, `holidays` package); empty = none")
    holiday_subdivision: str = Field("", description="business calendar: region/state of `holiday_country` (e.g. `BY` for Bavaria); empty = national holidays")
    extra_holidays: str = Field("", description="business calendar: more non-working dates, comma-separated ISO dates (e.g. `2026-12-24,2026-12-31`)")
    resolve_in_business_hours: bool = Field(False, description="count complaint resolution targets in business hours instead of calendar hours")
    escalate_after_seconds: float = Field(7200.0, ge=0, description="an `escalation` alert when a critical alert's case is not acknowledged this long after it fired (0 = never)")
    sla_warning_share: float = Field(0.75, ge=0, lt=1, description="`sla_at_risk` once this share of the time to a complaint deadline has passed unanswered (0 = no warnings)")
    population_file: Path | None = Field(None, description="churn population parameters (JSON); default: built-in priors, re-fitted in-stream")
    churn_control_share: float = Field(0.0, ge=0, le=1, description="share of churn_risk alerts kept as a control group (`control: true`, no recommended action) to measure whether the actions work; a business decision, 0 = none")
    churn_horizon_days: float = Field(30.0, ge=0, description="churn = gone, or no activity within this many days (at most 64 when the churn model learns: its labels are read from a 64-day activity bitmap)")
    churn_pool_wait_seconds: float = Field(3600.0, ge=0, description="several learning workers over a shared ClickHouse server (not chDB, which is one process's): how long the trainer (the owner of input partition 0) waits at a retraining for every input partition's tick to be stored before it trains on the rows there are")
    refit_seconds: float = Field(3600.0, gt=0, description="wall-clock seconds between population re-fits in the worker (with several workers on one ClickHouse, by the owner of input partition 0; the others serve its latest stored fit, read every minute; not when it learns: then at its daily event-time ticks)")
    learn_churn: bool = Field(False, description="the worker learns the churn model as `cxpulse replay --learn-churn` does (daily event-time snapshots, weekly training off the event loop) and publishes it on `topic_models`; records after the next midnight (UTC, event time) wait up to the lateness bound for it. With several learning workers only the owner of input partition 0 trains and publishes, on the rows of all")
    backtest_seconds: float = Field(3600.0, gt=0, description="wall-clock seconds between live backtests of churn_risk in the worker (Prometheus gauges)")
    tier_thresholds: tuple[float, float, float] = Field(
        (500.0, 2000.0, 10000.0), description="trailing-365-day revenue for silver, gold, platinum"
    )
    cxi_weights: tuple[float, float, float, float, float] = Field(
        (0.11, 0.32, 0.22, 0.19, 0.16),
        description="CXI weights: tangibles, reliability, responsiveness, assurance, empathy",
    )


    # --- input contract -------------------------------------------------------------
    time_floor: datetime = Field(
        datetime(2000, 1, 1, tzinfo=_UTC),
        description="earliest plausible occurred_at / promised_at / fulfilled_at; older is dead-lettered implausible_time")
    clock_skew_seconds: float = Field(
        900.0, ge=0, description="how far occurred_at / fulfilled_at may be ahead of the processing clock "
                                 "(producer clock skew); later is dead-lettered implausible_time. Keep it well "
                                 "below lateness_seconds: a fast clock moves a customer's watermark at most this far")
    promise_horizon_days: float = Field(
        731.0, ge=0, description="how far promised_at may be after the clock (a promise is a future date)")
    currency: str = Field("EUR", description="the business currency (ISO 4217); orders in other currencies "
                                             "are dead-lettered unsupported_currency")
    id_pattern: str = Field("", description="optional regex every id must also match (narrows the contract's "
                                            "id pattern for all id fields, e.g. ^[A-Za-z0-9-]{1,36}$); empty = the contract's pattern only")
    max_open_complaints: int = Field(
        100, ge=1, description="open complaints kept per customer; one more is dead-lettered too_many_open_complaints")

    @model_validator(mode="after")
    def _learnable_horizon(self) -> "Settings":
        if self.learn_churn:
            from pipeline.domain.churn_snapshots import check_horizon

            check_horizon(self.churn_horizon_days)
        return self

    @field_validator("time_floor")
    @classmethod
    def _floor_in_range(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            v = v.replace(tzinfo=_UTC)
        if not (datetime(1970, 1, 1, tzinfo=_UTC) <= v < TIME_CEILING_HARD):
            raise ValueError("time_floor must be between 1970-01-01 and 2106 (ClickHouse DateTime range)")
        return v

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, v: str) -> str:
        from schemas.currencies import ISO_4217
        if v not in ISO_4217:
            raise ValueError(f"{v!r} is not an ISO 4217 currency code")
        return v

    @field_validator("id_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        if v:
            re.compile(v)
        return v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("working_days")
    @classmethod
    def _working_days(cls, v: str) -> str:
        from pipeline.domain.business_calendar import parse_working_days
        parse_working_days(v)
        return v

    @field_validator("extra_holidays")
    @classmethod
    def _extra_holidays(cls, v: str) -> str:
        from pipeline.domain.business_calendar import parse_dates
        parse_dates(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name, e.g. Europe/Berlin)") from None
        return v

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def input_topics(self) -> tuple[str, str, str]:
        return (self.topic_touchpoints, self.topic_orders, self.topic_complaints)

    @property
    def topic_type(self) -> dict[str, str]:
        """Which record `type` each input topic carries."""
        return {self.topic_touchpoints: "touchpoint", self.topic_orders: "order",
                self.topic_complaints: "complaint"}

    @property
    def topic_for_type(self) -> dict[str, str]:
        return {v: k for k, v in self.topic_type.items()}

    @property
    def dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.data_dir / 'clickhouse'}"


def load(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
