"""Fault drills against the real broker, real Faust worker processes and chDB (issue 8).

Every scenario produces a generated stream while something goes wrong (a worker is
killed with SIGKILL, a second worker joins and leaves, the broker restarts), lets the
pipeline catch up (committed offsets == end offsets), and then checks exact figures:

- the latest cx.scores record per customer equals an offline replay of the same events
  (the lateness bound is wider than the stream, so arrival order cannot matter);
- every accepted event is in ClickHouse exactly once logically (`cx_events FINAL`) —
  no loss, no double count; physical re-deliveries are reported, not hidden;
- the dead-letter topic holds exactly the planted invalid records (at-least-once may
  repeat a dead letter after a crash: repeats are counted by source offset).

`make faults` runs this file. Figures are printed (`pytest -s`) as `FIGURES {...}` lines;
docs/fault-tolerance.md quotes them.
"""
from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.kafka.broker import EmbeddedBroker
from pipeline.config import Settings
from pipeline.tools.generator import GeneratedStream, generate
from pipeline.bootstrap import build_core
from pipeline.service.replay import replay
from pipeline.adapters.clickhouse import queries
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from pipeline.adapters.kafka.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

COMPARED = ("cxi", "tangibles", "reliability", "responsiveness", "assurance", "empathy", "csat", "nps",
            "tier", "stage", "revenue_365d", "open_complaints", "sla_breaches", "churn_risk", "events")
