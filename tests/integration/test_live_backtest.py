"""Live backtest of churn_risk: the pure figures (hand-computed), the ClickHouse query on the
real engine (chDB) with rows written through the real sink from a replay of the real core,
and the worker's periodic export as Prometheus gauges."""
from __future__ import annotations

import math
import time
from functools import partial
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.bootstrap import build_core
from prometheus_client import CollectorRegistry

from pipeline.config import load
from pipeline.domain.backtest import BacktestRow, EarlyWarningRow, backtest_figures, early_warning_figures
from pipeline.domain.prediction_metrics import roc_auc

# recent: the event tables drop rows older than their 400-day TTL on insert
END = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def test_backtest_figures_hand_computed():
    rows = [BacktestRow("a", 0.70, "standard", False),   # churned, above warning (0.30) and critical (0.60)
            BacktestRow("b", 0.40, "standard", True),    # stayed, above warning: a false alarm
            BacktestRow("c", 0.26, "gold", False),       # churned, above gold's warning (0.24), below critical (0.50)
            BacktestRow("d", 0.10, "standard", True)]    # stayed, quiet
    f = backtest_figures(rows)
    assert f["customers"] == 4 and f["churned"] == 2 and f["churn_rate"] == 0.5
    # positives 0.70, 0.26 vs negatives 0.40, 0.10: 0.70 beats both, 0.26 beats 0.10 only → 3/4
    assert f["auc"] == pytest.approx(0.75)
    assert f["brier"] == pytest.approx((0.3 ** 2 + 0.4 ** 2 + 0.74 ** 2 + 0.1 ** 2) / 4)
    assert f["brier_base_rate"] == pytest.approx(0.25)
    assert f["alerted_warning"] == 3 and f["precision_warning"] == pytest.approx(2 / 3) and f["recall_warning"] == 1.0
    assert f["alerted_critical"] == 1 and f["precision_critical"] == 1.0 and f["recall_critical"] == 0.5


def test_backtest_figures_undefined_cases():
    f = backtest_figures([BacktestRow("a", 0.1, "standard", True)])
    assert f["auc"] is None and f["recall_warning"] is None and f["precision_warning"] is None
    assert f["brier"] == pytest.approx(0.01)
    empty = backtest_figures([])
    assert empty["customers"] == 0 and empty["auc"] is None and empty["brier"] is None
    # an unknown tier is judged against the standard thresholds
    assert backtest_figures([BacktestRow("x", 0.35, "diamond", False)])["alerted_warning"] == 1


def test_early_warning_figures_hand_computed():
    rows = [EarlyWarningRow("a", 0.8, True), EarlyWarningRow("b", 0.3, False),
            EarlyWarningRow("c", 0.6, False), EarlyWarningRow("d", 0.5, True)]
    f = early_warning_figures(rows)
    assert f["customers"] == 4 and f["left"] == 2 and f["leave_rate"] == 0.5
    assert f["mean_early_warning"] == pytest.approx(0.55)
    # leavers 0.8, 0.5 vs stayers 0.3, 0.6: 0.8 beats both, 0.5 beats 0.3 only → 3/4
    assert f["auc"] == pytest.approx(0.75)
    assert f["brier"] == pytest.approx((0.2 ** 2 + 0.3 ** 2 + 0.6 ** 2 + 0.5 ** 2) / 4)
    assert f["brier_base_rate"] == pytest.approx(0.25)
    assert early_warning_figures([])["auc"] is None
    assert early_warning_figures([EarlyWarningRow("a", 0.1, False)])["auc"] is None


def test_cli_live_on_an_empty_clickhouse(tmp_path, capsys):
    # before the module's shared engine opens: chDB holds one data path per process at a time
    from pipeline.tools.cli import main
    assert main(["evaluate", "--live", "--clickhouse", f"chdb://{tmp_path / 'ch'}"]) == 0
    assert "no events stored in ClickHouse" in capsys.readouterr().out


