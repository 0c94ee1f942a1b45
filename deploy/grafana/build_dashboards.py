"""Generate the Grafana dashboards in deploy/grafana/dashboards/ from code.

    .venv/bin/python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    .venv/bin/python deploy/grafana/build_dashboards.py --check  # exit 1 if they are stale

The ClickHouse panels reuse the SQL constants of pipeline/adapters/clickhouse/queries.py wherever one fits,
with its `{since:...}` / `{until:...}` parameters replaced by the Grafana ClickHouse
plugin's `$__fromTime` / `$__toTime` macros, so the dashboards show exactly the numbers
the demo summary prints. tests/unit/test_observability.py fails when the committed JSON is
stale, and runs every panel's SQL against chDB with the project's schema.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.adapters.clickhouse import queries as Q  # noqa: E402
from schemas.events import Channel  # noqa: E402

OUT = Path(__file__).resolve().parent / "dashboards"
PROM = {"type": "prometheus", "uid": "prometheus"}
CH = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}
SINCE = "{since:DateTime64(3, 'UTC')}"
UNTIL = "{until:DateTime64(3, 'UTC')}"
TIERS = ("standard", "silver", "gold", "platinum")
UPLIFT_HORIZON_DAYS = 30.0   # the default CXPULSE_CHURN_HORIZON_DAYS
TIER_FILTER = "tier IN (${tier:singlequote})"
CHANNEL_FILTER = "channel IN (${channel:singlequote})"


def grafana_sql(sql: str) -> str:
    """A pipeline/adapters/clickhouse/queries.py constant with its period parameters as Grafana macros."""
    return sql.replace(SINCE, "$__fromTime").replace(UNTIL, "$__toTime").strip()


class Layout:
    """Places panels left to right on the 24-column grid, wrapping rows."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.next_id += 1
        self.y += 1


def ch_target(sql: str, fmt: str = "table", ref: str = "A") -> dict[str, Any]:
    return {"datasource": CH, "refId": ref, "editorType": "sql", "rawSql": sql.strip(),
            "queryType": fmt, "format": 0 if fmt == "timeseries" else 1}


def prom_target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t = {"datasource": PROM, "refId": ref, "expr": expr.strip(), "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant}
    return t


def panel(kind: str, title: str, targets: list[dict[str, Any]], description: str = "",
          unit: str | None = None, decimals: int | None = None, options: dict | None = None,
          thresholds: list[tuple[float | None, str]] | None = None, min_: float | None = None,
          max_: float | None = None, overrides: list | None = None,
          transformations: list | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": [{"value": v, "color": c} for v, c in thresholds]}
        defaults["color"] = {"mode": "thresholds"}
    p = {"type": kind, "title": title, "description": description,
         "datasource": targets[0]["datasource"], "targets": targets,
         "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
         "options": options or {}}
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title: str, targets: list, field: str | None = None, **kw: Any) -> dict[str, Any]:
    """A single-value panel; `field` picks one column of a table result (None: the series)."""
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": f"/^{field}$/" if field else "",
                              "values": False},
            "colorMode": "value", "graphMode": "none", "textMode": "value"}
    return panel("stat", title, targets, options=opts, **kw)


def table(title: str, targets: list, **kw: Any) -> dict[str, Any]:
    return panel("table", title, targets, options={"showHeader": True, "cellHeight": "sm"}, **kw)


def timeseries(title: str, targets: list, **kw: Any) -> dict[str, Any]:
    opts = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "mean"]},
            "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, targets, options=opts, **kw)


def backtest_panel(title: str, family: str, description: str) -> dict:
    """A live backtest's ROC AUC and Brier beside the base rate's (gauges `<family>_auc`,
    `_brier`, `_brier_base_rate`)."""
    return timeseries(title, [prom_target(f"max({family}_auc)", "ROC AUC"),
                              prom_target(f"max({family}_brier)", "Brier", "B"),
                              prom_target(f"max({family}_brier_base_rate)", "Brier of the base rate", "C")],
                      unit="none", description=description)


def barchart(title: str, targets: list, x_field: str, **kw: Any) -> dict[str, Any]:
    opts = {"xField": x_field, "orientation": "horizontal", "showValue": "auto",
            "legend": {"displayMode": "list", "placement": "bottom"}, "stacking": "none"}
    return panel("barchart", title, targets, options=opts, **kw)


