"""`cxpulse erase`: the customer is gone from cx.scores, the worker's state and every
ClickHouse table, and stays gone after a worker restart."""
from __future__ import annotations

import time

import orjson
import pytest

from pipeline import kafka_io, topics
from pipeline.erasure import erase
from pipeline.sink import CUSTOMER_TABLES, ClickHouseSink
from tests.factories import at, complaint, order, raw, touchpoint
from tests.http_probe import http_status

pytestmark = pytest.mark.integration


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
            assert counts.get("kept-1", 0) > 0 or table in ("cx_alerts",), table
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
