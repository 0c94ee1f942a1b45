"""The composition root: where the environment's `Settings` meet the core and the adapters.

The core (pipeline/domain, pipeline/service) never sees `Settings`, a file or the clock:
it receives values (`ScoringParams`, `PopulationParams`, the topic contract) built here.
The worker (agents/), replay, evaluate and bench build their core and adapters with these
functions, so one setting means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING


from pipeline.config import Settings
from pipeline.domain.churn import PopulationParams, population_of_json
from pipeline.domain.plausible_time import PlausibleWindow
from pipeline.domain.scoring import ScoringParams
from pipeline.service.processor import Core

if TYPE_CHECKING:
    from pipeline.adapters.clickhouse.sink import ClickHouseSink
    from pipeline.adapters.observability.metrics import Metrics


def scoring_params(settings: Settings) -> ScoringParams:
    """The core's parameters; the business calendar is resolved here (public holidays from
    the `holidays` package), so the core never reads it."""
    from pipeline.adapters.holiday_calendar import calendar_from_settings

    return ScoringParams(settings.half_life_days, float(settings.lateness_seconds), settings.tier_thresholds,
                         tuple(settings.cxi_weights), settings.sla_max_ack_seconds, calendar_from_settings(settings),
                         settings.resolve_in_business_hours, settings.sla_warning_share,
                         float(settings.escalate_after_seconds), settings.max_open_complaints,
                         settings.churn_control_share)


def read_population(path: Path | None) -> PopulationParams:
    """The population parameters of a JSON file (`PopulationParams` fields); the built-in
    priors when no file is given or it does not exist."""
    if path is None or not Path(path).exists():
        return PopulationParams()
    return population_of_json(Path(path).read_bytes())


def population(settings: Settings) -> PopulationParams:
    """The starting population parameters: `population_file` (or the priors) with the
    configured churn horizon."""
    return replace(read_population(settings.population_file), horizon_days=settings.churn_horizon_days)


def plausible_window(settings: Settings) -> PlausibleWindow:
    """Which event times are plausible (its ceiling follows the core's `received_at`)."""
    return PlausibleWindow(settings.time_floor.timestamp(), settings.clock_skew_seconds,
                           settings.promise_horizon_days * 86400.0)


def build_core(settings: Settings, population_params: PopulationParams | None = None) -> Core:
    return Core(scoring_params(settings), population_params or population(settings), settings.topic_type,
                plausible_window(settings), settings.currency, settings.id_pattern)


def build_sink(settings: Settings, metrics: Metrics | None = None) -> ClickHouseSink:
    """The ClickHouse sink of the worker and of `replay --to-clickhouse`."""
    from pipeline.adapters.clickhouse.sink import ClickHouseSink   # clickhouse-connect: only when a sink is built

    return ClickHouseSink(settings.dsn, batch_rows=settings.sink_batch_rows, flush_seconds=settings.sink_flush_seconds,
                          max_queue_rows=settings.sink_max_queue_rows, metrics=metrics)


# The worker's garbage-collector settings (#18). The core makes few reference cycles but very
# many short-lived containers (pydantic events, profiles, rows), so with CPython's default
# threshold (700 allocations) the young generation is collected every few events and the
# older ones often; each full collection also walked every long-lived object of start-up
# (Faust, pydantic schemas, the tables). `gc.freeze` moves what exists after start-up out
# of the collector's sight, and the larger thresholds collect the young generation every
# GC_THRESHOLDS[0] net allocations. Measured on the worker-like loop
# (`python -m pipeline.tools.core_loop --gc`, bench/README.md): no collection left in 20k events, same max RSS.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Call once, after start-up (imports, app and tables built): collect, freeze what
    survives, and raise the thresholds. Cycles are still collected, less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)

