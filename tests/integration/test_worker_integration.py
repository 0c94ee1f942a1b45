"""End to end through the real broker, a real Faust worker process and chDB."""
from __future__ import annotations

import re
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.clickhouse import queries
from pipeline.tools.generator import generate
from pipeline.bootstrap import build_core
from pipeline.domain.scoring import iso
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
    assert breach[0]["as_of"] >= iso(now.timestamp() + 2)   # as the record shows instants (`iso`: milliseconds)
    scores = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_scores)]
    assert scores[0]["sla_breaches"] == 0 and scores[-1]["sla_breaches"] == 1
    assert scores[-1]["version"] > scores[0]["version"]
    assert worker.alive


def test_complaint_warned_then_breached_and_an_answer_in_between_saves_it(make_settings, start_worker):
    """Two complaints with an 8 s deadline and the warning at 25 %: the one nobody answers
    raises sla_at_risk then sla_breach by the timer alone (the breach supersedes the
    warning); the one answered after its warning has the warning resolved and no breach."""
    settings = make_settings(sla_max_ack_seconds=8, sla_warning_share=0.25, sweep_seconds=0.5)
    worker = start_worker(settings)
    now = datetime.now(timezone.utc)

    def complaint(cid: str, status: str, when: datetime) -> tuple[str, bytes, bytes]:
        rec = {"type": "complaint", "event_id": f"{cid}-{status}", "customer_id": cid, "schema_version": 1,
               "occurred_at": when.isoformat(), "channel": "call_center", "complaint_id": f"cmp-{cid}",
               "status": status, "category": "responsiveness", "severity": "high"}
        return settings.topic_complaints, cid.encode(), orjson.dumps(rec)

    kafka_io.produce(settings, [complaint("cust-miss", "opened", now), complaint("cust-save", "opened", now)])

    def alerts_of(cid: str) -> list[dict]:
        return [a for m in kafka_io.read_topic(settings, settings.topic_alerts)
                if (a := orjson.loads(m.value))["customer_id"] == cid]

    def wait_for(cid: str, pred, seconds: float = 30) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = alerts_of(cid)
            if pred(got):
                return got
            time.sleep(0.25)
        raise AssertionError(f"timed out; alerts of {cid}: {alerts_of(cid)}")

    def kinds(alerts: list[dict]) -> list[tuple[str, str]]:
        return [(a["type"], a["status"]) for a in alerts]

    wait_for("cust-save", lambda a: ("sla_at_risk", "firing") in kinds(a))
    answered_at = datetime.now(timezone.utc)
    assert answered_at < now + timedelta(seconds=8), "the warning came too late to answer in time"
    kafka_io.produce(settings, [complaint("cust-save", "acknowledged", answered_at)])

    missed = wait_for("cust-miss", lambda a: ("sla_at_risk", "resolved") in kinds(a))
    assert kinds(missed) == [("sla_at_risk", "firing"), ("sla_breach", "firing"), ("sla_at_risk", "resolved")]
    warned, breach, superseded = missed
    assert now + timedelta(seconds=1) <= datetime.fromisoformat(warned["as_of"]) < now + timedelta(seconds=8)
    assert breach["as_of"] >= iso(now.timestamp() + 8)   # as the record shows instants (`iso`: milliseconds)
    assert superseded["alert_id"] == warned["alert_id"] and breach["alert_id"] in superseded["reasons"][0]

    saved = wait_for("cust-save", lambda a: ("sla_at_risk", "resolved") in kinds(a))
    time.sleep(max(0.0, (now + timedelta(seconds=10) - datetime.now(timezone.utc)).total_seconds()))
    saved = alerts_of("cust-save")   # two sweeps past the deadline: still no breach
    assert kinds(saved) == [("sla_at_risk", "firing"), ("sla_at_risk", "resolved")]
    assert saved[0]["alert_id"] == saved[1]["alert_id"] and "answered in time" in saved[1]["reasons"][0]
    for a in missed + saved:
        AlertRecord.model_validate(a)
    assert worker.alive


def test_live_metrics_cover_every_name_the_dashboards_and_rules_use(make_settings, start_worker):
    """Cross-check a real /metrics scrape of a worker that processed events against the
    metric names referenced by deploy/prometheus and deploy/grafana."""
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