WIDE = dict(lateness_seconds=60 * 86400, sweep_seconds=3600, refit_seconds=3600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def figures(name: str, **values) -> None:
    print("FIGURES", orjson.dumps({"scenario": name, **values}).decode())


class Feed:
    """Produces a stream's records in waves from a background thread, so faults can be
    injected while events are still arriving. `sent` counts acknowledged records."""

    def __init__(self, settings: Settings, stream: GeneratedStream, waves: int, pause: float):
        topic_for = settings.topic_for_type
        self.settings = settings
        self.records = [(topic_for[r.kind], r.key, r.value) for r in stream.records]
        self.waves, self.pause = waves, pause
        self.sent = 0
        self.acked: list[tuple[float, int, int]] = []   # (monotonic time, first, end) per wave
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="feed")

    def _run(self) -> None:
        try:
            size = -(-len(self.records) // self.waves)
            for i in range(0, len(self.records), size):
                self.sent += kafka_io.produce(self.settings, self.records[i:i + size])
                self.acked.append((time.monotonic(), i, min(i + size, len(self.records))))
                time.sleep(self.pause)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def start(self) -> "Feed":
        self._thread.start()
        return self

    def wait_sent(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < n and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.error is None, self.error

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "producer did not finish"
        assert self.error is None, self.error
        assert self.sent == len(self.records)

    def acked_between(self, start: float, end: float) -> range | None:
        """Indices of the records whose wave was acknowledged within [start, end] (monotonic)."""
        waves = [(first, last) for t, first, last in self.acked if start <= t <= end]
        return range(waves[0][0], waves[-1][1]) if waves else None


def evict_dead_members(settings: Settings) -> list[str]:
    """LeaveGroup on behalf of every member of the worker's group (call only when no worker
    of the group is alive). The embedded broker (noida-db 0.2.3) never expires the session
    of a member that died without leaving: the next worker is then stuck forever as a
    follower waiting for the dead leader's assignment (SyncGroup fails every session
    timeout). Apache Kafka expires it after `session.timeout.ms`; this does it explicitly."""
    from kafka.admin import KafkaAdminClient, MemberToRemove

    client = KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="cxpulse-fault-drill")
    try:
        group = client.describe_groups([settings.app_id])[settings.app_id]
        members = [m["member_id"] for m in group.get("members") or ()]
        if members:
            client.remove_group_members(settings.app_id, [MemberToRemove(member_id=m) for m in members])
        return members
    finally:
        client.close()


def wait_in_group(worker: WorkerProcess, timeout: float = 60) -> bool:
    """Until the worker got its partitions (a worker answers /healthz before it joins)."""
    deadline = time.monotonic() + timeout
    while "Successfully synced group" not in worker.log_path.read_text(errors="replace"):
        assert worker.alive, worker.log_tail()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def applied_total(worker: WorkerProcess) -> int:
    """Input events the worker applied so far (its /metrics, cxpulse_events_applied_total)."""
    return int(worker.counter("cxpulse_events_applied"))


def applied_so_far(worker: WorkerProcess) -> int:
    """`applied_total`, or 0 while the worker's loop is too busy to answer within its timeout."""
    try:
        return applied_total(worker)
    except OSError:   # socket.timeout / URLError
        return 0


def committed_total(settings: Settings) -> int:
    try:
        done = topics.committed_offsets(settings, settings.app_id)
    except Exception:
        return 0
    return sum(max(0, o) for tp, o in done.items() if tp.topic in settings.input_topics)


def wait_committed(settings: Settings, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while committed_total(settings) < n:
        assert time.monotonic() < deadline, f"fewer than {n} input offsets committed after {timeout}s"
        time.sleep(0.05)


def wait_all(settings: Settings, worker: WorkerProcess, timeout: float = 90) -> None:
    """Committed offsets == end offsets of every input partition, or a diagnostic failure."""
    try:
        topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=timeout,
                              alive=lambda: worker.alive)
    except (TimeoutError, topics.TopicLayoutError) as exc:
        lag = {f"{tp.topic}/{tp.partition}": n for tp, n in
               topics.consumer_lag(settings, settings.app_id, list(settings.input_topics)).items() if n}
        ends = {f"{tp.topic}/{tp.partition}": n for tp, n in topics.end_offsets(settings, list(settings.input_topics)).items()}
        pytest.fail(f"{exc}; lag by partition {lag}; ends {ends}; worker log:\n{worker.log_tail(3000)}")


def latest_scores(settings: Settings) -> tuple[dict[str, dict], int]:
    out, n = {}, 0
    for m in kafka_io.read_topic(settings, settings.topic_scores):
        if m.value is not None:
            n += 1
            out[m.key.decode()] = orjson.loads(m.value)
    return out, n


def check_outputs(settings: Settings, stream: GeneratedStream) -> dict:
    """Latest score per customer == offline replay; dead letters == planted invalid records."""
    scores, n_scores = latest_scores(settings)
    topic_for = settings.topic_for_type
    sent_to = {r.value: topic_for[r.kind] for r in stream.records}
    offline = replay((r.value for r in stream.records), build_core(settings), clock=time.time, tick=None, topic_of=sent_to.__getitem__)
    assert set(scores) == set(offline.scores), "customers with a score differ from the offline replay"
    mismatches = []
    for cid, online in scores.items():
        for field in COMPARED:
            a, b = online[field], offline.scores[cid][field]
            same = a == pytest.approx(b, abs=0.02) if isinstance(a, float) and isinstance(b, float) else a == b
            if not same:
                mismatches.append((cid, field, a, b))
    if mismatches:
        bad = sorted({m[0] for m in mismatches})[:3]
        history = {cid: [(m.partition, m.offset, orjson.loads(m.value)["version"], orjson.loads(m.value)["events"])
                         for m in kafka_io.read_topic(settings, settings.topic_scores)
                         if m.key.decode() == cid and m.value is not None] for cid in bad}
        pytest.fail(f"{len(mismatches)} score fields differ from the replay, e.g. {mismatches[:5]}; "
                    f"score history (partition, offset, version, events) {history}")
    assert sum(s["events"] for s in scores.values()) == offline.applied

    dead = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
    by_source = Counter((d["source_topic"], d["partition"], d["offset"]) for d in dead)
    assert len(by_source) == stream.n_invalid, "every planted invalid record is dead-lettered"
    return {"customers": len(scores), "score_records": n_scores, "accepted": offline.applied,
            "dead_letters": len(dead), "dead_letter_repeats": len(dead) - len(by_source)}


def event_ids(dsn: str) -> tuple[Counter, int]:
    """(physical rows per event_id, logical rows = cx_events FINAL) of one ClickHouse."""
    with ClickHouseSink(dsn) as sink:
        rows = sink.client.query("SELECT event_id, count() FROM cx_events GROUP BY event_id").result_rows
        final = sink.client.query("SELECT count() FROM cx_events FINAL").result_rows[0][0]
    return Counter({eid: n for eid, n in rows}), final


def accepted_ids(stream: GeneratedStream) -> set[str]:
    return {orjson.loads(r.value)["event_id"] for r in stream.records if r.valid}


def where_missing(settings: Settings, dsns: list[str], missing: set[str]) -> str:
    """Where the events missing from ClickHouse sat in the input topics (partition: offsets),
    and the parts ClickHouse set aside (`detached/`) in each chDB store: what a diagnosis of
    a loss starts from."""
    at: dict[str, list[int]] = {}
    for topic in settings.input_topics:
        for m in kafka_io.read_topic(settings, topic):
            try:
                event_id = orjson.loads(m.value).get("event_id")
            except Exception:
                continue
            if event_id in missing:
                at.setdefault(f"{topic}/{m.partition}", []).append(m.offset)
    detached = []
    for dsn in dsns:
        if dsn.startswith("chdb://"):
            root = Path(dsn[len("chdb://"):])
            detached += [str(p.relative_to(root)) for p in root.glob("**/detached/*")]
    return f"input offsets {dict(sorted((k, sorted(v)) for k, v in at.items()))}; detached parts {detached or 'none'}"


def check_clickhouse(dsns: list[str], stream: GeneratedStream, settings: Settings) -> dict:
    """Each accepted event is in ClickHouse, logically once (FINAL) per store; with several
    stores (one per worker), in the union of them (a shared ClickHouse would collapse an
    event written by both workers, as ReplacingMergeTree collapses any re-delivery). A loss
    is reported with where the missing events were (`where_missing`)."""
    want = accepted_ids(stream)
    physical: Counter = Counter()
    union: set[str] = set()
    double = 0
    per_store = []
    for dsn in dsns:
        ids, final = event_ids(dsn)
        double += final - len(ids)
        per_store.append(final)
        physical.update(ids)
        union |= set(ids)
    assert double == 0, f"cx_events FINAL counts {double} events more than there are distinct ids (double count)"
    assert not union - want, "events in ClickHouse that were never accepted"
    if len(union) != len(want):
        lost = want - union
        pytest.fail(f"{len(lost)} accepted events missing from ClickHouse (lost); {where_missing(settings, dsns, lost)}")
    out = {"ch_events_final": len(union), "ch_rows_physical": sum(physical.values()),
           "ch_redelivered_rows": sum(physical.values()) - len(union), "lost": len(want - union), "double": double}
    if len(dsns) > 1:
        out["ch_final_per_store"] = per_store
        out["ch_events_in_several_stores"] = sum(final for final in per_store) - len(union)
    return out


# Aggregates that do not depend on where micro-batches end (a score is published per batch,
# an event row carries the tier after its batch): compared with an uninterrupted run as
# they are. The others are compared with the run's own deduplicated base rows.
RUN_INDEPENDENT_AGGREGATES = {
    "cx_agg_hourly events by hour x channel x stage":
        "SELECT hour, channel, stage, sum(events), sum(touchpoints), sum(orders), sum(late_fulfilments), "
        "sum(complaints), sum(csat_answers), sum(csat_satisfied), sum(nps_answers), sum(nps_promoters), "
        "sum(nps_detractors) FROM cx_agg_hourly GROUP BY ALL HAVING sum(events) > 0 ORDER BY ALL",
    "cx_quality_channel": "SELECT * FROM cx_quality_channel ORDER BY ALL",
    "cx_quality_staff": "SELECT * FROM cx_quality_staff ORDER BY ALL",
}
OWN_BASE_ROWS = {   # aggregate query, the same figure from the base tables (deduplicated)
    "scores and CXI by hour x stage x tier": (
        "SELECT hour, stage, tier, sum(scores), round(sum(cxi_sum), 6) FROM cx_agg_hourly "
        "GROUP BY ALL HAVING sum(scores) > 0 ORDER BY ALL",
        "SELECT toDateTime64(toStartOfHour(as_of), 3, 'UTC') AS hour, stage, tier, count(), round(sum(cxi), 6) "
        "FROM cx_scores_history FINAL WHERE cxi IS NOT NULL GROUP BY ALL ORDER BY ALL"),
    "events by hour x channel x stage x tier": (
        "SELECT hour, channel, stage, tier, sum(events) FROM cx_agg_hourly GROUP BY ALL HAVING sum(events) > 0 "
        "ORDER BY ALL",
        "SELECT toDateTime64(toStartOfHour(occurred_at), 3, 'UTC') AS hour, channel, stage, tier, count() "
        "FROM cx_events FINAL GROUP BY ALL ORDER BY ALL"),
    # from cx_alert_facts (migration 006; it was a materialized view that could miss an alert
    # whose insert SIGKILL cut and whose redelivery the insert dedup token dropped: 6 vs 7 once)
    "churn alerts fired": (
        "SELECT uniqExactMerge(churn_alerts) FROM cx_agg_hourly",
        "SELECT uniqExact(alert_id) FROM cx_alerts FINAL WHERE type = 'churn_risk' AND status = 'firing'"),
}
def _rounded(rows: list) -> list:
    """Float sums rounded to 6 digits (sums of the same values in another order differ in the last bits)."""
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def check_aggregates(settings: Settings, stream: GeneratedStream, tmp_path: Path) -> dict:
    """Every aggregate of the drill's ClickHouse equals an uninterrupted run of the same events
    (replay's backfill, `cxpulse replay --to-clickhouse`) where it does not depend on
    micro-batch boundaries, and its own deduplicated base rows where it does."""
    from pipeline.adapters.clickhouse.rows import batch_rows

    with ClickHouseSink(settings.dsn) as sink:
        got = {name: _rounded(sink.client.query(sql).result_rows) for name, sql in RUN_INDEPENDENT_AGGREGATES.items()}
        for name, (agg_sql, base_sql) in OWN_BASE_ROWS.items():
            agg, base = (_rounded(sink.client.query(q).result_rows) for q in (agg_sql, base_sql))
            assert agg == base, f"{name}: the aggregate differs from the deduplicated base rows (double count)"
        # One churn episode per customer and one failed-recovery episode per complaint at a time:
        # two firing ids of which neither resolved are an alert a crash left behind (the
        # redelivery fired the episode again under another id; before the episodes were
        # numbered, sessions 24 and 26).
        never_resolved: dict[tuple[str, str, str | None], list[str]] = {}
        for alert in queries.open_numbered_alerts(sink.client):
            never_resolved.setdefault((alert.customer_id, alert.type, alert.complaint_id), []).append(alert.alert_id)
        left_behind = sorted((key, ids) for key, ids in never_resolved.items() if len(ids) > 1)
        assert not left_behind, f"alerts left behind by a crash ((customer, type, complaint), firing ids): {left_behind}"
        churn_ids = sink.client.command("SELECT uniqExact(alert_id) FROM cx_alerts FINAL WHERE type = 'churn_risk'")
    topic_for = settings.topic_for_type
    sent_to = {r.value: topic_for[r.kind] for r in stream.records}
    with ClickHouseSink(f"chdb://{tmp_path / 'uninterrupted'}") as ref:
        replay((r.value for r in stream.records), build_core(settings), clock=time.time, tick=None, topic_of=sent_to.__getitem__,
               on_batch=lambda out: ref.add(batch_rows(out)))
        ref.flush()
        want = {name: _rounded(ref.client.query(sql).result_rows) for name, sql in RUN_INDEPENDENT_AGGREGATES.items()}
    for name in RUN_INDEPENDENT_AGGREGATES:
        assert got[name] == want[name], f"{name} differs from an uninterrupted run"
    return {"aggregate_rows_compared": sum(len(v) for v in want.values()), "churn_alert_ids": churn_ids}


# ----------------------------------------------------------------------------- scenarios


def test_kill_9_mid_stream_and_restart(make_settings, start_worker, tmp_path):
    """SIGKILL the worker three times while events arrive; a fresh worker finishes the job."""
    settings = make_settings(batch_max=100, **WIDE)
    stream = generate(customers=200, days=20, seed=21, invalid_ratio=0.03)
    total = len(stream.records)
    feed = Feed(settings, stream, waves=30, pause=0.15)
    worker = start_worker(settings)
    feed.start()
    kills = evicted = 0
    for share in (0.2, 0.45, 0.7):
        wait_committed(settings, int(total * share))
        time.sleep(0.1)          # land inside a micro-batch rather than right after a commit
        assert worker.alive, worker.log_tail()
        worker.kill()
        kills += 1
        # The killed worker is listed unless it was killed while re-joining (the offsets a write
        # group commits can pass the next share right after a restart, while Faust still settles
        # its group): evict what is listed; the next worker must then get its partitions.
        evicted += len(evict_dead_members(settings))
        worker = start_worker(settings)
        assert wait_in_group(worker), worker.log_tail()
    feed.join()
    wait_all(settings, worker)
    out = check_outputs(settings, stream)
    worker.stop()
    ch = check_clickhouse([settings.dsn], stream, settings)
    assert ch["ch_events_final"] == out["accepted"] == total - stream.n_invalid - stream.n_duplicates
    agg = check_aggregates(settings, stream, tmp_path)
    # alerts a killed worker's lost batch fired and a restarted worker withdrew (docs/fault-tolerance.md)
    withdrawn = sum(int(n) for log in Path(settings.data_dir).glob("worker-*.log")
                    for n in re.findall(r"withdrew (\d+) alert", log.read_text(errors="replace")))
    figures("kill -9", records=total, invalid=stream.n_invalid, duplicates_planted=stream.n_duplicates,
            kills=kills, dead_members_evicted=evicted, alerts_withdrawn=withdrawn, **out, **ch, **agg)


def test_second_worker_joins_and_leaves(make_settings, start_worker, tmp_path):
    """A second worker of the same group joins mid-stream, takes over partitions, and leaves
    (SIGTERM) while events still arrive; nothing is lost or counted twice, including the
    events produced within 2 s of the leave (the race reported in issue #8)."""
    settings = make_settings(batch_max=100, **WIDE)
    other = settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / f"b-{uuid.uuid4().hex[:6]}"})
    stream = generate(customers=200, days=20, seed=22, invalid_ratio=0.03)
    total = len(stream.records)
    feed = Feed(settings, stream, waves=60, pause=0.5)
    first = start_worker(settings)
    assert wait_in_group(first), f"first worker got no partitions:\n{first.log_tail()}"
    feed.start()
    feed.wait_sent(total // 6)
    second = start_worker(other)
    assert wait_in_group(second, timeout=30), (
        f"no group of two formed (docs/fault-tolerance.md, scenario 2); second worker:\n{second.log_tail()}\n"
        f"first worker:\n{first.log_tail()}")
    deadline = time.monotonic() + 20
    while applied_total(second) == 0:   # it really took over partitions
        assert time.monotonic() < deadline, f"second worker applied nothing:\n{second.log_tail()}"
        time.sleep(0.2)
    time.sleep(1.0)
    assert feed.sent < total, "the second worker should leave while events are still produced"
    leave_at = time.monotonic()
    second.stop()               # leaves while the feed keeps producing
    feed.join()
    around_leave = feed.acked_between(leave_at - 2.0, leave_at + 2.0)
    assert around_leave, "no events were produced within 2 s of the leave"
    wait_all(settings, first)
    out = check_outputs(settings, stream)
    first.stop()
    ch = check_clickhouse([settings.dsn, other.dsn], stream, settings)   # per store: [first, second]
    assert ch["ch_events_final"] == out["accepted"] == total - stream.n_invalid - stream.n_duplicates
    stored = set().union(*(set(event_ids(dsn)[0]) for dsn in (settings.dsn, other.dsn)))
    near = {orjson.loads(stream.records[i].value)["event_id"] for i in around_leave if stream.records[i].valid}
    assert near <= stored, f"{len(near - stored)} events produced within 2 s of the leave are missing"
    figures("join and leave", records=total, invalid=stream.n_invalid, duplicates_planted=stream.n_duplicates,
            accepted_within_2s_of_leave=len(near), **out, **ch)


def test_timer_rules_after_a_rebalance_run_only_on_the_owner(make_settings, start_worker, tmp_path):
    """After a rebalance the first worker's in-memory table still holds the customers it gave
    away. Only their new owner may run the timer rules (SLA deadlines, silence) for them and
    store the result: each complaint's SLA breach fires exactly once."""
    deadline_s = 40.0   # the second worker must join before it (FIGURES: second_worker_joined_after_s)
    settings = make_settings(sla_max_ack_seconds=deadline_s, sweep_seconds=0.5, lateness_seconds=3600)
    other = settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / f"b-{uuid.uuid4().hex[:6]}"})
    first = start_worker(settings)
    assert wait_in_group(first), first.log_tail()
    opened = datetime.now(timezone.utc)
    customers = [f"swp-{i:02d}" for i in range(12)]
    kafka_io.produce(settings, [(settings.topic_complaints, cid.encode(), orjson.dumps({
        "type": "complaint", "event_id": f"swp-ev-{cid}", "customer_id": cid, "schema_version": 1,
        "occurred_at": opened.isoformat(), "channel": "call_center", "complaint_id": f"cmp-{cid}",
        "status": "opened", "category": "responsiveness", "severity": "high"})) for cid in customers])
    wait_all(settings, first)
    second = start_worker(other)
    assert wait_in_group(second, timeout=30), second.log_tail()
    joined_after = time.time() - opened.timestamp()
    assert joined_after < deadline_s, "the second worker joined after the deadlines"
    until = time.monotonic() + 90
    fired: Counter = Counter()
    while time.monotonic() < until:
        alerts = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_alerts)]
        fired = Counter(a["customer_id"] for a in alerts if a["type"] == "sla_breach" and a["status"] == "firing")
        if set(fired) == set(customers):
            break
        time.sleep(0.5)
    time.sleep(3.0)   # a few more sweeps on both workers
    alerts = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_alerts)]
    fired = Counter(a["customer_id"] for a in alerts if a["type"] == "sla_breach" and a["status"] == "firing")
    assert set(fired) == set(customers), f"breaches missing for {sorted(set(customers) - set(fired))}"
    assert all(n == 1 for n in fired.values()), f"breaches fired more than once: {dict(fired)}"
    assert first.alive and second.alive
    figures("timer rules after a rebalance", customers=len(customers), breaches=sum(fired.values()),
            second_worker_joined_after_s=round(joined_after, 1))