def test_cli_live_says_when_no_stored_score_is_a_horizon_old(monkeypatch, capsys):
    """Events are stored but none of the scores is a horizon old (a history shorter than H):
    the figures are all empty, and the command says why and what to change."""
    import contextlib

    from pipeline.adapters.clickhouse import queries, sink
    from pipeline.tools.cli import main

    class NoEngine(contextlib.nullcontext):
        client = None

    monkeypatch.setattr(sink, "ClickHouseSink", lambda dsn: NoEngine(NoEngine()))
    as_of = datetime(2026, 12, 2, tzinfo=timezone.utc)
    monkeypatch.setattr(queries, "live_backtest_rows", lambda client, horizon, at: (as_of, []))
    monkeypatch.setattr(queries, "early_warning_backtest_rows", lambda client, horizon, at: [])
    assert main(["evaluate", "--live", "--clickhouse", "chdb:///nowhere"]) == 0
    out = capsys.readouterr().out
    assert "customers            0" in out
    assert "no churn_risk stored was published at or before 2026-11-02T00:00:00+00:00" in out
    assert "--backtest-days N" in out
    assert "early_warning published 60 days before" in out and "no early_warning stored" in out


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A replay of a generated stream through the real core, every batch's rows written to
    chDB through the real sink; yields (sink, published scores, applied events)."""
    from pipeline.tools.generator import generate
    from pipeline.service.replay import replay
    from pipeline.adapters.clickhouse.rows import batch_rows
    from pipeline.adapters.clickhouse.sink import ClickHouseSink

    tmp_path = tmp_path_factory.mktemp("backtest")
    settings = load(data_dir=tmp_path)
    stream = generate(customers=100, days=40, seed=5, end=END, invalid_ratio=0.0)
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}").open()
    scores: list[dict] = []
    events: list = []

    def on_batch(out):
        scores.extend(out.scores)
        events.extend(ev for ev, _ in out.events)
        sink.write(batch_rows(out))

    replay(stream.values(), build_core(settings), clock=time.time, on_batch=on_batch)
    try:
        yield sink, scores, events
    finally:
        sink.close()


def _ts(v) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def test_live_backtest_query_on_chdb(filled):
    from pipeline.adapters.clickhouse.queries import live_backtest_rows
    from pipeline.service.live_backtest import live_backtest

    sink, scores, events = filled
    horizon = 10.0
    as_of, rows = live_backtest_rows(sink.client, horizon)
    last_event = max(e.occurred_at for e in events)
    assert abs((as_of - last_event).total_seconds()) < 0.002            # default: the latest event time
    p = as_of - timedelta(days=horizon)
    expected: dict[str, dict] = {}
    for s in scores:                                                   # latest published risk at or before p
        if _ts(s["as_of"]) <= p and s["version"] > expected.get(s["customer_id"], {"version": -1})["version"]:
            expected[s["customer_id"]] = s
    active = {e.customer_id for e in events if p < e.occurred_at <= as_of}
    assert len(rows) == len(expected) > 50
    for r in rows:
        s = expected[r.customer_id]
        assert r.churn_risk == pytest.approx(s["churn_risk"]) and r.tier == s["tier"]
        assert r.active == (r.customer_id in active)
    assert 0 < sum(not r.active for r in rows) < len(rows)
    figures = live_backtest(partial(live_backtest_rows, sink.client), horizon)
    assert figures["customers"] == len(rows)
    assert figures["auc"] == pytest.approx(roc_auc([not r.active for r in rows], [r.churn_risk for r in rows]))
    # an explicit as_of earlier in the stream: fewer predictions to judge
    early_as_of, early = live_backtest_rows(sink.client, horizon, as_of - timedelta(days=15))
    assert early_as_of == as_of - timedelta(days=15) and 0 < len(early) < len(rows)


def test_worker_export_sets_the_gauges(filled):
    from pipeline.adapters.clickhouse.queries import live_backtest_rows
    from pipeline.adapters.observability.metrics import Metrics
    from pipeline.service.live_backtest import refresh_live_backtest

    sink, _, _ = filled
    registry = CollectorRegistry()
    metrics = Metrics(registry=registry, topics=())
    figures = refresh_live_backtest(partial(live_backtest_rows, sink.client), metrics.churn_backtest, 10.0, now=1234.0,
                                    fetch_early_warning=lambda h, at: [EarlyWarningRow("a", 0.7, True),
                                                                        EarlyWarningRow("b", 0.2, False)])
    assert figures is not None
    get = registry.get_sample_value
    assert get("cxpulse_early_warning_backtest_auc") == 1.0
    assert get("cxpulse_early_warning_backtest_customers") == 2
    assert get("cxpulse_early_warning_backtest_leave_rate") == 0.5
    assert get("cxpulse_early_warning_backtest_mean_early_warning") == pytest.approx(0.45)
    assert get("cxpulse_churn_backtest_auc") == pytest.approx(figures["auc"])
    assert get("cxpulse_churn_backtest_customers") == figures["customers"]
    assert get("cxpulse_churn_backtest_horizon_days") == 10.0
    assert get("cxpulse_churn_backtest_timestamp_seconds") == 1234.0
    assert get("cxpulse_churn_backtest_precision", {"level": "warning"}) == pytest.approx(
        figures["precision_warning"] if figures["precision_warning"] is not None else math.nan, nan_ok=True)
    assert get("cxpulse_churn_backtest_recall", {"level": "critical"}) is not None


def test_worker_export_survives_a_failing_clickhouse():
    from pipeline.adapters.clickhouse.queries import live_backtest_rows
    from pipeline.adapters.observability.metrics import Metrics
    from pipeline.service.live_backtest import refresh_live_backtest

    class Down:
        def query(self, *a, **k):
            raise ConnectionError("clickhouse is down")

    registry = CollectorRegistry()
    metrics = Metrics(registry=registry, topics=())
    assert refresh_live_backtest(partial(live_backtest_rows, Down()), metrics.churn_backtest, 30.0, now=1.0) is None
    assert registry.get_sample_value("cxpulse_churn_backtest_timestamp_seconds") == 0.0


def test_early_warning_backtest_query_on_chdb(filled):
    """The early warning as published 2H before the backtest's instant, among the customers
    active in the H days after it, against no activity in the last H days. Its own customers,
    with the real rows: the replayed ones carry no early warning (the hand-set model serves)
    and are not judged. Last in the module: it adds events after the replay's."""
    from pipeline.adapters.clickhouse import tables
    from pipeline.adapters.clickhouse.queries import early_warning_backtest_rows, live_backtest_rows
    from pipeline.adapters.clickhouse.rows import event_row, score_row
    from pipeline.service.live_backtest import live_backtest

    sink, scores, events = filled
    template_score, template_event = scores[0], events[0]
    t = END + timedelta(days=90)
    horizon = 10.0
    day = lambda d: END + timedelta(days=d)   # noqa: E731 - p2 = day 70, p1 = day 80, t = day 90
    published = {"ew-a": [(65, 0.8)], "ew-b": [(60, 0.2), (69, 0.3)], "ew-c": [(65, 0.5)], "ew-d": [(75, 0.9)],
                 "ew-e": [(60, 0.6), (69, None)], "ew-f": [(65, 0.4)]}
    active = {"ew-a": [75], "ew-b": [72, 85], "ew-c": [50], "ew-d": [72, 88], "ew-e": [71, 88], "ew-f": [85]}
    score_rows, event_rows = [], []
    for cid, published_at in published.items():
        for version, (d, warning) in enumerate(published_at, start=1):
            score_rows.append(score_row({**template_score, "customer_id": cid, "version": version,
                                         "as_of": day(d).isoformat(), "early_warning": warning}))
    for cid, days in active.items():
        for d in days:
            ev = template_event.model_copy(update={"customer_id": cid, "event_id": f"{cid}-{d}", "occurred_at": day(d)})
            event_rows.append(event_row(ev, "standard"))
    sink.write({tables.SCORES_HISTORY: score_rows, tables.EVENTS: event_rows})

    rows = early_warning_backtest_rows(sink.client, horizon, t)
    # a: still there (day 75), then gone; b: its latest warning (0.3), still active at 85;
    # c: gone before the warning's horizon; d: warned after p2; e: the latest warning a
    # score carried (the one after it had none); f: not there in the horizon after the
    # warning (back only later)
    assert rows == [EarlyWarningRow("ew-a", 0.8, True), EarlyWarningRow("ew-b", 0.3, False),
                    EarlyWarningRow("ew-e", 0.6, False)]
    figures = live_backtest(partial(live_backtest_rows, sink.client), horizon, t,
                            fetch_early_warning=partial(early_warning_backtest_rows, sink.client))
    assert figures["early_warning"] == early_warning_figures(rows)
    assert figures["early_warning"]["auc"] == 1.0 and figures["early_warning"]["customers"] == 3
