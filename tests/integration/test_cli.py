"""The operator CLI (`cxpulse ...`), driven in-process through `pipeline.tools.cli.main` with the
settings given as CXPULSE_* variables: against the real broker, a real worker and chDB."""
from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.fetch_requests import count_fetch_requests
from tests.http_probe import http_status

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.clickhouse import rows
from pipeline.tools.cli import build_parser, has_module, main
from pipeline.bootstrap import population, scoring_params
from pipeline.config import Settings
from pipeline.tools.generator import generate
from pipeline.service.processor import Core
from pipeline.service.replay import replay
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from pipeline.adapters.clickhouse.tables import CUSTOMER_TABLES
from pipeline.adapters.kafka.worker_process import settings_env

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS = ["worker", "broker", "demo", "replay", "produce", "tail", "score", "erase", "doctor", "ack", "assign",
            "contact", "close", "cases"]


def use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Make `load()` inside the CLI see exactly these settings."""
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def optional_commands() -> list[str]:
    return [c for c, mod in (("bench", "pipeline.tools.bench"), ("evaluate", "pipeline.tools.evaluate")) if has_module(mod)]


# --------------------------------------------------------------------------- no broker


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS + optional_commands():
        assert f"    {command}" in out, command


@pytest.mark.parametrize("command", COMMANDS + optional_commands())
def test_every_command_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"cxpulse {command}" in out and "examples:" in out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["tail", "orders"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def good_lines(customers: int = 12, days: int = 10, seed: int = 5) -> list[bytes]:
    stream = generate(customers=customers, days=days, seed=seed, invalid_ratio=0.0)
    return [r.value for r in stream.records if r.valid]


BAD_LINES = [
    b"{not json",
    b'{"type": "order", "customer_id": "C1"}',
    b'{"type": "touchpoint", "event_id": "e1", "customer_id": "C1", "occurred_at": "2026-01-01T00:00:00",'
    b' "channel": "web", "schema_version": 1, "stage": "usage", "kind": "visit"}',   # no offset
    b'{"type": "order", "padding": "' + b"x" * 70_000 + b'"}',                      # too large
]


def write_events(path: Path, good: list[bytes]) -> dict[int, bytes]:
    """good lines with BAD_LINES (and a blank line) mixed in; returns {line number: bad line}."""
    lines = list(good)
    bad_at = {}
    for i, bad in enumerate(BAD_LINES):
        at = min(len(lines), 3 + 5 * i)
        lines.insert(at, bad)
    lines.insert(1, b"")
    for n, line in enumerate(lines, start=1):
        if line in BAD_LINES:
            bad_at[n] = line
    path.write_bytes(b"\n".join(lines) + b"\n")
    return bad_at


def test_case_actions_check_their_codes_before_anything_is_sent(capsys, monkeypatch):
    # an unreachable broker: a bad code must fail before any lookup or send
    use(monkeypatch, Settings(kafka_port=free_port()))
    code, _, err = run(capsys, "ack", "not-an-alert", "--staff", "S017", "--customer", "C1")
    assert code == 2 and "alert_id" in err
    code, _, err = run(capsys, "ack", "a" * 20, "--staff", "Anna Schmidt", "--customer", "C1")
    assert code == 2 and "staff_id" in err
    code, _, err = run(capsys, "contact", "a" * 20, "--staff", "S017", "--channel", "pigeon", "--customer", "C1")
    assert code == 2 and "channel" in err
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["close", "a" * 20, "--staff", "S017", "--outcome", "happy", "--action", "callback"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
    args = build_parser().parse_args(["close", "a" * 20, "--staff", "S017", "--outcome", "retained",
                                      "--action", "callback"])
    assert (args.case_action, args.outcome, args.playbook_action) == ("closed", "retained", "callback")


def test_produce_dry_run_reports_rejects_by_line(tmp_path, capsys, monkeypatch):
    # --dry-run validates only: no broker is contacted (this port has none).
    use(monkeypatch, Settings(data_dir=tmp_path / "data", kafka_port=free_port()))
    good = good_lines()
    bad_at = write_events(tmp_path / "events.jsonl", good)
    code, out, err = run(capsys, "produce", str(tmp_path / "events.jsonl"), "--dry-run")
    assert code == 1
    assert f"{len(good) + len(BAD_LINES)} records read: {len(good)} valid, {len(BAD_LINES)} rejected" in out
    assert "nothing sent" in out
    for n in bad_at:
        assert f"events.jsonl:{n}: rejected:" in err
    assert "Invalid JSON" in err and "occurred_at" in err and "Field required" in err and "exceeds" in err

    (tmp_path / "clean.jsonl").write_bytes(b"\n".join(good))
    code, out, _ = run(capsys, "produce", str(tmp_path / "clean.jsonl"), "--dry-run")
    assert code == 0 and f"{len(good)} valid, 0 rejected" in out


def test_produce_missing_file(tmp_path, capsys):
    code, _, err = run(capsys, "produce", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err


def test_score_without_a_worker(capsys):
    port = free_port()
    code, _, err = run(capsys, "score", "C000001", "--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert code == 1
    assert f"no worker answers at http://127.0.0.1:{port}" in err and "cxpulse worker" in err


def test_doctor_reports_failures_with_fixes(tmp_path, capsys, monkeypatch):
    settings = Settings(data_dir=tmp_path / "data", kafka_port=free_port(), web_port=free_port())
    use(monkeypatch, settings)
    code, out, _ = run(capsys, "doctor", "--timeout", "1")
    assert code == 1
    assert "FAIL" in out and "how to fix" in out
    assert "no broker answers" in out and "CXPULSE_KAFKA_BOOTSTRAP" in out
    assert "`cxpulse broker`" in out and "noida-db" not in out   # a command that works as written
    # The parts that do work are still checked and reported OK.
    assert "reachable, migrations" in out and "free (no worker running here)" in out
    for name in ("python", "faust", "kafka-python", "clickhouse-connect", "chdb"):
        assert name in out


# --------------------------------------------------------------------------- real broker


def end_total(settings: Settings, names: list[str]) -> int:
    return sum(topics.end_offsets(settings, names).values())


@pytest.mark.integration
def test_produce_tail_score_doctor_erase(make_settings, start_worker, tmp_path, capsys, monkeypatch):
    settings = make_settings(lateness_seconds=40 * 86400, sweep_seconds=3600)
    use(monkeypatch, settings)
    good = good_lines()
    bad_at = write_events(tmp_path / "events.jsonl", good)
    inputs = list(settings.input_topics)

    # --strict: one bad line and nothing is sent.
    code, out, err = run(capsys, "produce", str(tmp_path / "events.jsonl"), "--strict")
    assert code == 1 and "nothing sent (--strict" in out
    assert len(err.strip().splitlines()) == len(bad_at)
    assert end_total(settings, inputs) == 0

    # Without --strict the valid lines go to the topic of their type, keyed by customer.
    code, out, err = run(capsys, "produce", str(tmp_path / "events.jsonl"))
    assert code == 1  # there were rejects
    assert f"sent {len(good)} to {settings.bootstrap}" in out
    for n in bad_at:
        assert f":{n}: rejected:" in err
    sent = [m for t in inputs for m in kafka_io.read_topic(settings, t)]
    assert len(sent) == len(good)
    for m in sent:
        record = orjson.loads(m.value)
        assert settings.topic_for_type[record["type"]] == m.topic
        assert m.key.decode() == record["customer_id"]
    customers = sorted({orjson.loads(v)["customer_id"] for v in good})

    worker = start_worker(settings)
    topics.wait_caught_up(settings, settings.app_id, inputs, timeout=120, alive=lambda: worker.alive)

    # tail: from the beginning, stop after N records.
    code, out, _ = run(capsys, "tail", "scores", "--from-beginning", "--max", "3", "--timeout", "30")
    assert code == 0
    assert out.count(f"{settings.topic_scores} partition") == 3
    assert '"customer_id":' in out and '"churn_risk":' in out
    code, out, _ = run(capsys, "tail", "scores", "--from-beginning", "--max", "2", "--raw", "--timeout", "30")
    assert code == 0 and [orjson.loads(line)["schema_version"] for line in out.splitlines()] == [1, 1]
    # Only valid records were sent, so there is no dead letter: --max is not reached.
    code, out, err = run(capsys, "tail", "deadletter", "--from-beginning", "--max", "1", "--timeout", "1.5")
    assert code == 1 and out == "" and "only 0 of 1 records" in err

    # score: the worker's view of a customer, with its drivers.
    latest = {}
    for m in kafka_io.read_topic(settings, settings.topic_scores):
        latest[m.key.decode()] = orjson.loads(m.value)
    cid = max(customers, key=lambda c: len(latest[c]["churn_drivers"]))
    code, out, _ = run(capsys, "score", cid)
    assert code == 0
    assert f"customer {cid}" in out and "CXI" in out and "churn risk" in out
    assert f"tier {latest[cid]['tier']}" in out
    for driver in latest[cid]["churn_drivers"]:
        assert driver["factor"] in out
    code, out, _ = run(capsys, "score", cid, "--json")
    assert code == 0 and orjson.loads(out)["customer_id"] == cid
    code, _, err = run(capsys, "score", "no-such-customer")
    assert code == 1 and "unknown customer 'no-such-customer'" in err

    # doctor, with the worker running: all OK (its chDB is in use by it, which is fine).
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    assert "FAIL" not in out and "all" in out and "checks passed" in out
    assert f"topic {settings.topic_scores}" in out and "co-partitioning" in out
    assert "in use by a running worker" in out and "answers /healthz" in out

    # erase while the worker runs: Kafka steps done, the embedded chDB is locked -> exit 1.
    code, out, err = run(capsys, "erase", cid)
    assert code == 1
    assert f"tombstone published on {settings.topic_scores}" in out
    assert f"erasure request published on {settings.topic_erasures}" in out
    assert "NOT erased" in err and "Stop the worker" in err
    requests = [m for m in kafka_io.read_topic(settings, settings.topic_erasures)]
    assert [m.key.decode() for m in requests] == [cid]
    assert orjson.loads(requests[0].value)["customer_id"] == cid
    deadline = time.monotonic() + 30
    while http_status(f"{worker.url}/customers/{cid}") != 404:  # the worker dropped the state
        assert time.monotonic() < deadline, "the worker did not erase the customer's state"
        time.sleep(0.2)
    last = [m for m in kafka_io.read_topic(settings, settings.topic_scores) if m.key.decode() == cid][-1]
    assert last.value is None

    # With the worker stopped, erase reaches the embedded chDB too.
    worker.stop()
    with ClickHouseSink(settings.dsn) as sink:
        held = sum(sink.client.command(f"SELECT count() FROM {t} WHERE customer_id = '{cid}'")
                   for t in CUSTOMER_TABLES)
    assert held > 0
    code, out, err = run(capsys, "erase", cid)
    assert code == 0, err
    assert f"ClickHouse: {held} rows deleted" in out
    with ClickHouseSink(settings.dsn) as sink:
        for t in CUSTOMER_TABLES:
            assert sink.client.command(f"SELECT count() FROM {t} WHERE customer_id = '{cid}'") == 0, t
        other = customers[0] if customers[0] != cid else customers[1]
        assert sink.client.command(f"SELECT count() FROM cx_scores_latest WHERE customer_id = '{other}'") > 0
        assert sink.client.command(f"SELECT count() FROM cx_erasures WHERE customer_id = '{cid}'") == 1

    # doctor with the worker stopped: the port is free and chDB opens here.
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    assert "reachable, migrations" in out and "free (no worker running here)" in out


@pytest.mark.integration
def test_tail_of_a_missing_topic(tmp_path, capsys, monkeypatch, broker):
    settings = Settings(data_dir=tmp_path / "data", kafka_port=broker.settings.kafka_port,
                        topic_alerts="no-such-topic-here")
    use(monkeypatch, settings)
    code, _, err = run(capsys, "tail", "alerts", "--timeout", "2")
    assert code == 1 and "topic no-such-topic-here does not exist" in err and "cxpulse doctor" in err


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_idle_tail_does_not_spin_on_fetches_and_shows_a_new_record(tmp_path, monkeypatch, broker):
    """The embedded broker answers an empty fetch at once; kafka-python's poll(timeout) then
    sent fetch after fetch (0.8 of a core). `_follow` polls without waiting and sleeps
    TAIL_IDLE_SECONDS when nothing came: a few fetches a second, and a record still shows."""
    from kafka import KafkaProducer
    from kafka.net.connection import KafkaConnection

    from kafka.admin import KafkaAdminClient, NewTopic

    from pipeline.tools import cli

    settings = Settings(data_dir=tmp_path / "data", kafka_port=broker.settings.kafka_port,
                        topic_scores=f"idle-tail-{uuid.uuid4().hex[:8]}")
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:   # this topic only: the session broker's shared default topics keep the partitions other tests expect
        admin.create_topics([NewTopic(settings.topic_scores, 2, 1)])
    finally:
        admin.close()
    fetches = count_fetch_requests(monkeypatch, KafkaConnection, "send_request")
    idle = 2.0

    def produce_later():
        time.sleep(idle)
        p = KafkaProducer(bootstrap_servers=settings.bootstrap)
        p.send(settings.topic_scores, key=b"C1", value=b'{"customer_id": "C1"}').get(10)
        p.close()

    threading.Thread(target=produce_later, daemon=True).start()
    started = time.monotonic()
    follow = cli._follow(settings, settings.topic_scores, False, started + 20)
    first = next(follow)
    seconds = time.monotonic() - started
    follow.close()
    assert first.key == b"C1"
    assert idle <= seconds < idle + 5
    # ~1/TAIL_IDLE_SECONDS fetches a second while idle (unpatched: thousands a second)
    assert fetches[0] <= 4 * seconds / cli.TAIL_IDLE_SECONDS, f"{fetches[0]} fetch requests in {seconds:.1f} s"


# --------------------------------------------------------------------------- charts


class RecordingCore(Core):
    """The worker's core, keeping every batch result (what the worker writes to ClickHouse)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(scoring_params(settings), population(settings), settings.topic_type)
        self.results = []

    def process(self, *args, **kwargs):
        result = super().process(*args, **kwargs)
        self.results.append(result)
        return result

    def sweep(self, *args, **kwargs):
        result = super().sweep(*args, **kwargs)
        self.results.append(result)
        return result