def test_broker_restart(tmp_path: Path, start_worker):
    """The broker stops cleanly and comes back on the same port and data dir mid-stream."""
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    base = Settings(data_dir=tmp_path / "broker-root", kafka_port=port)
    broker = EmbeddedBroker(base, data_dir=tmp_path / "broker-root" / "data", log_path=tmp_path / "broker.log")
    broker.start()
    try:
        settings = Settings(
            kafka_port=port, data_dir=tmp_path / f"data-{tag}", web_port=free_port(), app_id=f"cxpulse-brk-{tag}",
            partitions=2, batch_within=0.05, commit_interval=0.2, batch_max=100,
            topic_touchpoints=f"{tag}.touchpoints", topic_orders=f"{tag}.orders",
            topic_complaints=f"{tag}.complaints", topic_scores=f"{tag}.scores", topic_alerts=f"{tag}.alerts",
            topic_deadletter=f"{tag}.deadletter", topic_erasures=f"{tag}.erasures", topic_actions=f"{tag}.actions", **WIDE,
        )
        topics.ensure_topics(settings)
        stream = generate(customers=150, days=20, seed=23, invalid_ratio=0.03)
        topic_for = settings.topic_for_type
        records = [(topic_for[r.kind], r.key, r.value) for r in stream.records]
        half = len(records) // 2
        worker = start_worker(settings)
        kafka_io.produce(settings, records[:half])
        topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=60,
                              alive=lambda: worker.alive)
        broker.stop()
        time.sleep(3.0)         # the worker sees the broker gone (connection errors, retries)
        assert worker.alive, worker.log_tail()
        broker.start()
        kafka_io.produce(settings, records[half:])
        wait_all(settings, worker, timeout=60)
        out = check_outputs(settings, stream)
        assert worker.alive
        worker.stop()
        ch = check_clickhouse([settings.dsn], stream, settings)
        assert ch["ch_events_final"] == out["accepted"]
        figures("broker restart", records=len(records), invalid=stream.n_invalid,
                duplicates_planted=stream.n_duplicates, **out, **ch)
    finally:
        broker.stop()