def variable(name: str, label: str, values: list[str] | None = None, sql: str | None = None) -> dict[str, Any]:
    v: dict[str, Any] = {"name": name, "label": label, "multi": True, "includeAll": True,
                         "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                         "hide": 0, "refresh": 1 if sql else 0}
    if sql:
        v.update({"type": "query", "datasource": CH, "query": sql, "definition": sql, "sort": 1})
    else:
        v.update({"type": "custom", "query": ",".join(values or []),
                  "options": [{"text": x, "value": x, "selected": False} for x in values or []]})
    return v


def dashboard(uid: str, title: str, layout: Layout, description: str, tags: list[str],
              variables: list | None = None, refresh: str = "1m", time_from: str = "now-24h") -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": tags,
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "timezone": "utc", "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "Pipeline health", "type": "link", "url": "/d/cxpulse-pipeline-health"},
                  {"title": "CX overview", "type": "link", "url": "/d/cxpulse-cx-overview"}],
        "panels": layout.panels,
    }


# --- CX overview (ClickHouse) ------------------------------------------------------------

HOURLY_FILTER = f"$__timeFilter(hour) AND {TIER_FILTER}"

SLA_COMPLIANCE_SQL = """
SELECT countIf(breached OR resolved_at IS NOT NULL) AS decided_n,
       countIf(breached) AS breached_n,
       if(decided_n = 0, NULL, (decided_n - breached_n) / decided_n) AS compliance
FROM cx_complaints FINAL
WHERE opened_at >= $__fromTime AND opened_at < $__toTime AND tier IN (${tier:singlequote})
"""

PAST_SLA_NOW_SQL = """
SELECT tier, severity, category, count() AS open_past_sla,
       min(due_at) AS oldest_due_at
FROM cx_complaints FINAL
WHERE breached AND resolved_at IS NULL AND status NOT IN ('resolved', 'closed')
  AND tier IN (${tier:singlequote})
GROUP BY tier, severity, category
ORDER BY open_past_sla DESC
"""

CXI_BY_TIER_SQL = f"""
SELECT hour AS time, tier, sum(cxi_sum) / sum(scores) AS cxi
FROM cx_agg_hourly
WHERE {HOURLY_FILTER}
GROUP BY time, tier
HAVING sum(scores) > 0
ORDER BY time, tier
"""

CSAT_BY_CHANNEL_SQL = f"""
SELECT hour AS time, channel, 100 * sum(csat_satisfied) / sum(csat_answers) AS csat
FROM cx_agg_hourly
WHERE {HOURLY_FILTER} AND {CHANNEL_FILTER}
GROUP BY time, channel
HAVING sum(csat_answers) > 0
ORDER BY time, channel
"""

NPS_BY_CHANNEL_SQL = f"""
SELECT hour AS time, channel,
       100 * (sum(nps_promoters) - sum(nps_detractors)) / sum(nps_answers) AS nps
FROM cx_agg_hourly
WHERE {HOURLY_FILTER} AND {CHANNEL_FILTER}
GROUP BY time, channel
HAVING sum(nps_answers) > 0
ORDER BY time, channel
"""


def _kpis_by(dim: str) -> str:
    return f"""
SELECT {dim},
       sum(csat_answers) AS csat_n,
       if(csat_n = 0, NULL, 100 * sum(csat_satisfied) / csat_n) AS csat_pct,
       sum(nps_answers) AS nps_n,
       if(nps_n = 0, NULL, 100 * (sum(nps_promoters) - sum(nps_detractors)) / nps_n) AS nps_score,
       sum(scores) AS score_updates,
       if(score_updates = 0, NULL, sum(cxi_sum) / score_updates) AS cxi_avg,
       sum(complaints) AS complaints_opened
FROM cx_agg_hourly
WHERE {HOURLY_FILTER} AND {dim} != ''
GROUP BY {dim}
ORDER BY {dim}
"""


