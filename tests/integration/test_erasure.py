"""`cxpulse erase`: the customer is gone from cx.scores, the worker's state and every
ClickHouse table, and stays gone after a worker restart, a redelivery, or events of before the
request that were still in the topics."""
from __future__ import annotations

import time
import urllib.request
from datetime import datetime, timezone

import orjson
import pytest

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.tools.erasure import erase, request_record, requested_at
from pipeline.service.processor import RawRecord
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from pipeline.adapters.clickhouse.tables import CHURN_LABELS, CHURN_SNAPSHOTS, CUSTOMER_TABLES
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.domain.state import CustomerState
from tests.factories import RECEIVED_AT, T0, at, complaint, order, raw, touchpoint
from tests.http_probe import http_status

SETTINGS = Settings(lateness_seconds=60 * 86400)


def _records(events: list[dict], first_offset: int = 0) -> list[RawRecord]:
    offsets: dict[str, int] = {}
    out = []
    for e in events:
        topic = SETTINGS.topic_for_type[e["type"]]
        offsets[topic] = offsets.get(topic, first_offset - 1) + 1
        out.append(RawRecord(topic, 0, offsets[topic], e["customer_id"].encode(), raw(e)))
    return out


def test_erased_customer_is_not_recreated_by_redeliveries_or_older_events():
    core = build_core(SETTINGS)
    states: dict[str, CustomerState] = {}
    before = [touchpoint("c1", at(1), csat=2, nps=3), order("c1", at(2)), complaint("c1", at(3), complaint_id="k1")]
    out = core.process(_records(before), states.get, source_offsets=True, received_at=RECEIVED_AT)
    states.update(out.states)
    version = states["c1"].version
    assert out.applied == 3 and version >= 1

    request = T0.timestamp() + 10 * 3600          # erased at hour 10
    states["c1"] = states["c1"].erasure_marker(request)
    marker = orjson.loads(encode_state(states["c1"]))
    assert set(marker) == {"v", "ver", "of", "er"}   # no personal data left: version, offsets, request time

    # a redelivery of what was applied: duplicates by offset
    out = core.process(_records(before), states.get, source_offsets=True, received_at=RECEIVED_AT)
    assert (out.applied, out.duplicates, out.scores) == (0, 3, [])
    # events of before the request still in the topics (new offsets): dropped, counted, no score
    late = [touchpoint("c1", at(4), csat=1), order("c1", at(9))]
    out = core.process(_records(late, first_offset=5), states.get, source_offsets=True, received_at=RECEIVED_AT)
    states.update(out.states)
    assert out.applied == 0 and out.scores == [] and out.dead_letters == []
    assert sum(out.erased_by_topic.values()) == 2
    assert states["c1"].n == 0 and states["c1"].offs[1] == 5     # the offsets move on with them
    assert core.sweep([states["c1"]], request + 86400).scores == []
    # the replay path (no source offsets) drops them by time too
    assert core.process(_records(late), {"c1": states["c1"]}.get, received_at=RECEIVED_AT).applied == 0

    # the customer comes back after the erasure: a fresh profile, its version continuing
    out = core.process(_records([order("c1", at(11))], first_offset=9), states.get, source_offsets=True, received_at=RECEIVED_AT)
    assert out.applied == 1 and len(out.scores) == 1
    score = out.scores[0]
    assert score["events"] == 1 and score["version"] > version and score["open_complaints"] == 0
    assert out.states["c1"].erased == request     # older events stay erased


def test_erasure_marker_keeps_the_latest_request_and_round_trips():
    state = CustomerState(customer_id="c1", version=4, offs=[0, 7])
    marker = state.erasure_marker(200.0).erasure_marker(100.0)
    assert marker.erased == 200.0 and marker.version == 4 and marker.offs == [0, 7] and marker.n == 0
    assert decode_state(encode_state(marker), "c1") == marker


