"""`cxpulse bench --quick`: one small run through the real broker, a real worker and chDB."""
from __future__ import annotations

import argparse
import json
import math

import pytest

from pipeline.tools import bench
from pipeline.config import Settings

pytestmark = pytest.mark.integration


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_figure(tmp_path):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "latest.json"
    args = parser.parse_args(["--quick", "--quiet", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    assert bench.main(Settings(data_dir=tmp_path / "data"), args) == 0

    result = json.loads(out.read_text())
    for key in bench.JSON_KEYS:
        assert key in result, key
    assert result["N"] == bench.QUICK_EVENTS
    for key in ("raw_events_per_s", "pipeline_events_per_s", "p50_latency_s", "p99_latency_s",
                "p50_live_latency_s", "p99_live_latency_s"):
        assert positive(result[key]), (key, result[key])
    # the RSS growth over the bursts can read 0: the allocator may reuse memory freed before them
    assert result["rss_bytes_per_100k_customers"] >= 0 and len(result["rss_bytes"]) == 3
    assert result["p50_latency_s"] <= result["p99_latency_s"] < 60
    assert result["p50_live_latency_s"] <= result["p99_live_latency_s"] < 60
    # the live phase without its first third (6 s phase): a subset of its events
    assert result["live_settle_seconds"] == 2.0
    assert 0 < result["p99_live_latency_settled_s"] <= result["max_live_latency_s"]
    # the limit is the fastest client measured; kafka-python and aiokafka always run
    by_client = result["raw_events_per_s_by_client"]
    assert {"kafka-python", "aiokafka"} <= by_client.keys() and all(positive(v) for v in by_client.values())
    assert result["raw_events_per_s"] == max(by_client.values())
    assert result["raw_client"].split(" ")[0] == max(by_client, key=by_client.get)
    # worker CPU from /proc: some, and no more than the machine's cores over the interval
    assert positive(result["worker_cpu_us_per_event"])
    assert 0 < result["worker_cpu_cores"] <= result["machine"]["nproc"] + 0.5
    assert result["pipeline_events_per_s"] < result["raw_events_per_s"] * 10
    assert result["latency_unscored"] == 0 and result["live_latency_unscored"] == 0
    # the pipeline interval starts at the worker's first input record read, before its first score
    assert result["pipeline_from"] == "first input record read"
    assert result["pipeline_events_per_s"] <= result["pipeline_events_per_s_from_first_score"]
    assert result["worker_cpu_us_per_event"] >= result["worker_cpu_us_per_event_from_first_score"]
    # a score record per customer per micro-batch that holds its events (and the sweep's when
    # something moved): every customer at least once
    assert result["scores_per_event"] == pytest.approx(result["scores_published"] / result["events"], abs=1e-4)
    assert result["customers_tracked"] / result["events"] <= result["scores_per_event"] + 1e-4   # (rounded)
    assert result["scores_per_event"] < 3.0
    for key in ("latency_scores_per_event", "live_scores_per_event"):
        assert 0 < result[key] < 3.0, key
    # the worker's CPU over each paced phase, per event: some, and no more than all the cores
    # for the phase's length (at least the sending time) spread over its events
    for key in ("latency_worker_cpu_us_per_event", "live_worker_cpu_us_per_event"):
        assert 0 < result[key] < result["machine"]["nproc"] * 1e6 / result["latency_rate_events_per_s"] * 20, key
    # the embedded broker's CPU over the same interval, and both processes' while idle: some,
    # and no more than all the cores
    for key in ("latency_broker_cpu_us_per_event", "live_broker_cpu_us_per_event"):
        assert 0 < result[key] < result["machine"]["nproc"] * 1e6 / result["latency_rate_events_per_s"] * 20, key
    # the event loop's shares of each paced phase's wall time: on a CPU, and runnable with none
    # free; each within [0, 1] and together no more than the whole (None: no scheduler statistics)
    for phase in ("latency", "live"):
        running, waiting = result[f"{phase}_loop_running_share"], result[f"{phase}_loop_cpu_wait_share"]
        if running is not None:
            assert 0 < running <= 1.02 and 0 <= waiting <= 1.02 and running + waiting <= 1.05, phase
    for key in ("worker_idle_cpu_cores", "broker_idle_cpu_cores", "latency_broker_cpu_cores", "live_broker_cpu_cores"):
        assert 0 <= result[key] <= result["machine"]["nproc"] + 0.5, key
    # what the embedded broker holds when the paced phases start (its background CPU grows with it)
    assert result["broker_data_mb"] > 0
    assert result["latency_producer"].split(" ")[0] in ("confluent-kafka", "kafka-python")
    assert result["latency_linger_ms"] == bench.LINGER_MS == 5.0   # a channel's client left at its defaults
    # The peer either ran or says why not.
    if result["quix_events_per_s"] is None:
        assert isinstance(result["quix_error"], str) and result["quix_error"]
    else:
        assert positive(result["quix_events_per_s"])
    assert result["machine"]["nproc"] >= 1 and result["machine"]["memory_bytes"] > 0
    for name in ("python", "faust", "kafka-python", "chdb"):
        assert result["versions"][name]
    assert result["ratios"]["pipeline/raw"] == pytest.approx(
        result["pipeline_events_per_s"] / result["raw_events_per_s"], rel=1e-2)


def test_latencies_match_events_to_the_score_that_counts_them():
    class Msg:
        def __init__(self, key, ts_ms, events):
            self.key, self.timestamp, self.value = key, ts_ms, json.dumps({"events": events}).encode()

    sent = [("a", 1.0), ("a", 2.0), ("b", 2.5)]
    scores = [Msg(b"a", 1500, 1), Msg(b"a", 2600, 2), Msg(b"b", 2900, 1), Msg(b"a", 9000, 2)]
    lats, missing = bench.latencies(sent, scores)
    assert missing == 0
    assert lats == pytest.approx([0.4, 0.5, 0.6])
    assert bench.latencies([("c", 1.0)], scores) == ([], 1)
    # `since`: the events sent from then on only (a's second event still counts as a's 2nd)
    lats, missing = bench.latencies(sent, scores, since=2.0)
    assert missing == 0 and lats == pytest.approx([0.4, 0.6])


def test_quantile_and_profile_summary():
    assert bench.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert bench.quantile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    folded = ("_run_module_as_main (<frozen runpy>:198);main (agents/app.py:1);apply (pipeline/domain/scoring.py:5) 30\n"
              "_run_module_as_main (<frozen runpy>:198);run (asyncio/base_events.py:1);"
              "EpollSelector.select (selectors.py:468) 50\n"
              "Thread._bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:83);"
              "Connection.query (chdb/state/sqlitelike.py:756) 10\n")
    s = bench.summarize_profile(folded, 1.0, rate=100.0)
    main = "main thread (event loop: agent, producer, timers)"
    assert s["top"]["threads"][main] == 0.3          # 30 working samples of 100 possible
    assert s["top"]["areas"][main]["cxpulse core (pipeline/)"] == 1.0
    assert s["top"]["areas"]["ClickHouse sink thread (executor)"]["chDB (ClickHouse engine)"] == 1.0
    assert "apply (pipeline/domain/scoring.py)" in s["text"]


@pytest.mark.parametrize("flag", [["--latency-share", "0"], ["--latency-rate", "0"], ["--latency-rate", "-5"],
                                  ["--latency-linger-ms", "-1"]])
def test_a_latency_load_that_is_not_positive_is_refused_before_anything_runs(tmp_path, flag, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--quiet", "--work-dir", str(tmp_path / "work"), *flag])
    assert bench.main(Settings(data_dir=tmp_path / "data"), args) == 2
    assert flag[0] in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_paced_producer_keeps_each_customer_in_the_partition_the_java_partitioner_picks(make_settings):
    """The paced phases send with librdkafka when installed: its default partitioner
    (consistent_random, CRC32) would put a customer's records in other partitions than the
    generator's kafka-python producer (murmur2), splitting its events across the worker's
    partition numbers. Every record lands where kafka-python's partitioner puts its key."""
    from kafka.partitioner.default import murmur2

    from pipeline.adapters.kafka import kafka_io

    s = make_settings()   # two partitions per input topic
    customers = [f"C{i:04d}".encode() for i in range(60)]
    sent = bench.paced_produce(s, [("order", c, b'{"x": 1}') for c in customers]
                               + [("complaint", c, b'{"x": 2}') for c in customers], rate=5_000)
    assert [cid for cid, _ in sent] == [c.decode() for c in customers] * 2
    got = {(m.topic, m.key): m.partition for t in (s.topic_orders, s.topic_complaints)
           for m in kafka_io.read_topic(s, t, timeout=30)}
    assert len(got) == 120
    for (topic, key), partition in got.items():
        assert partition == (murmur2(key) & 0x7FFFFFFF) % 2, (topic, key)
    assert len(set(got.values())) == 2
