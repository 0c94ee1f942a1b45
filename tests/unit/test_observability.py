"""Observability and deployment as code: metrics, Prometheus rules, Alertmanager,
Grafana provisioning, docker-compose.

External tools (promtool, docker-compose, amtool) come from Debian packages installed by
deploy/install-tools.sh (`make test`). Without promtool or docker-compose the tests that
need them are skipped locally, and fail under CI=true.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pipeline.adapters.observability import metrics as M

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RUNBOOKS = ROOT / "README.md"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is required under CI (deploy/install-tools.sh installs it)")
    pytest.skip(f"{name} not installed (run deploy/install-tools.sh or `make tools`)")


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def alert_rules(path: Path) -> dict[str, str]:
    """alertname -> the rule's YAML block (files here list one `- alert:` per rule)."""
    text = path.read_text()
    parts = re.split(r"^\s*- alert:\s*(\S+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def grafana_alert_rules() -> dict[str, str]:
    text = (GRAFANA / "provisioning" / "alerting" / "rules.yml").read_text()
    parts = re.split(r"^\s*- uid:\s*\S+\s*$", text, flags=re.M)[1:]
    out = {}
    for block in parts:
        title = re.search(r"^\s*title:\s*(\S+)", block, flags=re.M)
        assert title, block
        out[title.group(1)] = block
    return out


# --- pipeline/adapters/observability/metrics.py ---------------------------------------------------------------

def families(body: bytes) -> dict[str, object]:
    """Family name as shown on the `# TYPE` line (counters with `_total`) -> family."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body.decode(), flags=re.M))
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    out = {}
    for name in types:
        base = name[: -len("_total")] if name.endswith("_total") and types[name] == "counter" else name
        out[name] = fams[base]
    return out


def test_render_exposes_exactly_metric_names():
    body, content_type = M.render()
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    exposed = set(families(body))
    assert exposed == set(M.METRIC_NAMES), (
        f"missing from /metrics: {set(M.METRIC_NAMES) - exposed}; not listed in METRIC_NAMES: "
        f"{exposed - set(M.METRIC_NAMES)}")
    for name in M.CXPULSE_METRIC_NAMES:
        assert name.startswith("cxpulse_")
    assert "process_cpu_seconds_total" in exposed and "python_info" in exposed
    assert "_created" not in body.decode()


def test_counter_names_end_in_total_and_units_are_base_units():
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", M.render()[0].decode(), flags=re.M))
    for name in M.CXPULSE_METRIC_NAMES:
        if types[name] == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        assert not re.search(r"_(milliseconds|ms|percent|minutes|hours|kilobytes|megabytes)(_|$)", name), name


def test_no_high_cardinality_labels():
    allowed = {"topic", "partition", "reason", "table", "type", "tier", "severity", "le", "version",
               # runtime collectors
               "generation", "implementation", "major", "minor", "patchlevel"}
    for fam in text_string_to_metric_families(M.render()[0].decode()):
        for sample in fam.samples:
            assert set(sample.labels) <= allowed, (fam.name, sample.labels)


def fresh() -> tuple[M.Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return M.Metrics(registry=registry, topics=["t.a", "t.b"]), registry


def test_known_label_combinations_exist_at_zero():
    m, r = fresh()
    for topic in ("t.a", "t.b"):
        assert r.get_sample_value("cxpulse_events_consumed_total", {"topic": topic}) == 0
        assert r.get_sample_value("cxpulse_events_applied_total", {"topic": topic}) == 0
        assert r.get_sample_value("cxpulse_events_duplicate_total", {"topic": topic}) == 0
        for reason in M.DEADLETTER_REASONS:
            assert r.get_sample_value("cxpulse_events_deadlettered_total", {"topic": topic, "reason": reason}) == 0
    for t in M.ALERT_TYPES:
        for tier in M.TIERS:
            for sev in M.ALERT_SEVERITIES:
                labels = {"type": t, "tier": tier, "severity": sev}
                assert r.get_sample_value("cxpulse_alerts_raised_total", labels) == 0
                assert r.get_sample_value("cxpulse_alerts_firing", labels) == 0
    for tier in M.TIERS:
        assert r.get_sample_value("cxpulse_complaints_past_sla", {"tier": tier}) == 0
        assert r.get_sample_value("cxpulse_churn_risk_ratio_count", {"tier": tier}) == 0
    for table in M.SINK_TABLES:
        assert r.get_sample_value("cxpulse_sink_rows_total", {"table": table}) == 0


def test_consumption_methods_count():
    m, r = fresh()
    m.consumed("t.a", 10)
    m.consumed("t.a")
    m.applied("t.a", 7)
    m.duplicate("t.a", 2)
    m.deadlettered("t.a", "invalid_json")
    m.deadlettered("t.a", "something-new", 3)  # unknown reasons fold into "other"
    assert r.get_sample_value("cxpulse_events_consumed_total", {"topic": "t.a"}) == 11
    assert r.get_sample_value("cxpulse_events_applied_total", {"topic": "t.a"}) == 7
    assert r.get_sample_value("cxpulse_events_duplicate_total", {"topic": "t.a"}) == 2
    assert r.get_sample_value("cxpulse_events_deadlettered_total", {"topic": "t.a", "reason": "invalid_json"}) == 1
    assert r.get_sample_value("cxpulse_events_deadlettered_total", {"topic": "t.a", "reason": "other"}) == 3
    assert r.get_sample_value("cxpulse_last_applied_timestamp_seconds") == pytest.approx(time.time(), abs=5)


def test_event_time_lag_tracks_last_applied_event():
    from datetime import datetime, timedelta, timezone
    m, r = fresh()
    assert r.get_sample_value("cxpulse_event_time_lag_seconds") == 0
    m.applied("t.a", 1, last_occurred_at=datetime.now(timezone.utc) - timedelta(seconds=120))
    assert r.get_sample_value("cxpulse_event_time_lag_seconds") == pytest.approx(120, abs=5)
    m.event_time(time.time() - 30)
    assert r.get_sample_value("cxpulse_event_time_lag_seconds") == pytest.approx(30, abs=5)


def test_batch_observes_size_once_and_latency_per_event():
    m, r = fresh()
    m.batch(500, 0.003)
    m.batch(2, 0.2)
    m.batch(0, 1.0)  # an empty batch is no batch
    assert r.get_sample_value("cxpulse_batch_size_events_count") == 2
    assert r.get_sample_value("cxpulse_batch_size_events_sum") == 502
    assert r.get_sample_value("cxpulse_processing_latency_seconds_count") == 502
    assert r.get_sample_value("cxpulse_processing_latency_seconds_sum") == pytest.approx(500 * 0.003 + 2 * 0.2)
    assert r.get_sample_value("cxpulse_processing_latency_seconds_bucket", {"le": "0.0025"}) == 0
    assert r.get_sample_value("cxpulse_processing_latency_seconds_bucket", {"le": "0.005"}) == 500
    assert r.get_sample_value("cxpulse_processing_latency_seconds_bucket", {"le": "0.25"}) == 502
    # on a bucket bound the observation counts in that bucket (le = less or equal)
    m.processing_latency(0.01, 3)
    assert r.get_sample_value("cxpulse_processing_latency_seconds_bucket", {"le": "0.01"}) == 503


def test_sla_at_risk_is_a_labelled_alert_type_from_the_start():
    m, r = fresh()
    at_risk = {"type": "sla_at_risk", "tier": "platinum", "severity": "critical"}
    assert r.get_sample_value("cxpulse_alerts_firing", at_risk) == 0   # pre-initialised: no gaps in panels
    m.alert_raised("sla_at_risk", "platinum", "critical")
    assert r.get_sample_value("cxpulse_alerts_raised_total", at_risk) == 1
    assert r.get_sample_value("cxpulse_alerts_firing", at_risk) == 1
    m.alert_resolved("sla_at_risk", "platinum", "critical")
    assert r.get_sample_value("cxpulse_alerts_firing", at_risk) == 0


def test_consumer_lag_replaces_revoked_partitions():
    m, r = fresh()
    m.consumer_lag({("t.a", 0): 5, ("t.a", 1): 7})
    assert r.get_sample_value("cxpulse_consumer_lag_messages", {"topic": "t.a", "partition": "1"}) == 7
    m.consumer_lag({("t.a", 0): 3})
    assert r.get_sample_value("cxpulse_consumer_lag_messages", {"topic": "t.a", "partition": "0"}) == 3
    assert r.get_sample_value("cxpulse_consumer_lag_messages", {"topic": "t.a", "partition": "1"}) is None


def test_alert_and_sla_methods():
    m, r = fresh()
    gold_warn = {"type": "churn_risk", "tier": "gold", "severity": "warning"}
    m.alert_raised("churn_risk", "gold", "warning")
    m.alert_raised("churn_risk", "gold", "warning")
    m.alert_resolved("churn_risk", "gold", "warning")
    assert r.get_sample_value("cxpulse_alerts_raised_total", gold_warn) == 2
    assert r.get_sample_value("cxpulse_alerts_firing", gold_warn) == 1
    m.alert_resolved("churn_risk", "gold", "warning")
    m.alert_resolved("churn_risk", "gold", "warning")  # never below zero
    assert r.get_sample_value("cxpulse_alerts_firing", gold_warn) == 0
    m.alerts_firing({("sla_breach", "platinum", "critical"): 4})
    assert r.get_sample_value("cxpulse_alerts_firing",
                              {"type": "sla_breach", "tier": "platinum", "severity": "critical"}) == 4
    m.alerts_firing({})
    assert r.get_sample_value("cxpulse_alerts_firing",
                              {"type": "sla_breach", "tier": "platinum", "severity": "critical"}) == 0
    m.complaints_past_sla({"gold": 3, "standard": 1})
    assert r.get_sample_value("cxpulse_complaints_past_sla", {"tier": "gold"}) == 3
    m.complaints_past_sla({"standard": 2})
    assert r.get_sample_value("cxpulse_complaints_past_sla", {"tier": "gold"}) == 0
    assert r.get_sample_value("cxpulse_complaints_past_sla", {"tier": "standard"}) == 2
    m.scores_published(3)
    assert r.get_sample_value("cxpulse_scores_published_total") == 3
    for risk in (0.05, 0.55, 0.95, 1.7):
        m.churn_risk(risk, "silver")
    assert r.get_sample_value("cxpulse_churn_risk_ratio_count", {"tier": "silver"}) == 4
    assert r.get_sample_value("cxpulse_churn_risk_ratio_bucket", {"tier": "silver", "le": "0.1"}) == 1
    assert r.get_sample_value("cxpulse_churn_risk_ratio_bucket", {"tier": "silver", "le": "0.9"}) == 2
    assert r.get_sample_value("cxpulse_churn_risk_ratio_bucket", {"tier": "silver", "le": "1.0"}) == 4


def test_sink_methods_match_the_sink_protocol():
    m, r = fresh()
    m.sink_rows("cx_events", 100)
    m.sink_rows("cx_events", 20)
    m.sink_flush()
    m.sink_flush(0.2)
    m.sink_failure()
    m.sink_retry()
    m.sink_queue(42)
    assert r.get_sample_value("cxpulse_sink_rows_total", {"table": "cx_events"}) == 120
    assert r.get_sample_value("cxpulse_sink_flushes_total") == 2
    assert r.get_sample_value("cxpulse_sink_flush_duration_seconds_count") == 1
    assert r.get_sample_value("cxpulse_sink_failures_total") == 1
    assert r.get_sample_value("cxpulse_sink_retries_total") == 1
    assert r.get_sample_value("cxpulse_sink_queue_rows") == 42
    try:
        from pipeline.adapters.clickhouse.sink import SinkMetrics
    except ImportError:
        return
    for name in ("sink_rows", "sink_flush", "sink_failure", "sink_retry", "sink_queue"):
        assert hasattr(SinkMetrics, name) and callable(getattr(m, name))


# --- names used by the deploy files ---------------------------------------------------------

def test_every_referenced_metric_is_exported():
    referenced = M.referenced_metric_names(DEPLOY)
    # sanity: the scan sees rules and both dashboards
    assert {"cxpulse_events_consumed_total", "cxpulse_consumer_lag_messages", "cxpulse_sink_failures_total",
            "cxpulse_processing_latency_seconds", "cxpulse_churn_risk_ratio",
            "process_resident_memory_bytes"} <= referenced
    assert referenced <= set(M.METRIC_NAMES), f"unknown metrics: {referenced - set(M.METRIC_NAMES)}"


def test_every_referenced_recording_rule_is_defined():
    defined = M.recording_rule_names(DEPLOY)
    used = M.referenced_recording_rules(DEPLOY)
    assert "job:cxpulse_events_deadlettered:ratio_rate5m" in used
    assert used <= defined, f"undefined recording rules: {used - defined}"
    # recording rules that no alert or dashboard uses are dead weight
    inputs_only = {"job:cxpulse_events_consumed:rate5m", "job:cxpulse_events_deadlettered:rate5m",
                   "job_tier:cxpulse_churn_alerts_raised:rate6h"}
    assert defined - used <= inputs_only, f"unused recording rules: {defined - used - inputs_only}"


def test_referenced_metric_names_flags_unknown_names(tmp_path):
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "x_rules.yml").write_text(
        "groups:\n- name: g\n  rules:\n  - record: job:cxpulse_foo:rate5m\n"
        "    expr: sum(rate(cxpulse_foo_total[5m])) + histogram_quantile(0.9, rate(cxpulse_lat_seconds_bucket[1m]))\n"
        "  # cxpulse_in_a_comment_total\n")
    (tmp_path / "grafana" / "dashboards").mkdir(parents=True)
    (tmp_path / "grafana" / "dashboards" / "d.json").write_text(json.dumps(
        {"panels": [{"type": "row", "panels": [{"targets": [{"expr": "up + cxpulse_bar and job:cxpulse_foo:rate5m"}]}]},
                    {"targets": [{"rawSql": "SELECT cxpulse_not_promql FROM t"}]}]}))
    assert M.referenced_metric_names(tmp_path) == {"cxpulse_foo_total", "cxpulse_lat_seconds", "cxpulse_bar"}
    assert M.recording_rule_names(tmp_path) == {"job:cxpulse_foo:rate5m"}
    assert M.referenced_recording_rules(tmp_path) == {"job:cxpulse_foo:rate5m"}


# --- Prometheus -------------------------------------------------------------------------------

def test_promtool_check_config():
    run(tool("promtool"), "check", "config", str(PROM_DIR / "prometheus.yml"))


def test_promtool_check_rules():
    out = run(tool("promtool"), "check", "rules", str(PROM_DIR / "recording_rules.yml"),
              str(PROM_DIR / "alert_rules.yml")).stdout
    assert "SUCCESS" in out


def test_promtool_rule_unit_tests():
    tests = sorted(PROM_DIR.glob("*test*.yml"))
    assert {p.name for p in tests} >= {"alert_rules_test.yml", "recording_rules_test.yml"}
    run(tool("promtool"), "test", "rules", *map(str, tests))


def test_scrape_config_targets_the_workers():
    text = (PROM_DIR / "prometheus.yml").read_text()
    assert "job_name: cxpulse" in text
    for target in ("cxpulse-worker-1:6066", "cxpulse-worker-2:6066", "alertmanager:9093"):
        assert target in text
    for rules in ("recording_rules.yml", "alert_rules.yml"):
        assert re.search(rf"^\s*- {rules}$", text, flags=re.M)


REQUIRED_ALERTS = {"CxpulsePipelineDown", "CxpulseConsumerLagGrowing", "CxpulseDeadLetterRatioHigh",
                   "CxpulseSinkFailing", "CxpulseSlaBreachesRising", "CxpulseHighTierComplaintsAtRisk",
                   "CxpulseHighTierChurnAlertsSpiking", "CxpulseChurnTrainingIncomplete",
                   "CxpulseChurnModelRefused", "CxpulseEarlyWarningWithdrawn"}


def test_alert_rules_have_severity_summary_and_runbook():
    rules = alert_rules(PROM_DIR / "alert_rules.yml")
    assert set(rules) == REQUIRED_ALERTS
    for name, block in rules.items():
        assert re.search(r"^\s*severity:\s*(warning|critical)\s*$", block, flags=re.M), name
        assert re.search(r"^\s*summary:\s*\S", block, flags=re.M), name
        url = re.search(r"^\s*runbook_url:\s*\"?([^\"\s]+)", block, flags=re.M)
        assert url and url.group(1) == f"README.md#runbook-{name.lower()}", name
    assert 'tier=~"gold|platinum"' in rules["CxpulseHighTierChurnAlertsSpiking"]
    assert 'tier=~"gold|platinum"' in rules["CxpulseHighTierComplaintsAtRisk"]


def test_every_alert_is_unit_tested_firing_and_not_firing():
    text = (PROM_DIR / "alert_rules_test.yml").read_text()
    cases = re.findall(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?", text)
    firing = {name for name, empty in cases if not empty}
    silent = {name for name, empty in cases if empty}
    assert firing == REQUIRED_ALERTS, f"never shown firing: {REQUIRED_ALERTS - firing}"
    assert silent == REQUIRED_ALERTS, f"never shown not firing: {REQUIRED_ALERTS - silent}"


def runbook_anchors() -> set[str]:
    text = RUNBOOKS.read_text()
    return set(re.findall(r'<a (?:id|name)="(runbook-[a-z0-9-]+)"', text)) | {
        "runbook-" + m.lower() for m in re.findall(r"^#+\s+(\w+)\s*$", text, flags=re.M)}


def test_every_alert_has_a_runbook_section():
    anchors = runbook_anchors()
    names = set(alert_rules(PROM_DIR / "alert_rules.yml")) | set(grafana_alert_rules())
    missing = {f"runbook-{n.lower()}" for n in names} - anchors
    assert not missing, f"README.md lacks runbook sections: {missing}"
    text = RUNBOOKS.read_text()
    for n in names:
        section = text.split(f'id="runbook-{n.lower()}"', 1)[1].split('<a id="runbook-', 1)[0]
        for part in ("What it means", "How to check", "What to do"):
            assert part in section, (n, part)


# --- Alertmanager -----------------------------------------------------------------------------

AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def amtool() -> str:
    path = shutil.which("amtool")
    if not path:  # not installed by deploy/install-tools.sh: optional everywhere
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    return path


def test_alertmanager_config_is_valid():
    run(amtool(), "check-config", str(AM_CONFIG))


@pytest.mark.parametrize("labels, receiver", [
    (["severity=critical", "alertname=CxpulsePipelineDown"], "pager"),
    (["severity=warning", "alertname=CxpulseConsumerLagGrowing"], "ticket"),
    (["alertname=Watchdog"], "null"),
])
def test_alertmanager_routes_by_severity(labels, receiver):
    out = run(amtool(), "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels).stdout
    assert out.strip() == receiver


def test_alertmanager_groups_by_alertname():
    text = AM_CONFIG.read_text()
    assert re.search(r"^\s+group_by:\s*\[\"alertname\"\]", text, flags=re.M)
    severities = set(re.findall(r"^\s*severity:\s*(\w+)", (PROM_DIR / "alert_rules.yml").read_text(), flags=re.M))
    assert severities == {"warning", "critical"}
    for sev in severities:
        assert f'severity = "{sev}"' in text, f"no route for severity {sev}"


# --- docker-compose ----------------------------------------------------------------------------

COMPOSE = ROOT / "docker-compose.yml"


def test_compose_config_is_valid():
    run(tool("docker-compose"), "-f", str(COMPOSE), "config", "-q")


def test_compose_services_and_worker_settings():
    out = run(tool("docker-compose"), "-f", str(COMPOSE), "config").stdout
    for service in ("kafka", "kafka-init", "clickhouse", "prometheus", "alertmanager", "grafana",
                    "cxpulse-worker-1", "cxpulse-worker-2"):
        assert re.search(rf"^  {re.escape(service)}:$", out, flags=re.M), service
    # both workers get the same settings (from the shared anchor)
    for var, value in (("CXPULSE_KAFKA_BOOTSTRAP", "kafka:9092"),
                       ("CXPULSE_CLICKHOUSE_DSN", "http://default:@clickhouse:8123/default"),
                       ("CXPULSE_WEB_HOST", "0.0.0.0")):
        assert len(re.findall(rf"^\s+{var}: {re.escape(value)}$", out, flags=re.M)) == 2, var
    assert len(re.findall(r"^\s+- worker$", out, flags=re.M)) == 2
    assert "apache/kafka" in out and "KAFKA_PROCESS_ROLES: broker,controller" in out
    assert "grafana-clickhouse-datasource" in out


def test_compose_topic_layout_matches_the_pipeline():
    """The kafka-init job creates the topics exactly as pipeline/adapters/kafka/topics.py would."""
    text = COMPOSE.read_text()
    created = {}
    for name, parts, rest in re.findall(r"^\s*t --topic (\S+)\s+--partitions (\d+)(.*)$", text, flags=re.M):
        created[name] = (int(parts), dict(re.findall(r"--config (\S+)=(\S+)", rest)))
    partitions = int(re.search(r'CXPULSE_PARTITIONS: "(\d+)"', text).group(1))
    assert partitions == 6
    from pipeline.config import load
    settings = load(partitions=partitions)
    try:
        from pipeline.adapters.kafka.topics import topic_specs
    except ImportError:
        expected = {t: (6, {}) for t in settings.input_topics}
        expected[settings.topic_scores] = (6, {"cleanup.policy": "compact"})
        assert {k: created[k] for k in expected} == expected
        return
    assert created == topic_specs(settings)


def test_dockerfile_runs_the_worker():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, flags=re.M)
    assert 'CMD ["cxpulse", "worker"]' in text
    assert "EXPOSE 6066" in text
    assert "COPY deploy/clickhouse" in text  # migrations ship with the image


# --- Grafana ----------------------------------------------------------------------------------

def all_panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def datasource_uids() -> dict[str, str]:
    text = (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    return dict(re.findall(r"^\s*uid:\s*(\S+)\s*\n\s*type:\s*(\S+)", text, flags=re.M))


def test_datasources_provisioned():
    assert datasource_uids() == {"prometheus": "prometheus", "clickhouse": "grafana-clickhouse-datasource"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_json_is_valid(path):
    d = json.loads(path.read_text())
    assert d["uid"] and d["title"] and d["panels"]
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    uids = datasource_uids()
    for p in all_panels(d):
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            ds = t["datasource"]
            assert uids.get(ds["uid"]) == ds["type"], (p["title"], ds)
            assert ("expr" in t) == (ds["type"] == "prometheus"), p["title"]
            assert ("rawSql" in t) == (ds["type"] == "grafana-clickhouse-datasource"), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24


def test_expected_dashboards():
    names = {p.name for p in DASHBOARDS}
    assert names == {"cx-overview.json", "pipeline-health.json"}
    overview = json.loads((GRAFANA / "dashboards" / "cx-overview.json").read_text())
    sql = " ".join(t["rawSql"] for p in all_panels(overview) for t in p.get("targets", []))
    for table in ("cx_scores_latest", "cx_events", "cx_alerts", "cx_complaints", "cx_agg_hourly"):
        assert re.search(rf"\b{table}\b", sql), table
    titles = " | ".join(p["title"] for p in all_panels(overview))
    for words in ("CXI", "CSAT", "NPS", "SLA", "Churn", "Where experience breaks"):
        assert words in titles, words
    health = json.loads((GRAFANA / "dashboards" / "pipeline-health.json").read_text())
    assert all(t["datasource"]["type"] == "prometheus" for p in all_panels(health) for t in p.get("targets", []))


def test_dashboard_provider_points_at_the_mounted_directory():
    text = (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in text
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in COMPOSE.read_text()
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in COMPOSE.read_text()


def test_dashboards_are_generated_from_pipeline_queries():
    pytest.importorskip("pipeline.adapters.clickhouse.queries", reason="pipeline/adapters/clickhouse/queries.py not present yet")
    proc = subprocess.run([sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_alert_rules_are_complete():
    rules = grafana_alert_rules()
    assert set(rules) == {"CxSlaComplianceLow", "CxCsatLow", "CxHighTierCxiDrop"}
    for name, block in rules.items():
        assert re.search(r"^\s*condition:\s*C\s*$", block, flags=re.M), name
        assert re.search(r"^\s*severity:\s*(warning|critical)\s*$", block, flags=re.M), name
        assert re.search(r"^\s*summary:\s*\S", block, flags=re.M), name
        assert f'runbook_url: "README.md#runbook-{name.lower()}"' in block, name
        assert "datasourceUid: clickhouse" in block and "rawSql:" in block, name


# --- ClickHouse panels against chDB with the project's schema ---------------------------------

FROM_TS = int(time.time()) - 30 * 86400
TO_TS = int(time.time()) + 86400


def literal_sql(sql: str) -> str:
    """Replace the Grafana ClickHouse plugin's macros and our template variables with the
    literal SQL the plugin would send (all tiers, all channels, the last 30 days)."""
    from schemas.events import Channel
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({FROM_TS}) AND \1 <= toDateTime({TO_TS})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({FROM_TS})").replace("$__toTime", f"toDateTime({TO_TS})")
    sql = sql.replace("${tier:singlequote}", ",".join(f"'{t}'" for t in M.TIERS))
    sql = sql.replace("${channel:singlequote}", ",".join(f"'{c.value}'" for c in Channel))
    assert "$" not in sql, f"unreplaced Grafana macro or variable in:\n{sql}"
    return sql


def clickhouse_queries() -> list[tuple[str, str, str | None]]:
    """(panel or alert title, SQL, the column a stat panel shows or None)."""
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in all_panels(d):
            fields = p.get("options", {}).get("reduceOptions", {}).get("fields") or ""
            field = re.fullmatch(r"/\^(\w+)\$/", fields)
            for t in p.get("targets", []):
                if "rawSql" in t:
                    out.append((f"{path.stem}: {p['title']}", t["rawSql"], field and field.group(1)))
    text = (GRAFANA / "provisioning" / "alerting" / "rules.yml").read_text()
    for title, block in grafana_alert_rules().items():
        m = re.search(r"rawSql: \|-\n((?:\s{16}.*\n|\n)+)", block)
        assert m, title
        out.append((f"grafana alert: {title}", "\n".join(line[16:] for line in m.group(1).splitlines()), None))
    assert text
    return out


SAMPLE_ROWS = """
INSERT INTO cx_case_events (customer_id, alert_id, action_id, action, occurred_at, staff_id, channel, outcome,
    playbook_action, alert_type, severity, tier, alert_fired_at, acknowledged_at, first_contact_at, closed_at) VALUES
 ('c1', 'a1', 'x1', 'acknowledged', now64(3) - INTERVAL 5 HOUR, 'S017', '', '', '', 'sla_breach', 'critical', 'gold',
  now64(3) - INTERVAL 6 HOUR, now64(3) - INTERVAL 5 HOUR, NULL, NULL),
 ('c1', 'a1', 'x2', 'closed', now64(3) - INTERVAL 4 HOUR, 'S017', '', 'retained', 'callback', 'sla_breach', 'critical',
  'gold', now64(3) - INTERVAL 6 HOUR, now64(3) - INTERVAL 5 HOUR, NULL, now64(3) - INTERVAL 4 HOUR);
INSERT INTO cx_events (event_id, event_type, customer_id, occurred_at, channel, tier, stage, kind,
    rating_reliability, rating_empathy, csat, nps, wait_seconds, resolved, handoffs) VALUES
 ('e1', 'touchpoint', 'c1', now64(3) - INTERVAL 2 HOUR, 'call_center', 'gold', 'usage', 'support', 2, 4, 2, 3, 600, false, 3),
 ('e2', 'touchpoint', 'c2', now64(3) - INTERVAL 2 HOUR, 'app', 'standard', 'purchase', 'survey', 5, 5, 5, 10, 5, true, 0);
INSERT INTO cx_events (event_id, event_type, customer_id, occurred_at, channel, tier, order_id, status, amount, currency)
 VALUES ('e3', 'order', 'c2', now64(3) - INTERVAL 3 HOUR, 'web', 'standard', 'o1', 'paid', 120.5, 'EUR');
INSERT INTO cx_scores_history (customer_id, as_of, version, cxi, tier, stage, revenue_365d, open_complaints,
    sla_breaches, churn_risk, driver_factors, driver_contributions, revenue_at_risk, events, churn_model,
    early_warning, early_warning_factors, early_warning_contributions) VALUES
 ('c1', now64(3) - INTERVAL 2 HOUR, 1, 41.5, 'gold', 'usage', 3000, 1, 1, 0.72,
  ['sla_breaches', 'low_ratings'], [0.6, 0.4], 2160, 5, 'lr-2026-11-30T0000', 0.41, ['sla_breaches'], [0.3]),
 ('c2', now64(3) - INTERVAL 2 HOUR, 1, 88, 'standard', 'purchase', 120.5, 0, 0, 0.08, [], [], 0, 2, '', NULL, [], []);
INSERT INTO cx_alerts (alert_id, type, status, severity, customer_id, tier, as_of, churn_risk, revenue_at_risk,
    reasons, recommended_action) VALUES
 ('a1', 'churn_risk', 'firing', 'critical', 'c1', 'gold', now64(3) - INTERVAL 2 HOUR, 0.72, 2160,
  ['sla_breaches', 'low_ratings'], 'call the customer');
INSERT INTO cx_alerts (alert_id, type, status, severity, customer_id, tier, as_of, churn_risk, revenue_at_risk,
    reasons, recommended_action, control, withheld_action) VALUES
 ('a9', 'churn_risk', 'firing', 'warning', 'c9', 'standard', now64(3) - INTERVAL 29 DAY - INTERVAL 23 HOUR, 0.35, 100,
  ['inactivity'], 'none: control group', true, 'send a personal win-back offer');
INSERT INTO cx_events (event_id, event_type, customer_id, occurred_at, channel, tier, order_id, status, amount, currency)
 VALUES ('e9', 'order', 'c9', now64(3) + INTERVAL 2 HOUR, 'web', 'standard', 'o9', 'paid', 20, 'EUR');
INSERT INTO cx_complaints (customer_id, complaint_id, channel, category, severity, tier, status, opened_at, due_at,
    acknowledged_at, resolved_at, breached, compensation, updated_at, version) VALUES
 ('c1', 'k1', 'call_center', 'reliability', 'high', 'gold', 'opened', now64(3) - INTERVAL 30 HOUR,
  now64(3) - INTERVAL 20 HOUR, NULL, NULL, true, 0, now64(3) - INTERVAL 20 HOUR, 2),
 ('c2', 'k2', 'app', 'empathy', 'low', 'standard', 'resolved', now64(3) - INTERVAL 5 HOUR,
  now64(3) + INTERVAL 3 HOUR, now64(3) - INTERVAL 4 HOUR, now64(3) - INTERVAL 3 HOUR, false, 10, now64(3) - INTERVAL 3 HOUR, 3)
"""


@pytest.fixture(scope="module")
def chdb_client(tmp_path_factory):
    migrations = pytest.importorskip("pipeline.adapters.clickhouse.migrations",
                                     reason="pipeline/adapters/clickhouse/migrations.py not present yet")
    import clickhouse_connect
    client = clickhouse_connect.get_client(dsn="chdb:///" + str(tmp_path_factory.mktemp("chdb") / "ch"))
    migrations.apply_migrations(client)
    for statement in SAMPLE_ROWS.strip().split(";\n"):
        client.command(statement)
    yield client
    client.close()


@pytest.mark.parametrize("title, sql, field", clickhouse_queries(),
                         ids=lambda v: v if isinstance(v, str) and len(v) < 80 else None)
def test_clickhouse_panel_sql_runs_on_chdb(chdb_client, title, sql, field):
    result = chdb_client.query(literal_sql(sql))
    assert result.column_names, title
    if field:  # a stat panel shows one column: it must exist
        assert field in result.column_names, f"{title}: shows {field!r}, query returns {result.column_names}"
    # The sample rows touch every table and dimension: every panel has something to show.
    assert result.result_rows, f"{title}: no rows"