def live_backlog(customers: int, events: int, hours: float, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) of `events` live-timestamped events over the last `hours`, in event
    time order (as they happened): orders about 2.4x the touchpoints, complaints rare."""
    import random

    from tests.factories import complaint, order, touchpoint

    rng = random.Random(seed)
    now = time.time()
    out = []
    stamps = sorted(rng.uniform(now - hours * 3600, now - 1) for _ in range(events))
    for i, ts in enumerate(stamps):
        cid = f"B{rng.randrange(customers):05d}"
        when = datetime.fromtimestamp(ts, timezone.utc).isoformat()
        roll = rng.random()
        if roll < 0.69:
            d = order(cid, when, event_id=f"bo-{i}", amount=f"{rng.uniform(5, 300):.2f}")
        elif roll < 0.98:
            d = touchpoint(cid, when, event_id=f"bt-{i}", csat=rng.randint(1, 5), nps=rng.randint(0, 10))
        else:
            d = complaint(cid, when, event_id=f"bc-{i}", complaint_id=f"k-{i}")
        out.append((d["type"], cid.encode(), orjson.dumps(d)))
    return out


def too_late(settings: Settings) -> int:
    return sum(1 for m in kafka_io.read_topic(settings, settings.topic_deadletter)
               if orjson.loads(m.value)["reason"] == "too_late")


def check_equals_replay(settings: Settings, values: list[bytes], topic_of) -> dict:
    """Every field of every customer's latest cx.scores record equals replay's (but `version`,
    which counts publications)."""
    scores, _ = latest_scores(settings)
    offline = replay(values, build_core(settings), clock=time.time, tick=None, topic_of=topic_of)
    assert set(scores) == set(offline.scores)
    differ = [(cid, k, s.get(k), offline.scores[cid].get(k)) for cid, s in scores.items()
              for k in s.keys() | offline.scores[cid].keys() if k != "version" and s.get(k) != offline.scores[cid].get(k)]
    assert not differ, f"{len(differ)} score fields differ from replay, e.g. {differ[:5]}"
    return {"customers": len(scores), "applied": offline.applied, "events_in_scores": sum(s["events"] for s in scores.values())}


def test_catch_up_after_an_outage_drops_nothing(make_settings, start_worker):
    """Six hours of live traffic across the three topics produced while no worker runs (an
    outage); then one worker starts and catches up. It reads the topics at their own speeds
    (orders are the biggest), but applies each partition group in event-time order: no event
    is `too_late` (the lateness bound is the default hour), every event is applied, and the
    final scores equal replay's (issue #17)."""
    settings = make_settings(batch_max=500, sweep_seconds=3600, refit_seconds=3600)   # lateness: the 1 h default
    assert settings.lateness_seconds == 3600
    backlog = live_backlog(customers=400, events=12_000, hours=6.5, seed=17)
    topic_for = settings.topic_for_type
    kinds = Counter(k for k, _, _ in backlog)
    kafka_io.produce(settings, [(topic_for[k], key, value) for k, key, value in backlog])
    started = time.monotonic()
    worker = start_worker(settings)
    wait_all(settings, worker, timeout=300)
    caught_up_s = time.monotonic() - started
    late = too_late(settings)
    figures("catch-up after a 6.5 h outage", events=len(backlog), **{f"{k}s": n for k, n in kinds.items()},
            too_late=late, caught_up_s=round(caught_up_s, 1), applied=applied_total(worker))
    assert late == 0, f"{late} of {len(backlog)} events dead-lettered too_late"
    assert applied_total(worker) == len(backlog)
    sent_to = {value: topic_for[k] for k, _, value in backlog}
    out = check_equals_replay(settings, [v for _, _, v in backlog], sent_to.__getitem__)
    assert out["applied"] == out["events_in_scores"] == len(backlog)
    figures("catch-up after a 6.5 h outage: equal to replay", **out)


