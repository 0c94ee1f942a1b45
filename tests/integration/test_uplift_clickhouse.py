"""Treated vs control churn alerts in ClickHouse (chDB): the control columns of cx_alerts and
queries.uplift_outcomes, from alert rows as the sink writes them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from pipeline.adapters.clickhouse import queries
from pipeline.adapters.clickhouse.rows import ALERT_COLUMNS, alert_row
from pipeline.adapters.clickhouse.sink import ClickHouseSink

pytestmark = pytest.mark.integration   # the real engine (chDB)

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def sink(tmp_path) -> Iterator[ClickHouseSink]:
    s = ClickHouseSink(f"chdb://{tmp_path / 'ch'}").open()
    yield s
    s.close()


def alert(aid: str, customer: str, day: float, control: bool = False, status: str = "firing") -> dict:
    a = {"alert_id": aid, "type": "churn_risk", "status": status, "severity": "warning", "customer_id": customer,
         "tier": "standard", "as_of": (T + timedelta(days=day)).isoformat(), "churn_risk": 0.4,
         "revenue_at_risk": 40.0, "reasons": [], "recommended_action": "send a personal win-back offer"}
    if control:
        a.update(control=True, withheld_action=a["recommended_action"], recommended_action="none: control group")
    return a


def insert_events(sink, rows: list[tuple[str, str, float, str, float | None]]) -> None:
    sink.client.insert("cx_events", [[f"e{i}", kind, cid, T + timedelta(days=day), status, amount]
                                     for i, (kind, cid, day, status, amount) in enumerate(rows)],
                       column_names=["event_id", "event_type", "customer_id", "occurred_at", "status", "amount"])


def test_uplift_outcomes_by_action_and_arm(sink):
    alerts = [alert("a1", "c1", 0), alert("a1", "c1", 5, status="resolved"), alert("a2", "c2", 0),
              alert("a3", "c3", 0, control=True), alert("a4", "c4", 0, control=True),
              alert("a5", "c5", 50)]                              # its 30 days are not over: left out
    sink.client.insert("cx_alerts", [[alert_row(a)[c] for c in ALERT_COLUMNS] for a in alerts],
                       column_names=list(ALERT_COLUMNS))
    insert_events(sink, [
        ("order", "c1", 3, "paid", 30.0), ("order", "c1", 3, "placed", 30.0),   # c1 stays, 30 kept
        ("order", "c1", 45, "paid", 99.0),                                      # after the horizon
        ("touchpoint", "c3", 10, "", None),                                     # c3 stays, no revenue
        ("touchpoint", "c2", -1, "", None),                                     # c2 and c4: gone
        ("touchpoint", "c5", 60, "", None),                                     # the latest event: day 60
    ])
    flags = sink.client.query("SELECT alert_id, control, withheld_action FROM cx_alerts FINAL "
                              "WHERE status = 'firing' ORDER BY alert_id").result_rows
    assert flags[2] == ("a3", True, "send a personal win-back offer") and flags[0] == ("a1", False, "")
    rows = queries.uplift_outcomes(sink.client, 30)
    assert [(r["action"], r["arm"], r["cases"], r["churned"], r["churn_rate"], r["mean_revenue"]) for r in rows] == [
        ("send a personal win-back offer", "control", 2, 1, 0.5, 0.0),
        ("send a personal win-back offer", "treated", 2, 1, 0.5, 15.0)]
    assert queries.uplift_outcomes(sink.client, 30, since=T + timedelta(days=1)) == []
    with pytest.raises(ValueError):
        queries.uplift_sql(0)
