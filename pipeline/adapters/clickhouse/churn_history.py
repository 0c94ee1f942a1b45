"""The learning worker's churn-model history in ClickHouse (migration 007): what each tick
changed, written through the sink (its retries and dedup tokens), and read back by a restarted
worker (pipeline/service/churn_history.py says what and why). Called in the sink's thread."""
from __future__ import annotations

from datetime import datetime, timezone

from clickhouse_connect.driver.client import Client

from pipeline.adapters.clickhouse.dsn import chdb_path
from pipeline.adapters.clickhouse.sink import ClickHouseSink, default_client_factory
from pipeline.adapters.clickhouse.tables import CHURN_LABELS, CHURN_SNAPSHOTS, CHURN_TICKS, CHURN_TRAININGS
from pipeline.service.churn_history import (
    FEATURE_SET, BookRows, LabelRow, Restored, SnapshotRow, TickRecord, TickRow, TrainingRow, covered, pooled_rows,
    read_history, record_rows)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


_MS = "toUnixTimestamp64Milli({col}) / 1000"


class ClickHouseChurnHistory:
    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink
        self._read_client: Client | None = None   # `pooled`'s, over a server

    def save(self, record: TickRecord) -> None:
        """Write the tick's rows, its tick row last (a tick is done once its row is stored)."""
        snaps, labels, tick = record_rows(record)
        self.sink.write({
            CHURN_SNAPSHOTS: [{"snapshot_at": _dt(t), "customer_id": cid, "features": f, "reference": ref,
                               "feature_set": record.feature_set, "scope": record.scope} for t, cid, f, ref in snaps],
            CHURN_LABELS: [{"snapshot_at": _dt(t), "customer_id": cid, "stage": stage, "within": w, "churned": y}
                           for t, cid, stage, w, y in labels],
        })
        t, horizon, feature_set, refit, retrain, population, scope = tick
        self.sink.write({CHURN_TICKS: [{"tick_at": _dt(t), "horizon_days": horizon, "feature_set": feature_set,
                                        "refit": refit, "retrain": retrain, "population": population,
                                        "scope": scope}]})

    def trained(self, row: TrainingRow) -> None:
        t, horizon, feature_set, version, serving = row
        self.sink.write({CHURN_TRAININGS: [{"trained_at": _dt(t), "horizon_days": horizon, "feature_set": feature_set,
                                            "version": version, "serving": serving}]})

    def load(self, horizon_days: float, max_rows: int, scope: str, lost_book: bool = True) -> Restored | None:
        client = self.sink.client
        trainings: list[TrainingRow] = [
            (float(t), float(h), str(fs), str(version), str(serving))
            for t, h, fs, version, serving in client.query(
                f"SELECT {_MS.format(col='trained_at')}, horizon_days, feature_set, version, serving "
                f"FROM {CHURN_TRAININGS} FINAL").result_rows]
        return read_history(self._ticks(client), lambda: self._counts(client, scope),
                            lambda since: self._rows_since(client, since, scope), horizon_days, max_rows, trainings, scope,
                            lost_book)

    def covered(self, t: float, horizon_days: float) -> set[int]:
        return covered(self._ticks(self.sink.client, t), t, horizon_days)

    def pooled(self, horizon_days: float, max_rows: int, as_of: float, max_per_snapshot: int) -> BookRows:
        """Every worker's labelled rows as of `as_of` (only the snapshots labelled by then: a
        training reads no others). Called in a thread of its own, not the sink's (seconds at
        500,000 rows): over a server it reads with a client of its own while the sink writes;
        on chDB with the sink's, whose backend takes one query at a time."""
        client = self._reader()
        return pooled_rows(self._ticks(client), self._counts(client, None),
                           lambda since, until: self._rows_since(client, since, None, until),
                           horizon_days, max_rows, as_of, max_per_snapshot)

    def _reader(self) -> Client:
        if chdb_path(self.sink.dsn) is not None:
            return self.sink.client
        if self._read_client is None:
            self._read_client = default_client_factory(self.sink.dsn)
        return self._read_client

    # --- the queries (scope None: every scope) --------------------------------------------
    @staticmethod
    def _ticks(client: Client, at: float | None = None) -> list[TickRow]:
        where = "" if at is None else " WHERE tick_at = {at:DateTime64(3, 'UTC')}"
        return [(float(t), float(h), str(fs), bool(refit), bool(retrain), str(pop), str(sc))
                for t, h, fs, refit, retrain, pop, sc in client.query(
                    f"SELECT {_MS.format(col='tick_at')}, horizon_days, feature_set, refit, retrain, population, scope "
                    f"FROM {CHURN_TICKS} FINAL{where}",
                    parameters=None if at is None else {"at": _dt(at)}).result_rows]

    @staticmethod
    def _of_scope(scope: str | None) -> str:
        return "" if scope is None else " AND scope IN ({scope:String}, '')"

    @classmethod
    def _counts(cls, client: Client, scope: str | None) -> list[tuple[float, int]]:
        return [(float(t), int(n)) for t, n in client.query(
            f"SELECT {_MS.format(col='snapshot_at')} AS t, count() FROM {CHURN_SNAPSHOTS} FINAL "
            f"WHERE feature_set = {{fs:String}}{cls._of_scope(scope)} GROUP BY t",
            parameters={"fs": FEATURE_SET, "scope": scope or ""}).result_rows]

    @classmethod
    def _rows_since(cls, client: Client, since: float, scope: str | None,
                    until: float | None = None) -> tuple[list[SnapshotRow], list[LabelRow]]:
        bound = {"fs": FEATURE_SET, "since": _dt(max(since, 0.0)), "scope": scope or "", "until": _dt(until or 0.0)}
        window = "snapshot_at >= {since:DateTime64(3, 'UTC')}" + (
            "" if until is None else " AND snapshot_at <= {until:DateTime64(3, 'UTC')}")
        snaps = [(float(t), cid, f, float(ref)) for t, cid, f, ref in client.query(
            f"SELECT {_MS.format(col='snapshot_at')}, customer_id, features, reference FROM {CHURN_SNAPSHOTS} "
            f"FINAL WHERE feature_set = {{fs:String}}{cls._of_scope(scope)} AND {window}", parameters=bound).result_rows]
        labels = [(float(t), cid, int(stage), w, y) for t, cid, stage, w, y in client.query(
            f"SELECT {_MS.format(col='snapshot_at')}, customer_id, stage, within, churned FROM {CHURN_LABELS} "
            f"FINAL WHERE {window}", parameters=bound).result_rows]
        return snaps, labels