def test_two_workers_joining_during_the_catch_up_drop_nothing(make_settings, start_worker, tmp_path):
    """A 6.5-hour outage backlog (six times the events of the one above), and a second worker of
    the group joins while the first is still catching up: the group rebalances in the middle of
    the event-time-aligned catch-up (buffered records are dropped and read again by the new
    owner). Nothing is `too_late` (default lateness bound), every event is applied once, and the
    final scores equal replay's. The second worker is started as soon as the first has applied
    events (started once the first had its partitions, it once joined before the first had
    applied any, on a clean clone: a rebalance before the catch-up, not during it); its start-up
    and join take about 6 s of the first's catch-up. The backlog must outlast them: 24,000 events
    were all applied before the join once the first worker grouped its ClickHouse writes
    (session 13, about 15,000 events/s). Joining this late, the group often goes through a storm
    of rebalances (members dropped for missed heartbeats on a busy machine): records applied
    during a table recovery, states stored after a re-join and a commit during a rebalance each
    failed this drill once (docs/fault-tolerance.md, §2c)."""
    settings = make_settings(batch_max=500, sweep_seconds=3600, refit_seconds=3600)   # lateness: the 1 h default
    assert settings.lateness_seconds == 3600
    other = settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / f"b-{uuid.uuid4().hex[:6]}"})
    backlog = live_backlog(customers=2_400, events=72_000, hours=6.5, seed=19)
    topic_for = settings.topic_for_type
    kafka_io.produce(settings, [(topic_for[k], key, value) for k, key, value in backlog])
    started = time.monotonic()
    first = start_worker(settings)
    assert wait_in_group(first), first.log_tail()
    deadline = time.monotonic() + 120
    while applied_so_far(first) == 0:                     # until the catch-up has begun
        assert first.alive and time.monotonic() < deadline, first.log_tail()
        time.sleep(0.2)
    second = start_worker(other)                          # while the first catches up
    assert wait_in_group(second, timeout=60), f"second worker:\n{second.log_tail()}\nfirst:\n{first.log_tail()}"
    joined_after_s = time.monotonic() - started
    committed_at_join, applied_at_join = committed_total(settings), applied_total(first)
    # applied, not committed: the offsets of a write group (up to CXPULSE_WRITE_GROUP_ROWS rows)
    # are committed when its write completes, so none may be committed yet a while into it
    assert 0 < applied_at_join < len(backlog), (
        f"the second worker should join during the catch-up ({applied_at_join} of {len(backlog)} applied)")
    wait_all(settings, first, timeout=300)
    caught_up_s = time.monotonic() - started
    assert first.alive and second.alive
    late = too_late(settings)
    applied = (applied_total(first), applied_total(second))
    figures("two workers joining during the catch-up", events=len(backlog), too_late=late,
            committed_when_the_second_joined=committed_at_join, applied_when_the_second_joined=applied_at_join,
            second_joined_after_s=round(joined_after_s, 1),
            applied_by_worker=applied,
            caught_up_s=round(caught_up_s, 1))
    assert late == 0, f"{late} of {len(backlog)} events dead-lettered too_late"
    assert applied[1] > 0, "the second worker took over partitions"
    sent_to = {value: topic_for[k] for k, _, value in backlog}
    out = check_equals_replay(settings, [v for _, _, v in backlog], sent_to.__getitem__)
    assert out["applied"] == out["events_in_scores"] == len(backlog)
    figures("two workers joining during the catch-up: equal to replay", **out)