def test_request_time_from_the_request_record():
    when = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    read = when.timestamp() + 60.0   # when the worker reads it
    assert requested_at(request_record("c1", when), read) == when.timestamp()
    for bad in (None, b"", b"not json", b"[]", b'{"customer_id": "c1"}', b'{"requested_at": "yesterday"}'):
        assert requested_at(bad, 42.0) == 42.0
    # a request time after the request was read (a wrong clock, a typo in the year) is the time
    # it was read: else every event of the customer up to year 9999 would be dropped as erased
    for future in (datetime(9999, 12, 31, tzinfo=timezone.utc), datetime(2026, 5, 2, tzinfo=timezone.utc)):
        assert requested_at(request_record("c1", future), read) == read


@pytest.mark.integration
def test_erase_removes_the_customer_everywhere_and_it_stays_gone(make_settings, start_worker):
    settings = make_settings(lateness_seconds=40 * 86400)
    records = []
    for cid in ("gone-1", "kept-1"):
        records += [
            (settings.topic_touchpoints, cid, touchpoint(cid, at(1), csat=2, nps=3)),
            (settings.topic_orders, cid, order(cid, at(2))),
            (settings.topic_complaints, cid, complaint(cid, at(3), complaint_id=f"k-{cid}")),
        ]
    worker = start_worker(settings)
    kafka_io.produce(settings, [(t, cid.encode(), raw(r)) for t, cid, r in records])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=60, alive=lambda: worker.alive)
    assert http_status(worker.url + "/customers/gone-1") == 200

    result = erase(settings, "gone-1", skip_clickhouse=True)    # the worker holds the embedded chDB
    assert result.complete
    deadline = time.monotonic() + 30
    while http_status(worker.url + "/customers/gone-1") != 404 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert http_status(worker.url + "/customers/gone-1") == 404
    assert http_status(worker.url + "/customers/kept-1") == 200
    worker.stop()

    result = erase(settings, "gone-1")                           # now the ClickHouse step
    assert result.complete and result.clickhouse_rows and result.clickhouse_rows > 0
    with ClickHouseSink(settings.dsn) as sink:
        for table in CUSTOMER_TABLES:
            rows = sink.client.query(f"SELECT customer_id, count() FROM {table} GROUP BY customer_id").result_rows
            counts = dict(rows)
            assert "gone-1" not in counts, table
            # no alert needs to fire and no operator acts here, and only a learning worker writes
            # the churn history (its erasure: tests/integration/test_clickhouse.py): those tables may hold nobody
            assert counts.get("kept-1", 0) > 0 or table in ("cx_alerts", "cx_case_events", CHURN_SNAPSHOTS,
                                                             CHURN_LABELS), table
        erased = sink.client.query("SELECT customer_id FROM cx_erasures").result_rows
    assert erased == [("gone-1",)]

    latest = {}
    for m in kafka_io.read_topic(settings, settings.topic_scores):
        latest[m.key.decode()] = m.value
    assert latest["gone-1"] is None and orjson.loads(latest["kept-1"])["customer_id"] == "kept-1"

    restarted = start_worker(settings)                           # state is recovered from the changelog
    deadline = time.monotonic() + 60                             # 503 while the table recovers
    while http_status(restarted.url + "/customers/kept-1") != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert http_status(restarted.url + "/customers/kept-1") == 200
    assert http_status(restarted.url + "/customers/gone-1") == 404

    # An event of before the request that arrives only now (a producer retry, a lagging
    # channel) does not bring the customer back; their next visit starts a fresh profile.
    kafka_io.produce(settings, [(settings.topic_touchpoints, b"gone-1", raw(touchpoint("gone-1", at(5), csat=1)))])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=60,
                          alive=lambda: restarted.alive)
    assert http_status(restarted.url + "/customers/gone-1") == 404
    now = datetime.now(timezone.utc).isoformat()
    kafka_io.produce(settings, [(settings.topic_orders, b"gone-1", raw(order("gone-1", now)))])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=60,
                          alive=lambda: restarted.alive)
    with urllib.request.urlopen(restarted.url + "/customers/gone-1", timeout=5) as r:
        profile = orjson.loads(r.read())
    assert profile["events"] == 1 and profile["open_complaints"] == 0