def test_write_charts(tmp_path):
    from pipeline.tools.charts import write_charts

    settings = Settings(data_dir=tmp_path / "data")
    stream = generate(customers=150, days=60, seed=3, invalid_ratio=0.0)
    core = RecordingCore(settings)
    replay(stream.values(), core, clock=time.time)
    batch: dict[str, list[dict]] = {"cx_events": [], "cx_scores_history": [], "cx_alerts": [], "cx_complaints": []}
    for r in core.results:  # the rows the worker's sink_batch builds
        batch["cx_events"] += [rows.event_row(ev, tier) for ev, tier in r.events]
        batch["cx_scores_history"] += [rows.score_row(s) for s in r.scores]
        batch["cx_alerts"] += [rows.alert_row(a) for a in r.alerts]
        batch["cx_complaints"] += [rows.complaint_row(c) for c in r.complaints]
    assert all(batch.values()), {k: len(v) for k, v in batch.items()}
    assert any(a["type"] == "churn_risk" for a in batch["cx_alerts"])

    with ClickHouseSink(f"chdb://{tmp_path / 'ch'}") as sink:
        sink.write(batch)
        paths = write_charts(sink.client, tmp_path / "charts")
        assert [p.name for p in paths] == ["cxi_by_tier.png", "churn_risk_alerted.png", "sla_by_channel.png"]
        for p in paths:
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert p.stat().st_size > 1024, p
        # An empty model still gives the same (non-empty) files.
        for t in ("cx_scores_latest", "cx_scores_history", "cx_alerts", "cx_complaints"):
            sink.client.command(f"TRUNCATE TABLE {t}")
        empty = write_charts(sink.client, tmp_path / "empty")
        assert [p.name for p in empty] == [p.name for p in paths]
        assert all(p.stat().st_size > 1024 for p in empty)