def test_backfill_of_a_120_day_history_through_kafka(make_settings, start_worker, tmp_path, monkeypatch):
    """`cxpulse produce history.jsonl` of 120 days into an empty group, then a worker: nothing
    is `too_late` with the default lateness bound, and the final scores equal
    `cxpulse replay history.jsonl`."""
    from pipeline.tools.cli import main as cli
    from pipeline.tools.generator import write_jsonl
    from pipeline.adapters.kafka.worker_process import settings_env

    settings = make_settings(batch_max=1000, sweep_seconds=3600, refit_seconds=3600)
    stream = generate(customers=300, days=120, seed=5)
    path = tmp_path / "history.jsonl"
    write_jsonl(stream, path)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert cli(["produce", str(path)]) == 1   # 1: the planted invalid lines are rejected (reported)
    worker = start_worker(settings)
    wait_all(settings, worker, timeout=300)
    late = too_late(settings)
    figures("backfill of 120 days through Kafka", records=len(stream.records), too_late=late)
    assert late == 0
    # as `cxpulse replay history.jsonl`: each record on the topic of its own type, where
    # `cxpulse produce` sends it (a planted wrong-topic record is then a valid record)
    out = check_equals_replay(settings, [r.value for r in stream.records], None)
    figures("backfill of 120 days through Kafka: equal to replay", **out)