CHURN_ALERTS_OVER_TIME_SQL = f"""
SELECT hour AS time, tier, uniqExactMerge(churn_alerts) AS churn_alerts
FROM cx_agg_hourly
WHERE {HOURLY_FILTER}
GROUP BY time, tier
ORDER BY time, tier
"""

SLA_BREACHES_OVER_TIME_SQL = f"""
SELECT hour AS time, tier, uniqExactMerge(sla_breaches) AS sla_breaches
FROM cx_agg_hourly
WHERE {HOURLY_FILTER}
GROUP BY time, tier
ORDER BY time, tier
"""

FIRING_CHURN_ALERTS_SQL = """
SELECT alert_id, customer_id, tier, severity, churn_risk, revenue_at_risk,
       arrayStringConcat(reasons, '; ') AS reasons, recommended_action, fired_at
FROM
(
    SELECT alert_id,
           argMax(customer_id, as_of) AS customer_id,
           argMax(tier, as_of) AS tier,
           argMaxIf(severity, as_of, status = 'firing') AS severity,
           argMaxIf(churn_risk, as_of, status = 'firing') AS churn_risk,
           argMaxIf(revenue_at_risk, as_of, status = 'firing') AS revenue_at_risk,
           argMaxIf(reasons, as_of, status = 'firing') AS reasons,
           argMaxIf(recommended_action, as_of, status = 'firing') AS recommended_action,
           minIf(as_of, status = 'firing') AS fired_at,
           max(status = 'resolved') AS is_resolved
    FROM cx_alerts FINAL
    WHERE type = 'churn_risk'
    GROUP BY alert_id
)
WHERE NOT is_resolved AND tier IN (${tier:singlequote})
ORDER BY revenue_at_risk DESC, churn_risk DESC
LIMIT 100
"""

CHURN_DRIVERS_SQL = """
SELECT factor, count() AS customers, round(avg(contribution), 3) AS avg_contribution
FROM cx_scores_latest FINAL
ARRAY JOIN driver_factors AS factor, driver_contributions AS contribution
WHERE churn_risk >= 0.5 AND tier IN (${tier:singlequote})
GROUP BY factor
ORDER BY customers DESC, factor
"""

EARLY_WARNING_SQL = """
SELECT customer_id, tier, round(early_warning, 3) AS early_warning, round(churn_risk, 3) AS churn_risk,
       arrayStringConcat(early_warning_factors, ', ') AS why, revenue_365d, as_of AS last_scored
FROM cx_scores_latest FINAL
WHERE early_warning IS NOT NULL AND tier IN (${tier:singlequote})
ORDER BY early_warning DESC, revenue_365d DESC
LIMIT 100
"""

CHURN_RISK_DISTRIBUTION_SQL = """
SELECT toString(least(floor(churn_risk * 10) / 10, 0.9)) AS risk_from, tier, count() AS customers
FROM cx_scores_latest FINAL
WHERE tier IN (${tier:singlequote})
GROUP BY risk_from, tier
ORDER BY risk_from, tier
"""