def test_case_lifecycle_escalation_dead_letters_and_duplicates(make_settings, start_worker):
    """Two critical SLA breaches: one case is acknowledged, contacted and closed (retained,
    callback) — a duplicate of its acknowledgement is ignored, a bad record and an action
    after the close are dead-lettered with their reasons; the other stays unacknowledged
    and escalates, and its acknowledgement resolves the escalation. Case rows reach ClickHouse."""
    from pipeline.tools.case_actions import build_action, customer_of_alert, send_action

    settings = make_settings(sla_max_ack_seconds=2, sweep_seconds=0.5, escalate_after_seconds=6)
    worker = start_worker(settings)
    now = datetime.now(timezone.utc)
    opened = [(settings.topic_complaints, cid.encode(), orjson.dumps({
        "type": "complaint", "event_id": f"{cid}-open", "customer_id": cid, "schema_version": 1,
        "occurred_at": now.isoformat(), "channel": "call_center", "complaint_id": f"cmp-{cid}",
        "status": "opened", "category": "responsiveness", "severity": "high"})) for cid in ("cust-kept", "cust-ignored")]
    kafka_io.produce(settings, opened)

    def alerts() -> list[dict]:
        return [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_alerts)]

    def wait_for(pred, seconds: float = 40) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = alerts()
            if pred(got):
                return got
            time.sleep(0.25)
        raise AssertionError(f"timed out; alerts: {[(a['customer_id'], a['type'], a['status']) for a in alerts()]}")

    def breach_of(cid: str, got: list[dict]) -> dict | None:
        return next((a for a in got if a["customer_id"] == cid and a["type"] == "sla_breach"), None)

    got = wait_for(lambda g: breach_of("cust-kept", g) and breach_of("cust-ignored", g))
    kept, ignored = breach_of("cust-kept", got)["alert_id"], breach_of("cust-ignored", got)["alert_id"]
    assert customer_of_alert(settings, kept) == "cust-kept"   # what `cxpulse ack` does without --customer
    ack = build_action(kept, "cust-kept", "acknowledged", "S017")
    send_action(settings, ack)
    send_action(settings, ack)                                 # a duplicate: ignored
    send_action(settings, build_action(kept, "cust-kept", "contacted", "S017", channel="call_center"))
    bad = {"type": "action", "schema_version": 1, "action_id": "bad-1", "alert_id": kept, "customer_id": "cust-kept",
           "occurred_at": datetime.now(timezone.utc).isoformat(), "action": "closed", "staff_id": "S017"}
    kafka_io.produce(settings, [(settings.topic_actions, b"cust-kept", orjson.dumps(bad))])
    time.sleep(0.2)
    send_action(settings, build_action(kept, "cust-kept", "closed", "S017", outcome="retained",
                                       playbook_action="callback"))
    time.sleep(0.5)
    send_action(settings, build_action(kept, "cust-kept", "contacted", "S017", channel="email"))

    got = wait_for(lambda g: any(a["type"] == "escalation" for a in g))
    escalations = [a for a in got if a["type"] == "escalation"]
    assert [(a["customer_id"], a["status"]) for a in escalations] == [("cust-ignored", "firing")]
    assert ignored in escalations[0]["reasons"][0]
    # 6 s after the missed deadline, where the breach's episode and case start (not the sweep
    # that published it): at least 6 s after the complaint was opened
    assert escalations[0]["as_of"] >= iso(now.timestamp() + 6)   # as the record shows instants
    send_action(settings, build_action(ignored, "cust-ignored", "acknowledged", "S023"))
    got = wait_for(lambda g: any(a["type"] == "escalation" and a["status"] == "resolved" for a in g))
    resolved = [a for a in got if a["type"] == "escalation" and a["status"] == "resolved"]
    assert resolved[0]["alert_id"] == escalations[0]["alert_id"] and "S023" in resolved[0]["reasons"][0]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        dls = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
        if len(dls) >= 2:
            break
        time.sleep(0.25)
    assert sorted(d["reason"] for d in dls) == ["case_closed", "invalid_record"]
    assert all(d["source_topic"] == settings.topic_actions for d in dls)
    assert "needs `outcome`" in next(d["error"] for d in dls if d["reason"] == "invalid_record")
    assert worker.alive
    worker.stop()
    with ClickHouseSink(settings.dsn) as sink:
        rows = list(sink.client.query(
            "SELECT customer_id, action, outcome, playbook_action FROM cx_case_events FINAL "
            "ORDER BY customer_id, occurred_at").named_results())
    assert [(r["customer_id"], r["action"]) for r in rows] == [
        ("cust-ignored", "acknowledged"),
        ("cust-kept", "acknowledged"), ("cust-kept", "contacted"), ("cust-kept", "closed")]
    assert (rows[-1]["outcome"], rows[-1]["playbook_action"]) == ("retained", "callback")