@pytest.mark.skipif(not has_module("pipeline.tools.evaluate"), reason="pipeline.tools.evaluate is not installed")
def test_evaluate_subcommand(tmp_path, capsys, monkeypatch):
    use(monkeypatch, Settings(data_dir=tmp_path / "data"))
    out_json = tmp_path / "eval.json"
    code, out, _ = run(capsys, "evaluate", "--customers", "100", "--days", "60", "--horizon-days", "0",
                       "--json", str(out_json))
    assert code == 0
    assert "ROC AUC of churn_risk" in out and f"figures written to {out_json}" in out
    figures = orjson.loads(out_json.read_bytes())
    assert figures["customers"] == 100 and 0.0 <= figures["auc"] <= 1.0
    code, _, err = run(capsys, "evaluate", "--transactions", str(tmp_path / "x.csv"))
    assert code == 2 and "--cutoff" in err
    bad = tmp_path / "x.csv"
    bad.write_text("C1,2024-05-01,1\nC2,2024-05-02,abc\n")
    code, _, err = run(capsys, "evaluate", "--transactions", str(bad), "--cutoff", "2024-05-01")
    assert code == 2 and "x.csv:2: bad amount 'abc'" in err          # the line, not a traceback
    code, _, err = run(capsys, "evaluate", "--transactions", str(bad), "--cutoff", "2024-5-1")
    assert code == 2 and "cutoff '2024-5-1': expected an ISO date" in err
    with pytest.raises(SystemExit) as exit_:   # argparse's usage error
        run(capsys, "evaluate", "--transactions", str(bad), "--cutoff", "2024-05-01", "--columns", "a,,b")
    assert exit_.value.code == 2 and "comma-separated column names" in capsys.readouterr().err


