"""ClickHouse analytics model: migrations, rows, the sink (exactly-once under retries and
faults), erasure and the queries -- on the real engine (chDB) in tmp_path, no mocks.

chDB allows one engine (one data path) per process at a time, so every test closes its
sink before the next one opens another path.
"""
from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from pipeline.adapters.clickhouse import queries
from pipeline.adapters.clickhouse.migrations import apply_migrations, migration_files
from pipeline.adapters.clickhouse.rows import (
    ALERT_COLUMNS, COMPLAINT_COLUMNS, EVENT_COLUMNS, SCORE_COLUMNS,
    alert_row, case_event_row, complaint_row, event_row, score_row,
)
from pipeline.adapters.clickhouse.sink import ClickHouseSink, SinkClosed, dedup_token, is_transient
from schemas.events import EVENT_ADAPTER
from schemas.outputs import AlertRecord, ScoreRecord

from pipeline.adapters.clickhouse.tables import CUSTOMER_TABLES as BASE_TABLES  # noqa: E402
CHANNELS = ("store", "web", "app", "call_center", "chat", "bot")
STAGES = ("awareness", "consideration", "purchase", "usage", "loyalty")
TIERS = ("standard", "silver", "gold", "platinum")
DIMS = ("tangibles", "reliability", "responsiveness", "assurance", "empathy")
FACTORS = ("inactivity", "detractor", "sla_breaches", "late_fulfilment", "low_ratings")


class Recorder:
    """A metrics object satisfying pipeline.adapters.clickhouse.sink.SinkMetrics."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = defaultdict(int)
        self.flushes = self.failures = self.retries = 0
        self.queue: list[int] = []

    def sink_rows(self, table: str, n: int) -> None:
        self.rows[table] += n

    def sink_flush(self) -> None:
        self.flushes += 1

    def sink_failure(self) -> None:
        self.failures += 1

    def sink_retry(self) -> None:
        self.retries += 1

    def sink_queue(self, n: int) -> None:
        self.queue.append(n)


def open_sink(tmp_path, **kw: Any) -> ClickHouseSink:
    return ClickHouseSink(f"chdb://{tmp_path / 'ch'}", **kw).open()


@pytest.fixture
def sink(tmp_path) -> Iterator[ClickHouseSink]:
    s = open_sink(tmp_path)
    yield s
    s.close()


# --- synthetic data ----------------------------------------------------------------------

def synthetic(n_events: int, n_customers: int = 5000, seed: int = 7, batch: int = 5000) -> list[dict[str, list[dict]]]:
    """n_events accepted events over the last ~20 days, one score per event, churn alerts
    and complaint lifecycles, cut into sink batches of `batch` events (+ their other rows)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(days=20)
    step = timedelta(days=19) / n_events
    version: dict[str, int] = defaultdict(int)
    batches: list[dict[str, list[dict]]] = []
    cur: dict[str, list[dict]] = {}
    for i in range(n_events):
        cid = f"cust-{rng.randrange(n_customers):05d}"
        tier = TIERS[int(cid[-5:]) % 4]
        at = start + step * i
        ch = rng.choice(CHANNELS)
        common = {"event_id": f"ev-{seed}-{i}", "customer_id": cid, "occurred_at": at.isoformat(),
                  "channel": ch, "schema_version": 1}
        r = rng.random()
        if r < 0.7:
            rec = {**common, "type": "touchpoint", "stage": rng.choice(STAGES),
                   "kind": rng.choice(["support", "visit", "survey"]),
                   "staff_id": rng.choice([None, "staff-1", "staff-2", "staff-3"]),
                   "wait_seconds": rng.choice([None, rng.uniform(0, 600)]),
                   "handle_seconds": rng.choice([None, rng.uniform(30, 900)]),
                   "resolved": rng.choice([None, True, False]), "handoffs": rng.choice([None, 0, 1, 3]),
                   "ratings": {d: rng.randint(1, 5) for d in DIMS if rng.random() < 0.4} or None,
                   "csat": rng.choice([None, 1, 2, 3, 4, 5]), "nps": rng.choice([None, *range(11)]),
                   "sentiment": rng.choice([None, -0.5, 0.0, 0.25, 1.0])}
        elif r < 0.9:
            promised = at + timedelta(days=2)
            rec = {**common, "type": "order", "order_id": f"ord-{i}",
                   "status": rng.choice(["placed", "paid", "delivered", "refunded"]),
                   "amount": f"{rng.uniform(5, 500):.2f}", "currency": "EUR",
                   "promised_at": promised.isoformat(),
                   "fulfilled_at": rng.choice([None, (promised + timedelta(hours=rng.randint(-24, 48))).isoformat()])}
        else:
            rec = {**common, "type": "complaint", "complaint_id": f"cmp-{i}", "status": "opened",
                   "category": rng.choice([*DIMS, "other"]), "severity": rng.choice(["low", "high"]),
                   "compensation": rng.choice([None, "10.00"])}
        ev = EVENT_ADAPTER.validate_python(rec)
        rows = cur.setdefault("cx_events", [])
        rows.append(event_row(ev, tier))
        version[cid] += 1
        drivers = [{"factor": f, "contribution": round(rng.random(), 3)} for f in rng.sample(FACTORS, rng.randint(0, 3))]
        drivers.sort(key=lambda d: -d["contribution"])
        # The shape of ScoreRecord.model_dump() (validated models: test_rows_round_trip).
        score = dict(
            schema_version=1, customer_id=cid, as_of=at, version=version[cid],
            cxi=rng.choice([None, rng.uniform(0, 100)]), tangibles=None, reliability=rng.uniform(0, 100),
            responsiveness=None, assurance=None, empathy=None, csat=None, nps=None, nps_class=None, tier=tier,
            stage=rec.get("stage"), revenue_365d=100.0, open_complaints=0, sla_breaches=0,
            churn_risk=rng.random(), churn_drivers=drivers, revenue_at_risk=10.0, events=version[cid],
        )
        if i % 1000 == 0:
            ScoreRecord.model_validate(score)  # the shape stays valid
        cur.setdefault("cx_scores_history", []).append(score_row(score))
        if i % 50 == 0:
            alert = dict(alert_id=f"al-{cid}-{i}", type="churn_risk", status="firing", severity="warning",
                         customer_id=cid, tier=tier, as_of=at, churn_risk=0.8, revenue_at_risk=50.0,
                         reasons=["inactivity"], recommended_action="call the customer")
            cur.setdefault("cx_alerts", []).append(alert_row(AlertRecord(**alert).model_dump()))
            # an operator acknowledges the case of the alert (cx.actions -> cx_case_events)
            acked = at + timedelta(minutes=2)
            cur.setdefault("cx_case_events", []).append(case_event_row(dict(
                alert_id=alert["alert_id"], action_id=f"act-{i}", customer_id=cid, action="acknowledged",
                occurred_at=acked, staff_id="staff-1", alert_type="churn_risk", severity="warning", tier=tier,
                alert_fired_at=at, acknowledged_at=acked)))
            if i % 100 == 0:
                resolved = {**alert, "status": "resolved", "as_of": at + timedelta(minutes=5)}
                cur["cx_alerts"].append(alert_row(AlertRecord(**resolved).model_dump()))
        if rec["type"] == "complaint":
            c = dict(customer_id=cid, complaint_id=rec["complaint_id"], channel=ch, category=rec["category"],
                     severity=rec["severity"], tier=tier, status="opened", opened_at=at,
                     due_at=at + timedelta(hours=8), acknowledged_at=None, resolved_at=None, breached=False,
                     satisfied=None, compensation=0.0, updated_at=at, version=1)
            cur.setdefault("cx_complaints", []).append(complaint_row(c))
            if rng.random() < 0.5:
                c2 = {**c, "status": "resolved", "resolved_at": at + timedelta(hours=rng.choice([2, 10])),
                      "satisfied": True, "updated_at": at + timedelta(hours=1), "version": 2}
                c2["breached"] = c2["resolved_at"] > c2["due_at"]
                cur["cx_complaints"].append(complaint_row(c2))
        if len(rows) >= batch:
            batches.append(cur)
            cur = {}
    if cur:
        batches.append(cur)
    return batches