# Columns that depend on where the micro-batches end, by definition: a score's `version`
# counts publications (one per batch that touched the customer); an event row's `tier` is
# the customer's tier after its batch; a complaint row is written as of its batch's end
# (`updated_at`, `breached` then, `tier`, `version`). Everything else must be equal.
BATCH_DEPENDENT = {"cx_scores_latest": {"version"}, "cx_events": {"tier"},
                   "cx_complaints": {"version", "updated_at", "breached", "tier"}}
TABLE_KEYS = {"cx_scores_latest": ("customer_id",), "cx_events": ("customer_id", "event_id"),
              "cx_complaints": ("customer_id", "complaint_id")}


ROUNDING = 0.0101   # one unit of the published rounding (2 decimals; churn figures 4)


def same_value(a, b) -> bool:
    """Equal, or floats one rounding unit apart: the worker applies a customer's events in
    event-time order across the topics, replay in file order, and float sums of the same
    terms in another order can round to the neighbouring last digit."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= ROUNDING
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def _stored(table: str, row: dict) -> dict:
    """A row as ClickHouse gives it back: DateTime64(3) keeps milliseconds, Float32 is float32."""
    import struct
    from datetime import datetime as _dt

    out = {}
    for k, v in row.items():
        if k in BATCH_DEPENDENT[table]:
            continue
        if isinstance(v, _dt):
            v = v.replace(microsecond=v.microsecond // 1000 * 1000)
        elif k == "sentiment" and v is not None:
            v = struct.unpack("f", struct.pack("f", v))[0]
        out[k] = v
    return out


def test_worker_equals_replay_in_every_field_across_a_restart(make_settings, start_worker):
    """The same events (planted duplicates and invalid records included) through the worker,
    restarted half-way, and through `cxpulse replay`: every field of every final score record
    is equal (except `version`, a publication counter; floats up to one rounding unit, see
    same_value), and so are the ClickHouse rows of events, latest scores and complaints
    (except the columns named in BATCH_DEPENDENT)."""
    from pipeline.adapters.clickhouse import rows as ch_rows

    settings = make_settings(lateness_seconds=60 * 86400, sweep_seconds=3600, refit_seconds=3600, batch_max=100)
    stream = generate(customers=300, days=30, seed=21, invalid_ratio=0.03)   # seed 21: two latest NPS answers of 0
    topic_for = settings.topic_for_type
    records = [(topic_for[r.kind], r.key, r.value) for r in stream.records]
    half = len(records) // 2
    worker = start_worker(settings)
    kafka_io.produce(settings, records[:half])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=120, alive=lambda: worker.alive)
    worker.stop()
    worker = start_worker(settings)
    kafka_io.produce(settings, records[half:])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=120, alive=lambda: worker.alive)
    scores = latest_by_key(kafka_io.read_topic(settings, settings.topic_scores))
    worker.stop()

    expected: dict[str, dict[tuple, dict]] = {t: {} for t in TABLE_KEYS}

    def collect(out) -> None:
        batch = ch_rows.batch_rows(out)
        for table, src in (("cx_events", "cx_events"), ("cx_scores_latest", "cx_scores_history"),
                           ("cx_complaints", "cx_complaints")):
            for row in batch[src]:
                expected[table][tuple(row[k] for k in TABLE_KEYS[table])] = row

    sent_to = {r.value: topic_for[r.kind] for r in stream.records}
    offline = replay((r.value for r in stream.records), build_core(settings), clock=time.time, tick=None, topic_of=sent_to.__getitem__,
                     on_batch=collect)
    assert any(s.nps_last == 0 for s in offline.states.values()), "the stream should hold a latest NPS answer of 0"
    assert set(scores) == set(offline.scores)
    differ = [(cid, k, online.get(k), offline.scores[cid].get(k)) for cid, online in scores.items()
              for k in online.keys() | offline.scores[cid].keys()
              if k != "version" and not same_value(online.get(k), offline.scores[cid].get(k))]
    assert not differ, f"{len(differ)} score fields differ from replay, e.g. {differ[:5]}"
    dead = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
    assert len({(d["source_topic"], d["partition"], d["offset"]) for d in dead}) == stream.n_invalid == len(offline.dead_letters)

    with ClickHouseSink(settings.dsn) as sink:
        for table, key in TABLE_KEYS.items():
            got = {tuple(r[k] for k in key): _stored(table, r)
                   for r in sink.client.query(f"SELECT * FROM {table} FINAL").named_results()}
            want = {k: _stored(table, r) for k, r in expected[table].items()}
            assert set(got) == set(want), f"{table}: {len(set(got) ^ set(want))} keys differ"
            bad = [(k, c, got[k][c], want[k][c]) for k in want for c in want[k] if not same_value(got[k][c], want[k][c])]
            assert not bad, f"{table}: {len(bad)} values differ from replay, e.g. {bad[:5]}"


# The learning streams end at 23:20 (yesterday, UTC), whenever the test runs: their first
# events fall either side of a midnight (23:53, 00:04, 00:36 of the first day), so the
# partitions' first records come in an order replay's file does not have. The first tick
# once followed the first event seen (a day apart here), and with it the 7-day training
# schedule: the cards then differed from replay's by a day (seen at 23:05 UTC, when the
# streams ended at the wall clock). TickGate.start counts from the first event time minus
# the lateness bound; the unit test is tests/unit/test_worker_learning.py.
LEARNING_END = datetime.now(timezone.utc).replace(hour=23, minute=20, second=0, microsecond=0) - timedelta(days=1)


def test_the_learning_worker_publishes_the_models_replay_trains(make_settings, start_worker):
    """CXPULSE_LEARN_CHURN: a worker fed a stream through the broker trains at the same
    event-time ticks as `cxpulse replay --learn-churn` on the same events and publishes on
    cx.models the same decisions with the same model cards (version, window, row counts,
    validation figures), in the same order."""
    from pipeline.learning.churn_model_codec import decode_published
    from pipeline.service.churn_learning import ChurnLearner

    # a 7-day horizon: enough labelled leavers for the default cold-start minimums in 60 days
    settings = make_settings(learn_churn=True, churn_horizon_days=7, batch_max=500)
    stream = generate(customers=250, days=60, seed=4, invalid_ratio=0.0, end=LEARNING_END)
    learner = ChurnLearner(settings.churn_horizon_days)
    core = build_core(settings)
    replay([r.value for r in stream.records], core, clock=time.time, learner=learner)
    assert learner.cards, "the stream should be long enough to train"

    worker = start_worker(settings)
    kafka_io.produce(settings, [(settings.topic_for_type[r.kind], r.key, r.value) for r in stream.records])
    deadline = time.monotonic() + 600
    published: list = []
    while time.monotonic() < deadline and worker.alive:
        published = [decode_published(m.value) for m in kafka_io.read_topic(settings, settings.topic_models, timeout=5)]
        if len(published) >= len(learner.cards):
            break
        time.sleep(2)
    assert [p.card.to_dict() for p in published] == [c.to_dict() for c in learner.cards]
    served = published[-1].model
    want = core.churn_model
    assert (served.version if served else None) == (want.version if want else None)
    if want is not None:
        assert list(served.coef) == list(want.coef) and served.platt == want.platt


def test_a_restarted_learning_worker_goes_on_from_its_churn_history(make_settings, start_worker):
    """The learning worker is stopped part-way through the stream (once its trainings so far
    are published) and started again: it reads its snapshots, labels, population parameters
    and schedule back from ClickHouse (cx_churn_*, migration 007) from its last tick on, and
    the trainings on cx.models, before and after the restart, are replay's on the same events
    (the exact equality of a restart with replay: tests/unit/test_worker_learning.py)."""
    from pipeline.learning.churn_model_codec import decode_published
    from pipeline.service.churn_learning import ChurnLearner
    from pipeline.service.processor import event_time

    settings = make_settings(learn_churn=True, churn_horizon_days=7, batch_max=500)
    stream = generate(customers=250, days=60, seed=4, invalid_ratio=0.0, end=LEARNING_END)
    learner = ChurnLearner(settings.churn_horizon_days)
    replay([r.value for r in stream.records], build_core(settings), clock=time.time, learner=learner)
    # split by event time, not by position: a tick runs once the stream has passed it, and a
    # partition with nothing more to come counts as passed, so the first part must hold every
    # record up to its last instant (records come up to the lateness bound out of order)
    records = [(settings.topic_for_type[r.kind], r.key, r.value) for r in stream.records]
    split = sorted(event_time(v) or 0.0 for _, _, v in records)[len(records) * 6 // 10]
    first_part = [r for r in records if (event_time(r[2]) or 0.0) <= split]
    second_part = [r for r in records if (event_time(r[2]) or 0.0) > split]

    def cards() -> list[dict]:
        return [decode_published(m.value).card.to_dict()
                for m in kafka_io.read_topic(settings, settings.topic_models, timeout=5)]

    def applied(worker) -> float:
        with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as r:
            body = r.read().decode()
        return sum(float(v) for v in re.findall(r'^cxpulse_events_applied_total\{[^}]*\} (\S+)', body, flags=re.M))

    worker = start_worker(settings)
    kafka_io.produce(settings, first_part)
    # settled: nothing more applied and no new card for 12 s (well before a quiet stream's
    # ticks run by the wall clock, 60 s after the last record)
    seen, still_since, deadline = None, time.monotonic(), time.monotonic() + 300
    while time.monotonic() < deadline and worker.alive:
        now = (applied(worker), len(cards()))
        if now != seen:
            seen, still_since = now, time.monotonic()
        elif now[0] > 0 and time.monotonic() - still_since >= 12:
            break
        time.sleep(2)
    before = cards()
    assert before and before == [c.to_dict() for c in learner.cards[:len(before)]], "trainings before the restart"
    assert len(before) < len(learner.cards), "the stream should train after the restart too"
    assert worker.stop() == 0
    with ClickHouseSink(settings.dsn) as sink:
        last_tick = float(sink.client.command("SELECT max(toUnixTimestamp64Milli(tick_at)) / 1000 FROM cx_churn_ticks"))
        assert int(sink.client.command("SELECT count() FROM cx_churn_snapshots FINAL")) > 0

    worker = start_worker(settings)
    kafka_io.produce(settings, second_part)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and worker.alive and len(cards()) < len(learner.cards):
        time.sleep(2)
    assert f"churn history read back to the tick at {last_tick}" in worker.log_tail(400_000)
    # Every training's card is replay's, down to its validation figures (the second part is
    # produced while the worker reads: a tick waits for the broker to confirm a partition
    # that looks caught up, WorkerLoop._tick_bound; without that, 2 runs in 4 failed here).
    assert cards() == [c.to_dict() for c in learner.cards]


def test_a_restarted_worker_reads_its_last_population_refit_back(make_settings, start_worker):
    """A worker that does not learn stores each re-fit's parameters in ClickHouse (cx_population,
    migration 008); started again, it scores with the latest from its first batch on, not with
    the priors until its next re-fit."""
    settings = make_settings(refit_seconds=2.0)
    stream = generate(customers=150, days=30, seed=6, invalid_ratio=0.0)
    records = [(settings.topic_for_type[r.kind], r.key, r.value) for r in stream.records]
    worker = start_worker(settings)
    kafka_io.produce(settings, records[:-20])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            "population re-fitted" in ln and "fitted_on=0," not in ln for ln in worker.log_tail(400_000).splitlines()):
        time.sleep(1)
    assert worker.stop() == 0
    with ClickHouseSink(settings.dsn) as sink:
        stored = sink.client.query("SELECT params FROM cx_population FINAL ORDER BY fitted_at DESC LIMIT 1").result_rows
    assert stored, "a re-fit on 150 customers is stored"
    params = orjson.loads(stored[0][0])
    assert params["fitted_on"] > 0

    settings = settings.model_copy(update={"refit_seconds": 3600.0})   # no re-fit of its own in this test
    worker = start_worker(settings)
    kafka_io.produce(settings, records[-20:])
    deadline = time.monotonic() + 60
    while "population read back" not in worker.log_tail(400_000) and time.monotonic() < deadline:
        time.sleep(1)
    line = next(ln for ln in worker.log_tail(400_000).splitlines() if "population read back" in ln)
    assert f"r={params['r']}," in line and f"alpha={params['alpha']}," in line
