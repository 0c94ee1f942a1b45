"""The population parameters of the worker's wall-clock re-fits in ClickHouse (migration 008):
written after each re-fit, the latest read back by a restarted worker. Called in the sink's
thread."""
from __future__ import annotations

from datetime import datetime, timezone

from pipeline.adapters.clickhouse.sink import ClickHouseSink
from pipeline.adapters.clickhouse.tables import POPULATION
from pipeline.domain.churn import PopulationParams, population_json, population_of_json


class ClickHousePopulation:
    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    def save(self, params: PopulationParams, fitted_at: float) -> None:
        self.sink.write({POPULATION: [{"fitted_at": datetime.fromtimestamp(fitted_at, timezone.utc),
                                       "params": population_json(params)}]})

    def load(self) -> PopulationParams | None:
        rows = self.sink.client.query(f"SELECT params FROM {POPULATION} FINAL ORDER BY fitted_at DESC LIMIT 1").result_rows
        return population_of_json(rows[0][0]) if rows else None