def written_counts(batches: list[dict[str, list[dict]]]) -> dict[str, int]:
    """Logical rows per table the batches amount to (replacing keys collapsed)."""
    keys = {
        "cx_events": lambda r: r["event_id"],
        "cx_scores_history": lambda r: (r["customer_id"], r["version"]),
        "cx_alerts": lambda r: (r["alert_id"], r["status"]),
        "cx_complaints": lambda r: (r["customer_id"], r["complaint_id"]),
        "cx_case_events": lambda r: (r["customer_id"], r["alert_id"], r["action_id"]),
        "cx_churn_snapshots": lambda r: (r["snapshot_at"], r["customer_id"]),
        "cx_churn_labels": lambda r: (r["snapshot_at"], r["customer_id"], r["stage"]),
    }
    out = {t: len({k(r) for b in batches for r in b.get(t, [])}) for t, k in keys.items()}
    out["cx_scores_latest"] = len({r["customer_id"] for b in batches for r in b["cx_scores_history"]})
    return out


def snapshot(client) -> dict[str, Any]:
    """Every base table's full contents (FINAL, sorted) plus physical counts, and the
    merged aggregates -- to compare two runs exactly."""
    snap: dict[str, Any] = {}
    for t in BASE_TABLES:
        snap[t] = client.query(f"SELECT * FROM {t} FINAL ORDER BY ALL").result_rows
        if t != "cx_scores_latest":  # many versions per key, collapsed by merges at their own pace
            snap[f"{t}/physical"] = client.command(f"SELECT count() FROM {t}")
    snap["cx_agg_hourly"] = [{k: v for k, v in r.items() if k != "cxi_quantiles"} for r in queries.hourly(client)]
    for t, key in (("cx_quality_channel", "day, channel, stage"), ("cx_quality_staff", "day, staff_id, channel")):
        snap[t] = client.query(
            f"SELECT {key}, sum(touchpoints), sum(wait_n), sum(wait_sum), sum(resolved_yes), "
            f"sum(empathy_sum), sum(csat_satisfied) FROM {t} GROUP BY {key} ORDER BY {key}").result_rows
    return snap