def cx_overview() -> dict[str, Any]:
    L = Layout()
    latest = grafana_sql(Q.LATEST_SCORES_SQL)
    L.row("Headline KPIs")
    L.add(stat("CXI (customers' latest, avg)", [ch_target(latest)], "avg_cxi", unit="none", decimals=1,
               min_=0, max_=100, thresholds=[(None, "red"), (60, "orange"), (75, "green")],
               description="Customer experience index 0..100, average over every customer's latest score."), 4, 4)
    L.add(stat("CSAT %", [ch_target(grafana_sql(Q.CSAT_SQL))], "csat_pct", unit="percent", decimals=1,
               thresholds=[(None, "red"), (70, "orange"), (80, "green")],
               description="Share of 4-5 answers on the 1-5 scale, in the selected time range."), 4, 4)
    L.add(stat("NPS", [ch_target(grafana_sql(Q.NPS_SQL))], "nps_score", unit="none", decimals=0, min_=-100, max_=100,
               thresholds=[(None, "red"), (0, "orange"), (30, "green")],
               description="% promoters (9-10) minus % detractors (0-6), in the selected time range."), 4, 4)
    L.add(stat("SLA compliance (sunset rule)", [ch_target(SLA_COMPLIANCE_SQL)], "compliance",
               unit="percentunit", decimals=1, thresholds=[(None, "red"), (0.9, "orange"), (0.97, "green")],
               description="Complaints opened in the range and decided (breached or resolved): share answered in time."),
          4, 4)
    L.add(stat("Customers at risk (churn ≥ 0.5)", [ch_target(latest)], "at_risk", unit="short",
               thresholds=[(None, "green"), (1, "orange")]), 4, 4)
    L.add(stat("Revenue at risk", [ch_target(latest)], "total_revenue_at_risk", unit="short", decimals=0,
               thresholds=[(None, "green"), (1, "orange")],
               description="Sum of revenue_at_risk over customers' latest scores."), 4, 4)

    L.row("CXI, CSAT and NPS by tier, channel and journey stage")
    L.add(timeseries("CXI by tier", [ch_target(CXI_BY_TIER_SQL, "timeseries")], unit="none", min_=0, max_=100,
                     description="Average CXI of score updates per hour (cx_agg_hourly)."), 8, 8)
    L.add(timeseries("CSAT % by channel", [ch_target(CSAT_BY_CHANNEL_SQL, "timeseries")], unit="percent",
                     min_=0, max_=100), 8, 8)
    L.add(timeseries("NPS by channel", [ch_target(NPS_BY_CHANNEL_SQL, "timeseries")], unit="none",
                     min_=-100, max_=100), 8, 8)
    L.add(table("KPIs by tier", [ch_target(_kpis_by("tier"))]), 8, 7)
    L.add(table("KPIs by channel", [ch_target(_kpis_by("channel"))]), 8, 7)
    L.add(table("KPIs by journey stage", [ch_target(_kpis_by("stage"))]), 8, 7)

    L.row("Where experience breaks")
    L.add(table("SERVQUAL dimension × journey stage (worst first)",
                [ch_target(grafana_sql(Q.WHERE_EXPERIENCE_BREAKS_SQL))],
                description="Average rating per dimension and stage as a 0-100 score; the top rows are where "
                            "the journey breaks.",
                overrides=[{"matcher": {"id": "byName", "options": "score"},
                            "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                           {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                                               {"value": None, "color": "red"}, {"value": 50, "color": "orange"},
                                               {"value": 75, "color": "green"}]}},
                                           {"id": "decimals", "value": 1}]}]), 12, 9)
    L.add(barchart("Churn drivers of customers at risk", [ch_target(CHURN_DRIVERS_SQL)], "factor",
                   description="Factors named in the churn drivers of customers whose latest churn risk ≥ 0.5."),
          12, 9)

    L.row("Churn alerts")
    L.add(table("Churn alerts by tier", [ch_target(grafana_sql(Q.CHURN_ALERTS_BY_TIER_SQL))]), 8, 7)
    L.add(timeseries("Churn alerts fired per hour by tier", [ch_target(CHURN_ALERTS_OVER_TIME_SQL, "timeseries")],
                     unit="short"), 8, 7)
    L.add(barchart("Churn risk distribution (latest scores)", [ch_target(CHURN_RISK_DISTRIBUTION_SQL)],
                   "risk_from",
                   transformations=[{"id": "groupingToMatrix", "options": {
                       "columnField": "tier", "rowField": "risk_from", "valueField": "customers"}}]), 8, 7)
    L.add(table("Firing churn alerts (highest revenue at risk first)", [ch_target(FIRING_CHURN_ALERTS_SQL)],
                description="Pseudonymous customer ids only; reasons name the churn drivers."), 24, 9)
    L.add(table("Early warning: customers likely to leave next (highest first)", [ch_target(EARLY_WARNING_SQL)],
                description="The learned early warning of each customer's latest score: the probability that a "
                            "customer who is still a customer leaves within the churn horizon, and the factors "
                            "that raise it (early_warning_drivers). Empty until a learning worker "
                            "(CXPULSE_LEARN_CHURN=true) has trained the model. Pseudonymous customer ids only."),
          24, 9)

    L.row("Complaints and the sunset rule")
    L.add(table("SLA compliance by channel", [ch_target(grafana_sql(Q.SLA_COMPLIANCE_BY_CHANNEL_SQL))],
                overrides=[{"matcher": {"id": "byName", "options": "compliance"},
                            "properties": [{"id": "unit", "value": "percentunit"}]}]), 8, 8)
    L.add(timeseries("SLA breaches per hour by tier", [ch_target(SLA_BREACHES_OVER_TIME_SQL, "timeseries")],
                     unit="short"), 8, 8)
    L.add(table("Open complaints past SLA now", [ch_target(PAST_SLA_NOW_SQL)]), 8, 8)

    L.row("Cases: what was done about alerts")
    L.add(table("Case outcomes by playbook action", [ch_target(grafana_sql(Q.case_outcomes_sql("playbook_action")))],
                description="Cases of alerts fired in the range (cx_case_events): closed, outcome shares among the "
                            "closed, median hours to acknowledge and to first contact. Aggregates only.",
                overrides=[{"matcher": {"id": "byRegexp", "options": ".*_share"},
                            "properties": [{"id": "unit", "value": "percentunit"}]}]), 12, 8)
    L.add(table("Case handling by tier", [ch_target(grafana_sql(Q.case_outcomes_sql("tier")))],
                overrides=[{"matcher": {"id": "byRegexp", "options": ".*_share"},
                            "properties": [{"id": "unit", "value": "percentunit"}]}]), 12, 8)
    L.add(table("Churn alerts: treated vs control outcomes", [ch_target(grafana_sql(Q.uplift_sql(UPLIFT_HORIZON_DAYS)))],
                description=f"Churn alerts fired in the range whose {UPLIFT_HORIZON_DAYS:g}-day horizon is over, by "
                            "action (recommended, or withheld for the control group, CXPULSE_CHURN_CONTROL_SHARE) "
                            "and arm: cases, churned (no event within the horizon), churn rate, mean revenue of "
                            "paid orders in the horizon. Intervals: cxpulse evaluate --uplift (docs/evaluation.md §8). "
                            "No control rows: uplift needs a control group.",
                overrides=[{"matcher": {"id": "byName", "options": "churn_rate"},
                            "properties": [{"id": "unit", "value": "percentunit"}]}]), 24, 8)

    L.row("Service revenue")
    L.add(table("Service revenue by currency", [ch_target(grafana_sql(Q.REVENUE_SQL))]), 12, 5)
    L.add(table("Events in range", [ch_target(grafana_sql(Q.EVENT_TOTALS_SQL))]), 12, 5)

    variables = [
        variable("tier", "Tier", values=list(TIERS)),
        variable("channel", "Channel", values=[c.value for c in Channel]),
    ]
    return dashboard("cxpulse-cx-overview", "cxpulse — customer experience", L,
                     "CXI, CSAT, NPS by tier/channel/stage, churn alerts, sunset-rule SLA, where experience breaks. "
                     "Source: ClickHouse.", ["cxpulse", "cx"], variables, refresh="5m", time_from="now-7d")


