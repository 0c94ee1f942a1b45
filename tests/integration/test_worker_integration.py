"""End to end through the real broker, a real Faust worker process and chDB."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.clickhouse import queries
from pipeline.tools.generator import generate
from pipeline.bootstrap import build_core
from pipeline.service.replay import replay
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from schemas.outputs import AlertRecord, DeadLetter, ScoreRecord

pytestmark = pytest.mark.integration

COMPARED = ("cxi", "tangibles", "reliability", "responsiveness", "assurance", "empathy", "csat", "nps",
            "tier", "stage", "revenue_365d", "open_complaints", "sla_breaches", "churn_risk", "events")


def latest_by_key(records) -> dict[str, dict]:
    out = {}
    for m in records:
        if m.value is not None:
            out[m.key.decode()] = orjson.loads(m.value)
    return out


def test_stream_to_scores_deadletters_and_clickhouse(make_settings, start_worker):
    # A lateness bound wider than the stream: arrival order across the three topics then
    # cannot matter, so the worker must agree with an offline replay of the same events.
    settings = make_settings(lateness_seconds=40 * 86400, sweep_seconds=3600)
    stream = generate(customers=120, days=20, seed=11, invalid_ratio=0.04)
    topic_for = settings.topic_for_type
    worker = start_worker(settings)
    kafka_io.produce(settings, [(topic_for[r.kind], r.key, r.value) for r in stream.records])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=180,
                          alive=lambda: worker.alive)

    dead = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
    assert len(dead) == stream.n_invalid
    for d in dead:
        DeadLetter.model_validate(d)
        assert d["error"] and d["original_b64"] is not None and d["offset"] >= 0

    scores = latest_by_key(kafka_io.read_topic(settings, settings.topic_scores))
    valid_customers = {r.key.decode() for r in stream.records if r.valid}
    assert set(scores) == valid_customers
    for s in scores.values():
        ScoreRecord.model_validate(s)
    for m in kafka_io.read_topic(settings, settings.topic_alerts):
        AlertRecord.model_validate(orjson.loads(m.value))

    sent_to = {r.value: topic_for[r.kind] for r in stream.records}
    offline = replay((r.value for r in stream.records), build_core(settings), clock=time.time, tick=None, topic_of=sent_to.__getitem__)
    assert len(offline.dead_letters) == stream.n_invalid
    assert set(offline.scores) == set(scores)
    for cid, online in scores.items():
        for field in COMPARED:
            a, b = online[field], offline.scores[cid][field]
            if isinstance(a, float) and isinstance(b, float):
                assert a == pytest.approx(b, abs=0.02), (cid, field)
            else:
                assert a == b, (cid, field)

    worker.stop()
    accepted = len(stream.records) - stream.n_invalid - stream.n_duplicates
    with ClickHouseSink(settings.dsn) as sink:
        counts = queries.table_counts(sink.client)
    assert counts["cx_events"] == accepted == offline.applied
    assert counts["cx_scores_latest"] == len(valid_customers)
    assert counts["cx_scores_history"] >= len(valid_customers)


def test_complaint_breach_without_further_events(make_settings, start_worker):
    """A complaint with a short deadline and no further events is breached by the timer."""
    settings = make_settings(sla_max_ack_seconds=2, sweep_seconds=0.5)
    worker = start_worker(settings)
    now = datetime.now(timezone.utc)
    complaint = {
        "type": "complaint", "event_id": "brx-1", "customer_id": "cust-breach", "schema_version": 1,
        "occurred_at": now.isoformat(), "channel": "call_center", "complaint_id": "cmp-1",
        "status": "opened", "category": "responsiveness", "severity": "high",
    }
    kafka_io.produce(settings, [(settings.topic_complaints, b"cust-breach", orjson.dumps(complaint))])
    deadline = time.monotonic() + 30
    alerts: list[dict] = []
    while time.monotonic() < deadline:
        alerts = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_alerts)]
        if any(a["type"] == "sla_breach" for a in alerts):
            break
        time.sleep(0.5)
    breach = [a for a in alerts if a["type"] == "sla_breach"]
    assert len(breach) == 1 and breach[0]["status"] == "firing"
    assert breach[0]["complaint_id"] == "cmp-1" and "sunset rule" in breach[0]["recommended_action"]
    assert datetime.fromisoformat(breach[0]["as_of"]) >= now + timedelta(seconds=2)
    scores = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_scores)]
    assert scores[0]["sla_breaches"] == 0 and scores[-1]["sla_breaches"] == 1
    assert scores[-1]["version"] > scores[0]["version"]
    assert worker.alive


def test_live_metrics_cover_every_name_the_dashboards_and_rules_use(make_settings, start_worker):
    """Cross-check a real /metrics scrape of a worker that processed events against the
    metric names referenced by deploy/prometheus and deploy/grafana."""
    import re
    import urllib.request
    from pathlib import Path

    from pipeline.adapters.observability.metrics import referenced_metric_names

    settings = make_settings(lateness_seconds=40 * 86400)
    worker = start_worker(settings)
    stream = generate(customers=20, days=8, seed=3, invalid_ratio=0.05)
    topic_for = settings.topic_for_type
    kafka_io.produce(settings, [(topic_for[r.kind], r.key, r.value) for r in stream.records])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=120,
                          alive=lambda: worker.alive)
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as r:
        body = r.read().decode()
    families = set(re.findall(r"^# TYPE (\S+) ", body, flags=re.M))
    exposed = families | {f + "_total" for f in families} | {
        f + suffix for f in families for suffix in ("_bucket", "_sum", "_count")}
    referenced = referenced_metric_names(Path(__file__).resolve().parents[2] / "deploy")
    assert referenced and not (referenced - exposed), sorted(referenced - exposed)
    applied = sum(float(v) for v in re.findall(r'^cxpulse_events_applied_total\{[^}]*\} (\S+)', body, flags=re.M))
    assert applied == len(stream.records) - stream.n_invalid - stream.n_duplicates
    assert "customer_id" not in body