def test_backfill_produced_while_a_worker_runs(make_settings, start_worker):
    """The demo's order: a worker runs first (its partitions empty and caught up), then 60 days
    of history are produced in one go, far faster than real time (days of event time per
    second). With the default lateness bound nothing is `too_late`: an empty input partition
    holds its group until the broker confirms it has nothing more (an end offset asked after
    the waiting records came, not the stale one of the last fetch), and the final scores
    equal replay's."""
    settings = make_settings(sweep_seconds=3600, refit_seconds=3600)   # lateness: the 1 h default
    assert settings.lateness_seconds == 3600
    stream = generate(customers=800, days=60, seed=31)
    worker = start_worker(settings)
    assert wait_in_group(worker), worker.log_tail()
    topic_for = settings.topic_for_type
    started = time.monotonic()
    kafka_io.produce(settings, [(topic_for[r.kind], r.key, r.value) for r in stream.records])
    produced_s = time.monotonic() - started
    wait_all(settings, worker, timeout=600)
    caught_up_s = time.monotonic() - started
    late = too_late(settings)
    dead = Counter(orjson.loads(m.value)["reason"] for m in kafka_io.read_topic(settings, settings.topic_deadletter))
    figures("backfill produced while a worker runs", records=len(stream.records), invalid=stream.n_invalid,
            too_late=late, dead_letters=dict(dead), produced_s=round(produced_s, 1),
            caught_up_s=round(caught_up_s, 1), applied=applied_total(worker))
    assert late == 0, f"{late} of {len(stream.records)} records dead-lettered too_late"
    assert sum(dead.values()) == stream.n_invalid
    sent_to = {r.value: topic_for[r.kind] for r in stream.records}
    out = check_equals_replay(settings, [r.value for r in stream.records], sent_to.__getitem__)
    assert out["applied"] == applied_total(worker) == stream.n_valid - stream.n_duplicates
    figures("backfill produced while a worker runs: equal to replay", **out)