# --- pipeline health (Prometheus) -----------------------------------------------------------

def pipeline_health() -> dict[str, Any]:
    L = Layout()
    L.row("Workers")
    L.add(stat("Workers up", [prom_target('sum(up{job="cxpulse"})', instant=True)],
               thresholds=[(None, "red"), (1, "orange"), (2, "green")]), 4, 4)
    L.add(stat("Events/s applied", [prom_target("sum(job:cxpulse_events_applied:rate5m)", instant=True)],
               unit="ops", decimals=1), 4, 4)
    L.add(stat("Consumer lag (messages)",
               [prom_target("sum(job_topic:cxpulse_consumer_lag_messages:sum)", instant=True)],
               unit="short", thresholds=[(None, "green"), (1000, "orange"), (10000, "red")]), 4, 4)
    L.add(stat("Event-time lag (max)", [prom_target("max(cxpulse_event_time_lag_seconds)", instant=True)],
               unit="s", thresholds=[(None, "green"), (60, "orange"), (600, "red")]), 4, 4)
    L.add(stat("Dead-letter ratio", [prom_target("sum(job:cxpulse_events_deadlettered:ratio_rate5m)", instant=True)],
               unit="percentunit", decimals=2, thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")]),
          4, 4)
    L.add(stat("Prometheus alerts firing",
               [prom_target('count(ALERTS{alertstate="firing", alertname=~"Cxpulse.*"}) or vector(0)',
                            instant=True)], thresholds=[(None, "green"), (1, "red")]), 4, 4)

    L.row("Throughput")
    L.add(timeseries("Consumed / applied per topic",
                     [prom_target("job_topic:cxpulse_events_consumed:rate5m", "consumed {{topic}}"),
                      prom_target("job_topic:cxpulse_events_applied:rate5m", "applied {{topic}}", "B")],
                     unit="ops"), 12, 8)
    L.add(timeseries("Dead letters by topic and reason, duplicates, erased",
                     [prom_target("job_topic_reason:cxpulse_events_deadlettered:rate5m", "{{topic}} {{reason}}"),
                      prom_target("sum by (topic) (rate(cxpulse_events_duplicate_total[5m]))",
                                  "duplicates {{topic}}", "B"),
                      prom_target("sum by (topic) (rate(cxpulse_events_erased_total[5m]))",
                                  "erased {{topic}}", "C")],
                     unit="ops"), 12, 8)
    L.add(timeseries("Scores published / alerts raised",
                     [prom_target("sum(rate(cxpulse_scores_published_total[5m]))", "scores"),
                      prom_target("sum by (type) (rate(cxpulse_alerts_raised_total[5m]))", "alerts {{type}}", "B")],
                     unit="ops"), 12, 8)
    L.add(timeseries("Micro-batch size (p50 / p99)",
                     [prom_target("histogram_quantile(0.5, sum by (le) (rate(cxpulse_batch_size_events_bucket[5m])))",
                                  "p50"),
                      prom_target("histogram_quantile(0.99, sum by (le) (rate(cxpulse_batch_size_events_bucket[5m])))",
                                  "p99", "B")],
                     unit="short"), 12, 8)

    L.row("Lag and latency")
    L.add(timeseries("Consumer lag by topic", [prom_target("job_topic:cxpulse_consumer_lag_messages:sum", "{{topic}}")],
                     unit="short"), 8, 8)
    L.add(timeseries("Consumer lag by partition",
                     [prom_target("cxpulse_consumer_lag_messages", "{{topic}}[{{partition}}] {{instance}}")],
                     unit="short"), 8, 8)
    L.add(timeseries("Event-time lag by worker", [prom_target("cxpulse_event_time_lag_seconds", "{{instance}}")],
                     unit="s"), 8, 8)
    L.add(timeseries("Processing latency per event",
                     [prom_target("job:cxpulse_processing_latency_seconds:p50_5m", "p50"),
                      prom_target("job:cxpulse_processing_latency_seconds:p99_5m", "p99", "B")],
                     unit="s"), 12, 8)
    L.add(timeseries("Since last applied event",
                     [prom_target("time() - cxpulse_last_applied_timestamp_seconds", "{{instance}}")], unit="s"),
          12, 8)

    L.row("ClickHouse sink")
    L.add(timeseries("Rows written by table", [prom_target("job_table:cxpulse_sink_rows:rate5m", "{{table}}")],
                     unit="rowsps"), 8, 8)
    L.add(timeseries("Flushes, failures, retries",
                     [prom_target("job:cxpulse_sink_flushes:rate5m", "flushes"),
                      prom_target("job:cxpulse_sink_failures:rate5m", "failures", "B"),
                      prom_target("sum(rate(cxpulse_sink_retries_total[5m]))", "retries", "C")],
                     unit="ops"), 8, 8)
    L.add(timeseries("Sink queue and flush p99",
                     [prom_target("sum by (instance) (cxpulse_sink_queue_rows)", "queued rows {{instance}}"),
                      prom_target("histogram_quantile(0.99, sum by (le) "
                                  "(rate(cxpulse_sink_flush_duration_seconds_bucket[5m])))", "flush p99 (s)", "B")],
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                 "properties": [{"id": "unit", "value": "s"},
                                                {"id": "custom.axisPlacement", "value": "right"}]}]), 8, 8)

    L.row("Customer experience signals")
    L.add(timeseries("Alerts firing by type and tier",
                     [prom_target("sum by (type, tier) (cxpulse_alerts_firing)", "{{type}} {{tier}}")],
                     unit="short"), 8, 8)
    L.add(timeseries("Open complaints past SLA by tier",
                     [prom_target("job_tier:cxpulse_complaints_past_sla:sum", "{{tier}}")], unit="short"), 8, 8)
    L.add(timeseries("Complaints at risk (sla_at_risk firing) by tier",
                     [prom_target("job_tier:cxpulse_sla_at_risk_firing:sum", "{{tier}}")], unit="short"), 8, 8)
    L.add(timeseries("Escalations firing (critical alerts nobody acknowledged) by tier",
                     [prom_target('sum by (tier) (cxpulse_alerts_firing{type="escalation"})', "{{tier}}")],
                     unit="short"), 8, 8)
    L.add(panel("heatmap", "Churn risk of published scores",
                [prom_target("sum by (le) (increase(cxpulse_churn_risk_ratio_bucket[$__rate_interval]))", "{{le}}")
                 | {"format": "heatmap"}],
                options={"calculate": False, "yAxis": {"unit": "none"}, "cellGap": 1,
                         "color": {"mode": "scheme", "scheme": "Oranges"}}), 8, 8)

    L.row("Churn model backtest")
    L.add(backtest_panel("Churn risk backtest: AUC and Brier of predictions made one horizon ago",
                         "cxpulse_churn_backtest",
                         "Each customer's churn_risk as published H days ago (CXPULSE_CHURN_HORIZON_DAYS) "
                         "against whether they were active since (pipeline/domain/backtest.py); "
                         "recomputed by the workers every CXPULSE_BACKTEST_SECONDS. Brier below the "
                         "base rate's means the risk beats knowing only the churn rate."), 12, 8)
    L.add(timeseries("Churn alert thresholds backtest: precision / recall",
                     [prom_target("max by (level) (cxpulse_churn_backtest_precision)", "precision {{level}}"),
                      prom_target("max by (level) (cxpulse_churn_backtest_recall)", "recall {{level}}", "B")],
                     unit="percentunit",
                     description="Precision and recall of each tier's warning and critical churn thresholds, "
                                 "for predictions made one horizon ago."), 12, 8)
    L.add(backtest_panel("Early warning backtest: AUC and Brier of warnings published two horizons ago",
                         "cxpulse_early_warning_backtest",
                         "early_warning as published 2H days ago, for the customers still there H days on, "
                         "against no activity since (pipeline/domain/backtest.py early_warning_figures); "
                         "empty until a learned early-warning model has served for 2H days."), 12, 8)
    L.add(timeseries("Early warning backtest: customers judged and their leave rate",
                     [prom_target("max(cxpulse_early_warning_backtest_customers)", "customers"),
                      prom_target("max(cxpulse_early_warning_backtest_leave_rate)", "leave rate", "B"),
                      prom_target("max(cxpulse_early_warning_backtest_mean_early_warning)", "mean early warning", "C")],
                     unit="short",
                     description="How many early warnings the backtest above judges, the share of those "
                                 "customers who left, and the mean warning they were given: a mean well above "
                                 "the leave rate is a warning that runs high."), 12, 8)

    L.row("Process")
    L.add(timeseries("CPU", [prom_target('rate(process_cpu_seconds_total{job="cxpulse"}[5m])', "{{instance}}")],
                     unit="percentunit"), 12, 7)
    L.add(timeseries("Resident memory",
                     [prom_target('process_resident_memory_bytes{job="cxpulse"}', "{{instance}}")],
                     unit="bytes"), 12, 7)
    return dashboard("cxpulse-pipeline-health", "cxpulse — pipeline health", L,
                     "Throughput, lag, latency, dead letters and the ClickHouse sink of the cxpulse workers. "
                     "Source: Prometheus.", ["cxpulse", "pipeline"], refresh="30s", time_from="now-3h")


DASHBOARDS = {"cx-overview.json": cx_overview, "pipeline-health.json": pipeline_health}


def render_all() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    rendered = render_all()
    if "--check" in argv:
        stale = [n for n, text in rendered.items()
                 if not (OUT / n).exists() or (OUT / n).read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale dashboards (run deploy/grafana/build_dashboards.py): {', '.join(stale)}")
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