def same(a: Any, b: Any) -> bool:
    """Equal, except that floats may differ in the last bits (sums merged in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-9) or (a != a and b != b)   # NaN: a quantile of nothing
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# --- migrations ----------------------------------------------------------------------------

def test_migrations_apply_in_order_and_are_idempotent(sink):
    versions = [p.stem for p in migration_files()]
    assert versions == sorted(versions) and versions[0].startswith("001_")
    assert apply_migrations(sink.client) == []  # open() applied them all already
    assert apply_migrations(sink.client) == []
    recorded = sink.client.query("SELECT version FROM schema_migrations FINAL ORDER BY version").result_rows
    assert [r[0] for r in recorded] == versions
    tables = {r[0] for r in sink.client.query("SHOW TABLES").result_rows}
    assert set(queries.TABLES) <= tables
    # Re-running every statement of every migration is harmless (IF NOT EXISTS).
    sink.client.command("TRUNCATE TABLE schema_migrations")
    assert apply_migrations(sink.client) == versions


def test_the_score_model_columns_migrate_a_store_that_holds_scores(tmp_path, monkeypatch):
    """Migration 011 adds the learned models' columns to a store written by the build before
    it: the rows already there read as the hand-set model without an early warning, and the
    view that feeds cx_scores_latest carries the new columns from then on."""
    import shutil

    from pipeline.adapters.clickhouse import sink as sink_module

    before = tmp_path / "before"
    before.mkdir()
    for path in migration_files():
        if path.stem < "011_":
            shutil.copy(path, before / path.name)
    monkeypatch.setattr(sink_module, "apply_migrations", lambda client: apply_migrations(client, before))
    s = open_sink(tmp_path)
    try:
        t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
        score = ScoreRecord(customer_id="c1", as_of=t0, version=1, cxi=70.0, tangibles=None, reliability=None,
                            responsiveness=None, assurance=None, empathy=None, csat=None, nps=None,
                            nps_class=None, tier="standard", stage=None, revenue_365d=10.0, open_complaints=0,
                            sla_breaches=0, churn_risk=0.2, churn_drivers=[], revenue_at_risk=2.0, events=1,
                            churn_model="lr-1", early_warning=0.4,
                            early_warning_drivers=[{"factor": "detractor", "contribution": 0.3}])
        old = {k: v for k, v in score_row(score.model_dump()).items()
               if k not in ("churn_model", "early_warning", "early_warning_factors", "early_warning_contributions")}
        s.write({"cx_scores_history": [old]})
        assert apply_migrations(s.client)[:1] == ["011_score_models"]   # then the later ones
        read = "SELECT churn_model, early_warning, early_warning_factors FROM {} FINAL WHERE customer_id = 'c1'"
        for table in ("cx_scores_history", "cx_scores_latest"):
            assert s.client.query(read.format(table)).result_rows == [("", None, [])], table
        new = score_row(score.model_copy(update={"version": 2}).model_dump())
        s.write({"cx_scores_history": [new]})
        assert s.client.query(read.format("cx_scores_latest")).result_rows == [("lr-1", 0.4, ["detractor"])]
    finally:
        s.close()


def test_no_personal_data_columns(sink):
    cols = {r[0] for r in sink.client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table LIKE 'cx_%'").result_rows}
    assert not cols & {"name", "email", "phone", "first_name", "last_name", "address"}


# --- rows -----------------------------------------------------------------------------------

def test_rows_round_trip(sink):
    t0 = datetime.now(timezone.utc).replace(microsecond=123000) - timedelta(days=1)
    tp = EVENT_ADAPTER.validate_json(
        '{"type":"touchpoint","event_id":"e1","customer_id":"c1","occurred_at":"%s","channel":"chat",'
        '"schema_version":1,"stage":"usage","kind":"support","staff_id":"s9","wait_seconds":12.5,'
        '"handle_seconds":300,"resolved":true,"handoffs":2,"ratings":{"empathy":2,"reliability":5},'
        '"csat":4,"nps":9,"sentiment":-0.5}' % t0.isoformat())
    order = EVENT_ADAPTER.validate_json(
        '{"type":"order","event_id":"e2","customer_id":"c1","occurred_at":"%s","channel":"web",'
        '"schema_version":1,"order_id":"o1","status":"delivered","amount":"19.99","currency":"EUR",'
        '"promised_at":"2026-01-01T10:00:00+02:00","fulfilled_at":"2026-01-01T09:30:00Z"}' % t0.isoformat())
    complaint = EVENT_ADAPTER.validate_json(
        '{"type":"complaint","event_id":"e3","customer_id":"c1","occurred_at":"%s","channel":"store",'
        '"schema_version":1,"complaint_id":"k1","status":"resolved","category":"empathy","severity":"high",'
        '"compensation":5,"satisfied":false}' % t0.isoformat())
    events = [event_row(e, "gold") for e in (tp, order, complaint)]
    assert events[1]["lateness_seconds"] == 5400.0  # fulfilled 09:30Z, promised 08:00Z
    assert events[1]["amount"] == pytest.approx(19.99) and events[1]["stage"] == "purchase"
    assert events[0]["rating_empathy"] == 2 and events[0]["rating_tangibles"] is None
    assert all(tuple(r) == EVENT_COLUMNS for r in events)

    score = ScoreRecord(
        customer_id="c1", as_of=t0, version=3, cxi=71.5, tangibles=None, reliability=80.0,
        responsiveness=60.0, assurance=None, empathy=40.0, csat=75.0, nps=50.0, nps_class="promoter",
        tier="gold", stage="usage", revenue_365d=2500.0, open_complaints=1, sla_breaches=0,
        churn_risk=0.42, churn_drivers=[{"factor": "detractor", "contribution": 0.3},
                                        {"factor": "inactivity", "contribution": 0.1}],
        revenue_at_risk=1050.0, events=12, churn_model="lr-2026-11-30T0000", early_warning=0.31,
        early_warning_drivers=[{"factor": "failed_recovery", "contribution": 0.2}])
    srow = score_row(score.model_dump())
    assert srow["driver_factors"] == ["detractor", "inactivity"] and srow["driver_contributions"] == [0.3, 0.1]
    assert srow["churn_model"] == "lr-2026-11-30T0000" and srow["early_warning"] == 0.31
    assert srow["early_warning_factors"] == ["failed_recovery"] and srow["early_warning_contributions"] == [0.2]
    # a score of the hand-set model without an early warning: '' / NULL / []
    hand_set = score_row(score.model_copy(update={"churn_model": None, "early_warning": None,
                                                  "early_warning_drivers": []}).model_dump())
    assert (hand_set["churn_model"], hand_set["early_warning"], hand_set["early_warning_factors"]) == ("", None, [])
    assert tuple(srow) == SCORE_COLUMNS
    alert = AlertRecord(alert_id="a1", type="churn_risk", status="firing", severity="critical",
                        customer_id="c1", tier="gold", as_of=t0, churn_risk=0.9, revenue_at_risk=1050.0,
                        reasons=["detractor"], recommended_action="call", complaint_id=None)
    arow = alert_row(alert.model_dump())
    assert tuple(arow) == ALERT_COLUMNS and arow["type"] == "churn_risk" and arow["complaint_id"] == ""
    crow = complaint_row(dict(
        customer_id="c1", complaint_id="k1", channel="store", category="empathy", severity="high",
        tier="gold", status="resolved", opened_at=t0, due_at=t0 + timedelta(hours=4),
        acknowledged_at=t0 + timedelta(minutes=5), resolved_at=t0 + timedelta(hours=1), breached=False,
        satisfied=False, compensation=5.0, updated_at=t0 + timedelta(hours=1), version=2))
    assert tuple(crow) == COMPLAINT_COLUMNS

    batch = {"cx_events": events, "cx_scores_history": [srow], "cx_alerts": [arow], "cx_complaints": [crow]}
    assert sink.write(batch) == 7   # the alert is written to cx_alert_facts too (migration 006)
    for table, rows in batch.items():
        got = list(sink.client.query(f"SELECT * FROM {table} FINAL ORDER BY ALL").named_results())
        want = sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))
        got = sorted(got, key=lambda r: tuple(str(v) for v in r.values()))
        assert got == want, table
    latest = next(sink.client.query("SELECT * FROM cx_scores_latest FINAL").named_results())
    assert latest == srow
    assert sink.client.query("SELECT occurred_at FROM cx_events LIMIT 1").result_rows[0][0].tzinfo is not None


# --- throughput, counts and aggregates ---------------------------------------------------------

def recompute_hourly(client) -> dict[tuple, dict[str, Any]]:
    """cx_agg_hourly recomputed from the base tables (FINAL), by (hour, channel, stage, tier)."""
    out: dict[tuple, dict[str, Any]] = defaultdict(dict)
    sqls = [
        """SELECT toStartOfHour(occurred_at) AS hour, channel, stage, tier, count() AS events,
                  countIf(event_type='touchpoint') AS touchpoints, countIf(event_type='order') AS orders,
                  countIf(lateness_seconds > 0) AS late_fulfilments,
                  countIf(event_type='complaint' AND status='opened') AS complaints,
                  count(csat) AS csat_answers, countIf(csat >= 4) AS csat_satisfied,
                  count(nps) AS nps_answers, countIf(nps >= 9) AS nps_promoters, countIf(nps <= 6) AS nps_detractors
           FROM cx_events FINAL GROUP BY ALL""",
        """SELECT toStartOfHour(as_of) AS hour, '' AS channel, stage, tier, count() AS scores,
                  avg(cxi) AS cxi_avg
           FROM cx_scores_history FINAL WHERE cxi IS NOT NULL GROUP BY ALL""",
        """SELECT toStartOfHour(coalesce(due_at, opened_at)) AS hour, channel, '' AS stage, tier,
                  count() AS sla_breaches
           FROM cx_complaints FINAL WHERE breached GROUP BY ALL""",
        """SELECT toStartOfHour(as_of) AS hour, '' AS channel, '' AS stage, tier,
                  uniqExact(alert_id) AS churn_alerts
           FROM cx_alerts FINAL WHERE type = 'churn_risk' AND status = 'firing' GROUP BY ALL""",
    ]
    for sql in sqls:
        for r in client.query(sql).named_results():
            key = (r.pop("hour").replace(tzinfo=timezone.utc), r.pop("channel"), r.pop("stage"), r.pop("tier"))
            out[key].update(r)
    return out


def assert_aggregates_match(client) -> None:
    want = recompute_hourly(client)
    got = {(r["hour"], r["channel"], r["stage"], r["tier"]): r for r in queries.hourly(client)}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for measure, value in w.items():
            assert g[measure] == pytest.approx(value), (key, measure)
    # CXI average and quantiles overall against the score history.
    exact = client.query("SELECT avg(cxi), quantilesExact(0.1, 0.5, 0.9)(cxi) FROM cx_scores_history FINAL "
                         "WHERE cxi IS NOT NULL").result_rows[0]
    merged = client.query("SELECT sum(cxi_sum) / sum(scores), quantilesMerge(0.1, 0.5, 0.9)(cxi_quantiles) "
                          "FROM cx_agg_hourly").result_rows[0]
    assert merged[0] == pytest.approx(exact[0])
    assert merged[1] == pytest.approx(exact[1], abs=3.0)  # sampling quantiles, 0..100 scale
    # Quality per channel and per staff member against cx_events.
    for table, key, cond in (("cx_quality_channel", "toDate(occurred_at), channel, stage", ""),
                             ("cx_quality_staff", "toDate(occurred_at), staff_id, channel", "AND staff_id != ''")):
        agg_key = key.replace("toDate(occurred_at)", "day")
        want_q = client.query(
            f"SELECT {key}, count(), count(wait_seconds), round(sum(ifNull(wait_seconds, 0)), 3), countIf(resolved), "
            f"sum(ifNull(rating_empathy, 0)), count(rating_empathy), countIf(csat >= 4), count(sentiment) FROM cx_events FINAL "
            f"WHERE event_type = 'touchpoint' {cond} GROUP BY ALL ORDER BY ALL").result_rows
        got_q = client.query(
            f"SELECT {agg_key}, sum(touchpoints), sum(wait_n), round(sum(wait_sum), 3), sum(resolved_yes), "
            f"sum(empathy_sum), sum(empathy_n), sum(csat_satisfied), sum(sentiment_n) FROM {table} "
            f"GROUP BY ALL ORDER BY ALL").result_rows
        assert got_q == want_q, table


@pytest.mark.integration
def test_100k_events_through_write(tmp_path, capsys):
    batches = synthetic(100_000, batch=5000)
    metrics = Recorder()
    sink = open_sink(tmp_path, metrics=metrics)
    try:
        total_rows = sum(len(rows) for b in batches for rows in b.values())
        t0 = time.perf_counter()
        for b in batches:
            sink.write(b)
        elapsed = time.perf_counter() - t0
        with capsys.disabled():
            print(f"\n[clickhouse sink] {total_rows} rows ({100_000} events + scores/alerts/complaints) in "
                  f"{len(batches)} write() calls of 5000 events (~{total_rows // len(batches)} rows) each: "
                  f"{elapsed:.2f} s = {total_rows / elapsed:,.0f} rows/s "
                  f"({100_000 / elapsed:,.0f} events/s with their scores)")
        counts = queries.table_counts(sink.client)
        want = written_counts(batches)
        for t in BASE_TABLES:
            assert counts[t] == want[t], t
            assert sink.client.command(f"SELECT count() FROM {t}") >= want[t]
        assert counts["cx_events"] == 100_000
        assert metrics.rows["cx_events"] == 100_000 and metrics.flushes == len(batches)
        assert_aggregates_match(sink.client)
        k = queries.kpis(sink.client, retention_days=7)  # the data spans 19 days
        assert k["events"] == 100_000 and k["scored_customers"] == want["cx_scores_latest"]
        assert 0 <= k["csat"] <= 100 and -100 <= k["nps"] <= 100 and 0 <= k["retention"] <= 1
    finally:
        sink.close()


def test_retried_identical_batch_does_not_double_count(sink):
    batches = synthetic(3000, n_customers=300, seed=11, batch=1000)
    for b in batches:
        sink.write(b)
    before = snapshot(sink.client)
    for b in (batches[1], batches[0], batches[1]):
        sink.write(b)  # a retry of an already stored insert, e.g. after a lost response
    assert same(snapshot(sink.client), before)
    # Distinct inserts whose aggregates happen to be identical are NOT deduplicated.
    one = batches[0]["cx_events"][0]
    hour = one["occurred_at"].replace(minute=0, second=0, microsecond=0)
    key = {"hour": hour, "channel": one["channel"], "stage": one["stage"], "tier": one["tier"]}

    def events_in_group() -> int:
        return sum(r["events"] for r in queries.hourly(sink.client) if all(r[k] == v for k, v in key.items()))

    n = events_in_group()
    for suffix in ("x", "y"):
        sink.write({"cx_events": [{**one, "event_id": one["event_id"] + suffix}]})
    assert events_in_group() == n + 2


def test_redelivery_in_another_batch_composition_does_not_double_count_the_aggregates(tmp_path):
    """After a worker crash its unfinished micro-batch comes again composed differently (the
    insert dedup token does not match): every aggregate, quantiles included, equals a run
    that wrote each row once (issue #17, item 5)."""
    batches = synthetic(3000, n_customers=300, seed=12, batch=1000)
    once = open_sink(tmp_path / "once")
    try:
        for b in batches:
            once.write(b)
        want = snapshot(once.client)
        want_q = queries.hourly(once.client)
    finally:
        once.close()
    again = open_sink(tmp_path / "again")
    try:
        for b in batches:
            again.write(b)
            # the crash: the second half of this batch is redelivered with the first half of
            # the next one, in one insert whose rows (and so token) differ from both
            half = {t: rows[len(rows) // 2:] for t, rows in b.items()}
            again.write(half)
        for a, b in zip(batches, batches[1:]):
            again.write({t: a[t][len(a[t]) // 3:] + b[t][:len(b[t]) // 3] for t in a})
        def logical(snap: dict) -> dict:   # physical row counts do differ: the repeats are stored
            return {k: v for k, v in snap.items() if not k.endswith("/physical")}

        assert same(logical(snapshot(again.client)), logical(want))
        got_q = queries.hourly(again.client)
        diff = [(a, b) for a, b in zip(got_q, want_q) if not same(a, b)]
        assert len(got_q) == len(want_q) and not diff, diff[:2]   # cxi quantiles too
        assert_aggregates_match(again.client)
    finally:
        again.close()


def test_dedup_token_is_deterministic():
    rows = [[1, "a", datetime(2026, 1, 1, tzinfo=timezone.utc), None, [0.5]]]
    assert dedup_token("t", ["a", "b", "c", "d", "e"], rows) == dedup_token("t", list("abcde"), [list(rows[0])])
    assert dedup_token("t", list("abcde"), rows) != dedup_token("u", list("abcde"), rows)
    assert is_transient(OperationalError("x")) and is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("bad data"))


# --- faults ---------------------------------------------------------------------------------------

class FlakyClient:
    """Wraps a real client; while armed, inserts fail. mode 'before': the insert never
    reaches ClickHouse; mode 'after': it is stored but the response is 'lost'."""

    def __init__(self, real) -> None:
        self._real = real
        self.fail_until = 0.0
        self.mode = "before"
        self.injected = 0

    def arm(self, seconds: float, mode: str) -> None:
        self.fail_until, self.mode = time.monotonic() + seconds, mode

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self.fail_until:
            self.injected += 1
            if self.mode == "after":
                self._real.insert(*args, **kwargs)
                raise OperationalError("injected: connection reset after the insert was sent")
            raise ConnectionRefusedError("injected: connection refused")
        return self._real.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def run(tmp_path, batches, faults: dict[int, tuple[float, str]] | None = None):
    """Write all batches; before batch i in `faults`, arm the fault (seconds, mode)."""
    flaky: list[FlakyClient] = []

    def factory(dsn: str) -> FlakyClient:
        from pipeline.adapters.clickhouse.sink import default_client_factory
        flaky.append(FlakyClient(default_client_factory(dsn)))
        return flaky[-1]

    metrics = Recorder()
    sink = ClickHouseSink(f"chdb://{tmp_path}", retry_initial=0.02, retry_max=0.2,
                          client_factory=factory, metrics=metrics).open()
    try:
        for i, b in enumerate(batches):
            if faults and i in faults:
                flaky[0].arm(*faults[i])
            sink.write(b)
        return snapshot(sink.client), metrics, flaky[0].injected
    finally:
        sink.close()


@pytest.mark.integration
def test_clickhouse_outage_mid_run_recovers_with_identical_contents(tmp_path):
    batches = synthetic(20_000, n_customers=1000, seed=3, batch=2000)
    clean, _, _ = run(tmp_path / "clean", batches)
    faulty, metrics, injected = run(tmp_path / "faulty", batches, faults={3: (0.6, "after"), 6: (0.6, "before")})
    assert injected >= 2 and metrics.retries == injected and metrics.failures == injected
    for table in BASE_TABLES:
        if table != "cx_scores_latest":  # no duplicates stored (see snapshot)
            assert faulty[f"{table}/physical"] == clean[f"{table}/physical"], table
        assert faulty[table] == clean[table], table  # no gaps, same contents
    assert same(faulty, clean)
    assert len(clean["cx_events"]) == 20_000


def test_close_interrupts_a_write_that_waits_for_clickhouse(tmp_path):
    holder: list[FlakyClient] = []

    def factory(dsn: str) -> FlakyClient:
        from pipeline.adapters.clickhouse.sink import default_client_factory
        holder.append(FlakyClient(default_client_factory(dsn)))
        return holder[-1]

    sink = ClickHouseSink(f"chdb://{tmp_path}", retry_initial=0.01, retry_max=0.05, client_factory=factory).open()
    holder[0].arm(60, "before")
    threading.Timer(0.3, sink.close).start()
    with pytest.raises(SinkClosed):
        sink.write(synthetic(10, n_customers=5)[0])
    sink.close()


# --- buffered mode --------------------------------------------------------------------------------

def test_buffered_mode_flushes_by_size_time_and_backpressure(tmp_path):
    metrics = Recorder()
    sink = open_sink(tmp_path, batch_rows=100, flush_seconds=0.2, max_queue_rows=120, metrics=metrics)
    try:
        rows = synthetic(300, n_customers=50, seed=5, batch=1000)[0]["cx_events"]
        sink.add({"cx_events": rows[:60]})
        assert sink.buffered_rows == 60 and sink.flush_if_due() == 0 and metrics.flushes == 0
        sink.add({"cx_events": rows[60:130]})  # 60 + 70 > max_queue_rows: the 60 are flushed first
        assert metrics.flushes == 1 and sink.buffered_rows == 70
        sink.add({"cx_events": rows[130:170]})  # 110 >= batch_rows: flushed
        assert metrics.flushes == 2 and sink.buffered_rows == 0
        sink.add({"cx_events": rows[170:180]})
        assert sink.flush_if_due() == 0
        time.sleep(0.25)
        assert sink.flush_if_due() == 10 and metrics.flushes == 3  # flush_seconds passed
        assert sink.flush() == 0
        assert max(metrics.queue) <= 120 and metrics.queue[-1] == 0
        assert queries.table_counts(sink.client)["cx_events"] == 180
    finally:
        sink.close()


def test_churn_alert_count_survives_an_insert_cut_between_the_alerts_and_their_facts(sink):
    """SIGKILL between a batch's cx_alerts insert and its cx_alert_facts insert: the batch is
    delivered again, with the same alert rows (same dedup token: ClickHouse drops the cx_alerts
    repeat). The facts insert has a token of its own, so the redelivery makes it; the churn-alert
    count of cx_agg_hourly equals the distinct firing churn alerts of cx_alerts (migration 006).
    With the former materialized view the dropped repeat took the view's push with it."""
    batch = synthetic(2000, n_customers=200, seed=4, batch=2000)[0]
    alerts = batch["cx_alerts"]
    assert len(alerts) > 10
    sink._store("cx_alerts", list(alerts))            # stored, then the worker is killed
    assert sink.client.command("SELECT count() FROM cx_alert_facts") == 0
    sink.write(batch)                                  # the redelivered batch
    sink.write(batch)                                  # and once more (at-least-once)
    want = sink.client.command("SELECT uniqExact(alert_id) FROM cx_alerts FINAL "
                               "WHERE type = 'churn_risk' AND status = 'firing'")
    assert sink.client.command("SELECT count() FROM cx_alerts") == len(alerts)   # the repeats were dropped
    assert sink.client.command("SELECT uniqExactMerge(churn_alerts) FROM cx_agg_hourly") == want > 0
    assert_aggregates_match(sink.client)
    assert "customer_id" not in {r[0] for r in sink.client.query(
        "SELECT name FROM system.columns WHERE table = 'cx_alert_facts' AND database = currentDatabase()").result_rows}


def test_churn_alert_count_keeps_an_alert_the_redelivery_computed_anew(sink):
    """SIGKILL between a batch's cx_alerts insert and its cx_alert_facts insert, and the
    redelivery cuts its micro-batches elsewhere: it fires the customers' churn alerts at other
    events, under other ids, and never writes facts for the first ones (the kill -9 drill: 7
    counted against 9 in cx_alerts). The count of cx_agg_hourly still equals the distinct firing
    churn alerts of cx_alerts (migration 012: the ids of both tables); with cx_alert_facts alone it
    missed the first ones."""
    batch = synthetic(2000, n_customers=200, seed=4, batch=2000)[0]
    first = [a for a in batch["cx_alerts"] if a["type"] == "churn_risk" and a["status"] == "firing"][:3]
    assert len(first) == 3
    sink._store("cx_alerts", list(first))             # stored, then the worker is killed
    again = dict(batch)
    again["cx_alerts"] = [dict(a, alert_id=f"again-{a['alert_id']}", as_of=a["as_of"] + timedelta(hours=5))
                          if a in first else a for a in batch["cx_alerts"]]
    sink.write(again)                                  # the redelivery's own batch
    want = sink.client.command("SELECT uniqExact(alert_id) FROM cx_alerts FINAL "
                               "WHERE type = 'churn_risk' AND status = 'firing'")
    facts_only = sink.client.command("SELECT uniqExact(alert_id) FROM cx_alert_facts FINAL "
                                     "WHERE type = 'churn_risk' AND status = 'firing'")
    assert facts_only == want - 3                     # what the count was before migration 012
    assert sink.client.command("SELECT uniqExactMerge(churn_alerts) FROM cx_agg_hourly") == want
    assert_aggregates_match(sink.client)


def test_open_numbered_alerts_are_the_episodes_never_resolved(sink):
    """`queries.open_numbered_alerts` (what a restarted worker compares with its states): each
    churn or failed-recovery episode with a firing row and no resolved one, with the severity
    and tier of its latest firing row (and a failed recovery's complaint), whatever other
    alerts and resolved episodes the table holds."""
    batch = synthetic(2000, n_customers=200, seed=4, batch=2000)[0]
    churn = [a for a in batch["cx_alerts"] if a["type"] == "churn_risk"]
    breach = dict(churn[0], alert_id="sla-breach-1", type="sla_breach", status="firing", complaint_id="k7")
    recovery = [dict(churn[0], alert_id="rec-1", type="failed_recovery", status="firing", complaint_id="k7"),
                dict(churn[1], alert_id="rec-2", type="failed_recovery", status="firing", complaint_id="k8"),
                dict(churn[1], alert_id="rec-2", type="failed_recovery", status="resolved", complaint_id="k8")]
    sink.write(dict(batch, cx_alerts=churn + [breach] + recovery))
    resolved = {a["alert_id"] for a in churn + recovery if a["status"] == "resolved"}
    want = {(a["customer_id"], a["alert_id"], a["type"], a["complaint_id"] or None)
            for a in churn + recovery if a["alert_id"] not in resolved}
    assert resolved and want and ("failed_recovery" in {w[2] for w in want})
    got = queries.open_numbered_alerts(sink.client)
    assert {(a.customer_id, a.alert_id, a.type, a.complaint_id) for a in got} == want
    latest = {}
    for a in sorted((a for a in churn + recovery if a["status"] == "firing"), key=lambda a: a["as_of"]):
        latest[a["alert_id"]] = a
    for a in got:
        row = latest[a.alert_id]
        assert (a.severity, a.tier, a.as_of) == (row["severity"], row["tier"], row["as_of"].timestamp())


# --- erasure ------------------------------------------------------------------------------------------

def test_erase_removes_the_customer_everywhere(sink):
    batches = synthetic(4000, n_customers=40, seed=9, batch=4000)
    for b in batches:
        sink.write(b)
    rows = [r for b in batches for rs in b.values() for r in rs]
    victim = max({r["customer_id"] for r in rows if "complaint_id" in r and r.get("complaint_id")
                  and any(a.get("alert_id") and a["customer_id"] == r["customer_id"] for a in rows)})
    # a learning worker's churn history (migration 007): the victim's snapshot rows and labels, and another's
    day = datetime(2026, 5, 1, tzinfo=timezone.utc)
    sink.write({"cx_churn_snapshots": [{"snapshot_at": day, "customer_id": c, "features": [0.5, float("nan")],
                                        "reference": 0.2, "feature_set": "f"} for c in (victim, "someone-else")],
                "cx_churn_labels": [{"snapshot_at": day, "customer_id": c, "stage": stage, "within": True,
                                     "churned": None if stage == 1 else False}
                                    for c in (victim, "someone-else") for stage in (1, 2)]})
    before = {t: sink.client.command(f"SELECT count() FROM {t} WHERE customer_id = '{victim}'") for t in BASE_TABLES}
    # (cx_case_events holds no rows here; its erasure is tested in tests/integration/test_case_analytics.py)
    assert all(n for t, n in before.items() if t != "cx_case_events"), before
    others = {t: sink.client.command(f"SELECT count() FROM {t} WHERE customer_id != '{victim}'") for t in BASE_TABLES}
    agg_before = snapshot(sink.client)["cx_agg_hourly"]

    assert sink.erase(victim) == sum(before.values())
    for t in BASE_TABLES:
        assert sink.client.command(f"SELECT count() FROM {t} WHERE customer_id = '{victim}'") == 0, t
        assert sink.client.command(f"SELECT count() FROM {t} WHERE customer_id != '{victim}'") == others[t], t
    # Everywhere: every table with a customer_id column except the erasure log itself.
    holders = {r[0] for r in sink.client.query(
        "SELECT table FROM system.columns WHERE database = currentDatabase() AND name = 'customer_id' "
        "AND table IN (SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine LIKE '%MergeTree')").result_rows}
    assert holders - {"cx_erasures"} == set(BASE_TABLES)
    log = list(sink.client.query("SELECT * FROM cx_erasures").named_results())
    assert [(r["customer_id"], r["rows_deleted"]) for r in log] == [(victim, sum(before.values()))]
    assert same(snapshot(sink.client)["cx_agg_hourly"], agg_before)  # anonymous aggregates stay
    assert sink.erase(victim) == 0


# --- queries ------------------------------------------------------------------------------------------

def test_queries_on_a_known_dataset(sink):
    t = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)

    def tp(i: int, cid: str, at: datetime, **kw: Any) -> dict:
        rec = {"type": "touchpoint", "event_id": f"q{i}", "customer_id": cid, "occurred_at": at.isoformat(),
               "channel": kw.pop("channel", "app"), "schema_version": 1, "stage": kw.pop("stage", "usage"),
               "kind": "survey", **kw}
        return event_row(EVENT_ADAPTER.validate_python(rec), "gold")

    events = [
        tp(1, "a", t, csat=5, nps=10, ratings={"empathy": 1}),
        tp(2, "a", t, csat=4, nps=9, ratings={"empathy": 2}),
        tp(3, "b", t, csat=2, nps=7, stage="purchase", ratings={"reliability": 5}),
        tp(4, "c", t, csat=1, nps=3),
        # retention, 30-day periods ending at t: a and d active before; a, b and c in the last one
        tp(5, "a", t - timedelta(days=40)),
        tp(6, "d", t - timedelta(days=45)),
    ]
    sink.write({"cx_events": events})
    sink.write({"cx_events": events[:2]})  # a re-delivery in another batch: FINAL collapses it
    assert queries.csat(sink.client) == 50.0
    assert queries.nps(sink.client) == 25.0
    r = queries.retention(sink.client, period_days=30)
    assert (r["previous_active"], r["retained"], r["rate"]) == (2, 1, 0.5)
    breaks = queries.where_experience_breaks(sink.client)
    assert breaks[0] == {"stage": "usage", "dimension": "empathy", "answers": 2, "avg_rating": 1.5, "score": 12.5}
    assert breaks[-1]["dimension"] == "reliability" and breaks[-1]["score"] == 100.0

    def complaint(cid: str, k: str, ch: str, breached: bool, resolved: bool, version: int) -> dict:
        return complaint_row(dict(
            customer_id=cid, complaint_id=k, channel=ch, category="other", severity="low", tier="gold",
            status="resolved" if resolved else "opened", opened_at=t, due_at=t + timedelta(hours=8),
            acknowledged_at=None, resolved_at=t + timedelta(hours=1) if resolved else None,
            breached=breached, satisfied=None, compensation=0.0, updated_at=t, version=version))

    sink.write({"cx_complaints": [complaint("a", "k1", "app", False, False, 1),
                                  complaint("a", "k1", "app", False, True, 2),
                                  complaint("b", "k2", "app", True, False, 1),
                                  complaint("c", "k3", "store", False, False, 1)]})
    sla = {r["channel"]: r for r in queries.sla_compliance_by_channel(sink.client)}
    assert sla["app"] == {"channel": "app", "complaints": 2, "decided": 2, "breached": 1, "open": 0,
                          "compliance": 0.5}
    assert sla["store"]["open"] == 1 and sla["store"]["compliance"] is None

    def alert(aid: str, tier: str, status: str, severity: str = "critical") -> dict:
        return alert_row(AlertRecord(alert_id=aid, type="churn_risk", status=status, severity=severity,
                                     customer_id="a", tier=tier, as_of=t, churn_risk=0.9, revenue_at_risk=100.0,
                                     reasons=["detractor"], recommended_action="call").model_dump())

    sink.write({"cx_alerts": [alert("x", "gold", "firing"), alert("x", "gold", "resolved"),
                              alert("y", "gold", "firing"), alert("z", "silver", "firing", "warning")]})
    by_tier = {r["tier"]: r for r in queries.churn_alerts_by_tier(sink.client)}
    assert by_tier["gold"] == {"tier": "gold", "episodes": 2, "firing": 1, "critical": 1, "revenue_at_risk": 100.0}
    assert by_tier["silver"]["firing"] == 1 and by_tier["silver"]["critical"] == 0
    k = queries.kpis(sink.client)
    assert k["events"] == 6 and k["customers"] == 4 and k["csat"] == 50.0 and k["churn_alerts_firing"] == 2
    assert k["sla_compliance"] == 0.5 and k["avg_cxi"] is None and k["scored_customers"] == 0


# --- the learning worker's churn history (migration 007) -------------------------------------

def test_the_churn_history_reads_back_from_clickhouse_what_was_written(sink):
    """A learning worker (in-memory ports) over a 250-customer, 75-day stream writes each tick
    to ClickHouse and to the in-memory history of the unit tests at once: both read back the
    same progress, ticks and rows (features bit for bit, NaN included), with the book's default
    row bound and with one that drops the oldest labelled snapshots."""
    import asyncio

    import numpy as np

    from pipeline.adapters.clickhouse.churn_history import ClickHouseChurnHistory
    from tests.unit.test_worker_learning import HORIZON_DAYS, SCOPE, History, _run_worker, _stream

    class Both:
        def __init__(self, *targets) -> None:
            self.targets = targets

        def save(self, record) -> None:
            for target in self.targets:
                target.save(record)

        def trained(self, row) -> None:
            for target in self.targets:
                target.trained(row)

    memory, clickhouse = History(), ClickHouseChurnHistory(sink)
    values, keys, topics = _stream()
    loop, learner, _, _ = asyncio.run(_run_worker(values, keys, topics, history=Both(memory, clickhouse)))
    assert learner.book.labelled and any(np.isnan(s.features).any() for s in learner.book.labelled)
    for max_rows in (500_000, 5_000):
        want, got = memory.load(HORIZON_DAYS, max_rows, SCOPE), clickhouse.load(HORIZON_DAYS, max_rows, SCOPE)
        assert want is not None and got is not None
        assert got.progress == want.progress and got.ticks == want.ticks
        assert got.progress.last_tick == learner.book.pending[-1].t and got.progress.population == loop.core.population
        assert len(got.rows) == len(want.rows) > 0
        for a, b in zip(got.rows, want.rows):
            assert (a.t, a.customer_id, a.within, a.read, a.label) == (b.t, b.customer_id, b.within, b.read, b.label)
            assert np.array_equal(np.asarray(a.features, np.float32), np.asarray(b.features, np.float32), equal_nan=True)
            assert np.float32(a.reference) == np.float32(b.reference)
    assert len(clickhouse.load(HORIZON_DAYS, 5_000, SCOPE).ticks) < len(clickhouse.load(HORIZON_DAYS, 500_000, SCOPE).ticks)
    assert clickhouse.load(HORIZON_DAYS * 2, 500_000, SCOPE) is None   # another horizon: a new book
    assert clickhouse.load(HORIZON_DAYS, 500_000, "1") is None   # another worker's partitions: not its history
    # a pooled training's reads (every scope): the partitions whose tick is stored, the book's rows
    last = learner.book.pending[-1].t
    assert clickhouse.covered(last, HORIZON_DAYS) == memory.covered(last, HORIZON_DAYS) == {0, 1}
    assert clickhouse.covered(last + 86400.0, HORIZON_DAYS) == set()
    at = learner.cards[-1].trained_at
    want, got = memory.pooled(HORIZON_DAYS, 5_000, at, 60), clickhouse.pooled(HORIZON_DAYS, 5_000, at, 60)
    assert got.ticks == want.ticks and len(got.rows) == len(want.rows) > 0
    assert [(r.t, r.customer_id, r.label) for r in got.rows] == [(r.t, r.customer_id, r.label) for r in want.rows]
    # every retraining ended: none to train again; without the last one's row (the worker died
    # while it ran), both read back the rows of the book as it stood at that tick
    assert len([r for r in memory.trainings if r[3]]) == len(learner.cards) > 0
    assert clickhouse.load(HORIZON_DAYS, 500_000, SCOPE).lost is None
    last = memory.trainings.pop()
    sink.client.command("ALTER TABLE cx_churn_trainings DELETE WHERE toUnixTimestamp64Milli(trained_at) = "
                        f"{int(last[0] * 1000)}", settings={"mutations_sync": 2})
    want, got = memory.load(HORIZON_DAYS, 500_000, SCOPE), clickhouse.load(HORIZON_DAYS, 500_000, SCOPE)
    assert want.lost is not None and got.lost is not None and got.progress == want.progress
    assert got.progress.last_train == last[0] and got.lost.ticks == want.lost.ticks
    assert [(r.t, r.customer_id, r.label) for r in got.lost.rows] == [(r.t, r.customer_id, r.label) for r in want.lost.rows]
    # a worker that trains on every worker's rows (or does not train) does not ask for that book
    unasked = clickhouse.load(HORIZON_DAYS, 500_000, SCOPE, lost_book=False)
    assert unasked is not None and unasked.training_lost and unasked.lost is None