@pytest.mark.integration
def test_doctor_finds_topic_layout_problems(make_settings, capsys, monkeypatch):
    settings = make_settings()  # every topic with 2 partitions
    wrong = settings.model_copy(update={"partitions": 3, "topic_alerts": settings.topic_alerts + "-missing"})
    use(monkeypatch, wrong)
    code, out, _ = run(capsys, "doctor", "--timeout", "3")
    assert code == 1
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "FAIL" in lines[f"topic {wrong.topic_alerts}"] and "missing" in lines[f"topic {wrong.topic_alerts}"]
    assert "2 partitions, expected 3" in lines[f"topic {wrong.topic_orders}"]
    assert "CXPULSE_PARTITIONS=2" in lines[f"topic {wrong.topic_orders}"]
    assert "OK" in lines["broker"] and "OK" in lines["co-partitioning"]
    # doctor only looks: it did not create the missing topic
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=wrong.bootstrap)
    try:
        assert wrong.topic_alerts not in admin.list_topics()
    finally:
        admin.close()


def _fresh_settings(broker, tmp_path: Path, **overrides) -> Settings:
    """Settings of a first run: unique topics that do not exist yet, a data dir whose parents do not exist."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    base = dict(kafka_port=broker.settings.kafka_port, data_dir=tmp_path / "new" / "deep" / "data",
                web_port=free_port(), app_id=f"cxpulse-first-{tag}", partitions=3, batch_within=0.05,
                commit_interval=0.2, sweep_seconds=3600,
                **{f"topic_{t}": f"{tag}.{t}" for t in ("touchpoints", "orders", "complaints", "scores",
                                                          "alerts", "deadletter", "erasures", "actions",
                                                          "models")})
    base.update(overrides)
    return Settings(**base)


@pytest.mark.integration
def test_worker_first_run_creates_its_data_dir_and_topics(broker, tmp_path):
    """`cxpulse worker` on a fresh checkout, before any topic exists (broker, worker, then
    produce): it creates the data folder with its parents and every topic with
    CXPULSE_PARTITIONS partitions, and the doctor is then content with the layout."""
    from pipeline.adapters.kafka.worker_process import WorkerProcess

    settings = _fresh_settings(broker, tmp_path)
    worker = WorkerProcess(settings, log_path=tmp_path / "worker.log")   # the log outside the data dir
    try:
        worker.start()
        assert worker.alive and (settings.data_dir / "worker").is_dir()
        counts = topics.partition_counts(settings, list(topics.topic_specs(settings)))
        assert counts == {t: n for t, (n, _) in topics.topic_specs(settings).items()}, counts   # 3, cx.models 1
    finally:
        worker.stop()


@pytest.mark.integration
@pytest.mark.parametrize("layout,message", [
    ({"touchpoints": 3, "orders": 2, "complaints": 3}, "same partition count"),
    ({"touchpoints": 2, "orders": 2, "complaints": 2}, "CXPULSE_PARTITIONS=3"),
])
def test_worker_refuses_input_topics_it_cannot_use(broker, tmp_path, layout, message):
    import subprocess
    import sys

    from kafka.admin import KafkaAdminClient, NewTopic

    from pipeline.adapters.kafka.worker_process import settings_env

    settings = _fresh_settings(broker, tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        admin.create_topics([NewTopic(getattr(settings, f"topic_{t}"), n, 1) for t, n in layout.items()])
    finally:
        admin.close()
    import os

    done = subprocess.run([sys.executable, "-m", "pipeline.tools.cli", "worker"], env={**os.environ, **settings_env(settings)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr and "cxpulse worker:" in done.stderr, done.stderr
