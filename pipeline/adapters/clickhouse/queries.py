"""Analytics queries over the ClickHouse model, for the demo summary and the dashboards.

Every query's SQL is a module-level constant so Grafana panels can reuse it verbatim
(replace the `{since:DateTime64(3, 'UTC')}` / `{until:...}` parameters with
`$__fromTime` / `$__toTime`). Functions return plain Python (numbers, dicts, lists of dicts).

Base tables are ReplacingMergeTree: a row delivered twice (e.g. re-delivery after a
worker crash) exists twice until a merge, so every query on them reads FINAL.
Aggregating tables are read with GROUP BY + sum()/-Merge, as their rows fold lazily.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.adapters.clickhouse.tables import (
    ALERT_FACTS, CHURN_TICKS, CHURN_TRAININGS, CUSTOMER_TABLES, POPULATION, TABLES)
from pipeline.domain.left_behind_alerts import NUMBERED_TYPES, StoredAlert
from pipeline.domain.backtest import BacktestRow, EarlyWarningRow

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=timezone.utc)

_REPLACING = set(CUSTOMER_TABLES) | {ALERT_FACTS, CHURN_TICKS, CHURN_TRAININGS, POPULATION}

# Logical row counts: FINAL on ReplacingMergeTree tables (duplicates collapsed),
# physical rows for the others (aggregate tables fold rows lazily; their count varies).
TABLE_COUNTS_SQL = "\nUNION ALL\n".join(
    f"SELECT '{t}' AS table, count() AS n FROM {t}{' FINAL' if t in _REPLACING else ''}" for t in TABLES
)

_PERIOD = "occurred_at >= {since:DateTime64(3, 'UTC')} AND occurred_at < {until:DateTime64(3, 'UTC')}"

# CSAT: share of 4-5 answers among all 1-5 answers, percent.
CSAT_SQL = f"""
SELECT countIf(csat >= 4) AS n_satisfied, count(csat) AS n_answers,
       if(n_answers = 0, NULL, 100 * n_satisfied / n_answers) AS csat_pct
FROM cx_events FINAL
WHERE event_type = 'touchpoint' AND csat IS NOT NULL AND {_PERIOD}
"""

# NPS: % promoters (9-10) minus % detractors (0-6), -100..100.
NPS_SQL = f"""
SELECT countIf(nps >= 9) AS n_promoters, countIf(nps <= 6) AS n_detractors, count(nps) AS n_answers,
       if(n_answers = 0, NULL, 100 * (n_promoters - n_detractors) / n_answers) AS nps_score
FROM cx_events FINAL
WHERE event_type = 'touchpoint' AND nps IS NOT NULL AND {_PERIOD}
"""

RETENTION_SQL = """
WITH {as_of:DateTime64(3, 'UTC')} AS t, toIntervalSecond({period_seconds:UInt64}) AS p
SELECT uniqExactIf(customer_id, in_prev) AS previous_active,
       uniqExactIf(customer_id, in_prev AND in_last) AS retained
FROM
(
    SELECT customer_id,
           max(occurred_at > t - p - p AND occurred_at <= t - p) AS in_prev,
           max(occurred_at > t - p AND occurred_at <= t) AS in_last
    FROM cx_events FINAL
    WHERE occurred_at > t - p - p AND occurred_at <= t
    GROUP BY customer_id
)
"""
LAST_EVENT_SQL = "SELECT max(occurred_at) FROM cx_events"

# Churn alert episodes per tier. An episode is firing while it has no 'resolved' row.
CHURN_ALERTS_BY_TIER_SQL = """
SELECT alert_tier AS tier,
       count() AS episodes,
       countIf(NOT is_resolved) AS firing,
       countIf(NOT is_resolved AND firing_severity = 'critical') AS critical,
       sumIf(firing_revenue_at_risk, NOT is_resolved) AS revenue_at_risk
FROM
(
    SELECT alert_id,
           argMax(tier, as_of) AS alert_tier,
           argMaxIf(severity, as_of, status = 'firing') AS firing_severity,
           argMaxIf(revenue_at_risk, as_of, status = 'firing') AS firing_revenue_at_risk,
           max(status = 'resolved') AS is_resolved
    FROM cx_alerts FINAL
    WHERE type = 'churn_risk'
    GROUP BY alert_id
)
GROUP BY alert_tier
ORDER BY alert_tier
"""

# Sunset-rule compliance per channel over each complaint's latest state. A complaint's
# SLA outcome is decided once it breached or was resolved; compliance = met / decided.
SLA_COMPLIANCE_BY_CHANNEL_SQL = """
SELECT channel,
       count() AS n_complaints,
       countIf(breached OR resolved_at IS NOT NULL) AS n_decided,
       countIf(breached) AS n_breached,
       countIf(NOT breached AND resolved_at IS NULL) AS n_open,
       if(n_decided = 0, NULL, (n_decided - n_breached) / n_decided) AS compliance
FROM cx_complaints FINAL
WHERE opened_at >= {since:DateTime64(3, 'UTC')} AND opened_at < {until:DateTime64(3, 'UTC')}
GROUP BY channel
ORDER BY channel
"""

# SERVQUAL dimension x journey stage: average 1-5 rating, and as a 0-100 score
# ((avg - 1) / 4 * 100, the CXI scale); worst first, so the breaking point leads.
WHERE_EXPERIENCE_BREAKS_SQL = f"""
SELECT stage, dimension, count() AS answers, avg(rating) AS avg_rating,
       (avg_rating - 1) / 4 * 100 AS score
FROM
(
    SELECT stage,
           arrayJoin(arrayFilter(x -> x.2 IS NOT NULL, [
               ('tangibles', rating_tangibles), ('reliability', rating_reliability),
               ('responsiveness', rating_responsiveness), ('assurance', rating_assurance),
               ('empathy', rating_empathy)])) AS pair,
           pair.1 AS dimension, assumeNotNull(pair.2) AS rating
    FROM cx_events FINAL
    WHERE event_type = 'touchpoint' AND {_PERIOD}
)
GROUP BY stage, dimension
ORDER BY score ASC, stage, dimension
"""

# Service revenue per currency: the latest amount of every order that got paid, shipped or
# delivered, unless its latest status is cancelled, refunded or returned.
REVENUE_SQL = f"""
SELECT order_currency AS currency, sum(last_amount) AS revenue, count() AS orders
FROM
(
    SELECT order_id, argMax(currency, occurred_at) AS order_currency,
           argMax(amount, occurred_at) AS last_amount,
           argMax(status, occurred_at) AS last_status,
           max(status IN ('paid', 'shipped', 'delivered')) AS sold
    FROM cx_events FINAL
    WHERE event_type = 'order' AND {_PERIOD}
    GROUP BY order_id
)
WHERE sold AND last_status NOT IN ('cancelled', 'refunded', 'returned')
GROUP BY order_currency
ORDER BY order_currency
"""

LATEST_SCORES_SQL = """
SELECT count() AS customers, avg(cxi) AS avg_cxi, avg(churn_risk) AS avg_churn_risk,
       countIf(churn_risk >= 0.5) AS at_risk, sum(revenue_at_risk) AS total_revenue_at_risk,
       sum(open_complaints) AS total_open_complaints
FROM cx_scores_latest FINAL
"""

EVENT_TOTALS_SQL = f"""
SELECT count() AS events, uniqExact(customer_id) AS customers,
       countIf(event_type = 'touchpoint') AS touchpoints, countIf(event_type = 'order') AS orders,
       countIf(event_type = 'complaint') AS complaint_events
FROM cx_events FINAL
WHERE {_PERIOD}
"""

# Dashboard time series from the hourly aggregate (cheap: no scan of cx_events).
HOURLY_SQL = """
SELECT hour, channel, stage, tier,
       sum(events) AS events, sum(touchpoints) AS touchpoints, sum(orders) AS orders,
       sum(late_fulfilments) AS late_fulfilments, sum(complaints) AS complaints,
       sum(csat_answers) AS csat_answers, sum(csat_satisfied) AS csat_satisfied,
       sum(nps_answers) AS nps_answers, sum(nps_promoters) AS nps_promoters,
       sum(nps_detractors) AS nps_detractors,
       sum(scores) AS scores, if(scores = 0, NULL, sum(cxi_sum) / scores) AS cxi_avg,
       quantilesMerge(0.1, 0.5, 0.9)(cxi_quantiles) AS cxi_quantiles,
       uniqExactMerge(sla_breaches) AS sla_breaches, uniqExactMerge(churn_alerts) AS churn_alerts
FROM cx_agg_hourly
WHERE hour >= {since:DateTime64(3, 'UTC')} AND hour < {until:DateTime64(3, 'UTC')}
GROUP BY hour, channel, stage, tier
ORDER BY hour, channel, stage, tier
"""

# Cases (cx_case_events): one row per case first — its alert, first acknowledgement and
# contact, and the close (outcome, playbook action, who closed it) — then shares and times
# by one dimension. Aggregates only: operators compare actions, channels and teams, the
# alerts never name a staff member.
CASES_SQL = """
SELECT alert_id,
       argMax(tier, occurred_at) AS tier,
       argMax(alert_type, occurred_at) AS alert_type,
       min(alert_fired_at) AS fired_at,
       min(acknowledged_at) AS acknowledged_at,
       min(first_contact_at) AS first_contact_at,
       argMinIf(channel, occurred_at, action = 'contacted') AS channel,
       max(action = 'closed') AS closed,
       argMaxIf(staff_id, occurred_at, action = 'closed') AS staff_id,
       argMaxIf(outcome, occurred_at, action = 'closed') AS outcome,
       argMaxIf(playbook_action, occurred_at, action = 'closed') AS playbook_action
FROM cx_case_events FINAL
WHERE alert_fired_at >= {since:DateTime64(3, 'UTC')} AND alert_fired_at < {until:DateTime64(3, 'UTC')}
GROUP BY alert_id
"""
CASE_DIMENSIONS = ("tier", "channel", "staff_id", "playbook_action", "alert_type")


def case_outcomes_sql(by: str) -> str:
    if by not in CASE_DIMENSIONS:
        raise ValueError(f"cases can be grouped by {', '.join(CASE_DIMENSIONS)}, not {by!r}")
    return f"""
SELECT {by} AS key,
       count() AS cases,
       countIf(closed) AS closed,
       countIf(outcome = 'retained') / nullIf(closed, 0) AS retained_share,
       countIf(outcome = 'lost') / nullIf(closed, 0) AS lost_share,
       countIf(outcome = 'unreachable') / nullIf(closed, 0) AS unreachable_share,
       countIf(outcome = 'not_needed') / nullIf(closed, 0) AS not_needed_share,
       median(dateDiff('millisecond', fired_at, acknowledged_at)) / 3600000 AS median_hours_to_ack,
       median(dateDiff('millisecond', fired_at, first_contact_at)) / 3600000 AS median_hours_to_contact
FROM ({CASES_SQL})
GROUP BY key
ORDER BY key
"""

def uplift_sql(horizon_days: float) -> str:
    """Churn alerts fired in the period whose horizon is over (before the latest stored event),
    by action (the recommended one, or the withheld one for control alerts) and arm: cases,
    churned (no event at all within the horizon after the alert), churn rate and mean revenue
    (paid orders in the horizon). README "Did the action work?"."""
    if not horizon_days > 0:
        raise ValueError(f"horizon must be positive, got {horizon_days}")
    h = f"toIntervalMillisecond({int(round(horizon_days * 86400000))})"
    return f"""
SELECT action, arm, count() AS cases, countIf(gone) AS churned, countIf(gone) / count() AS churn_rate,
       avg(revenue) AS mean_revenue
FROM
(
    SELECT a.alert_id AS alert_id, if(a.is_control, a.withheld, a.recommended) AS action,
           if(a.is_control, 'control', 'treated') AS arm,
           countIf(e.occurred_at > a.fired_at AND e.occurred_at <= a.fired_at + {h}) = 0 AS gone,
           sumIf(ifNull(e.amount, 0), e.event_type = 'order' AND e.status = 'paid'
                 AND e.occurred_at > a.fired_at AND e.occurred_at <= a.fired_at + {h}) AS revenue
    FROM
    (
        SELECT alert_id, any(customer_id) AS customer_id, min(as_of) AS fired_at,
               argMin(control, as_of) AS is_control, argMin(withheld_action, as_of) AS withheld,
               argMin(recommended_action, as_of) AS recommended
        FROM cx_alerts FINAL
        WHERE type = 'churn_risk' AND status = 'firing'
        GROUP BY alert_id
    ) AS a
    LEFT JOIN (SELECT customer_id, event_id, event_type, status, amount, occurred_at FROM cx_events FINAL) AS e
        ON e.customer_id = a.customer_id
    WHERE a.fired_at >= {{since:DateTime64(3, 'UTC')}} AND a.fired_at < {{until:DateTime64(3, 'UTC')}}
      AND a.fired_at + {h} <= (SELECT max(occurred_at) FROM cx_events)
    GROUP BY a.alert_id, a.is_control, a.withheld, a.recommended, a.fired_at
)
GROUP BY action, arm
ORDER BY action, arm
"""


def uplift_outcomes(client: Client, horizon_days: float, since: datetime | None = None,
                    until: datetime | None = None) -> list[dict[str, Any]]:
    """`uplift_sql` rows: action, arm (`treated` / `control`), cases, churned, churn_rate, mean_revenue."""
    rows = _dicts(client, uplift_sql(horizon_days), _period(since, until))
    for r in rows:
        r["churn_rate"], r["mean_revenue"] = _num(r["churn_rate"]), _num(r["mean_revenue"])
    return rows


# Open cases: alert episodes (escalations aside) not closed by an operator — still firing,
# or acknowledged and still being worked on after the score resolved them. Age from firing.
OPEN_CASES_SQL = """
SELECT a.alert_id AS alert_id, a.alert_type AS type, a.alert_tier AS tier, a.alert_severity AS severity,
       a.fired_at AS fired_at, dateDiff('second', a.fired_at, {now:DateTime64(3, 'UTC')}) / 3600 AS age_hours,
       a.is_resolved AS alert_resolved, c.acknowledged_at AS acknowledged_at, c.last_staff AS staff_id
FROM
(
    SELECT alert_id, argMax(type, as_of) AS alert_type, argMax(tier, as_of) AS alert_tier,
           argMaxIf(severity, as_of, status = 'firing') AS alert_severity,
           minIf(as_of, status = 'firing') AS fired_at, max(status = 'resolved') AS is_resolved
    FROM cx_alerts FINAL
    WHERE type != 'escalation'
    GROUP BY alert_id
    HAVING countIf(status = 'firing') > 0
) AS a
LEFT JOIN
(
    SELECT alert_id, min(acknowledged_at) AS acknowledged_at, max(action = 'closed') AS closed,
           argMax(staff_id, occurred_at) AS last_staff
    FROM cx_case_events FINAL
    GROUP BY alert_id
) AS c ON a.alert_id = c.alert_id
WHERE NOT c.closed AND (NOT a.is_resolved OR c.acknowledged_at IS NOT NULL)
ORDER BY fired_at, alert_id
"""
CASE_AGE_BUCKETS = ((4.0, "< 4 h"), (24.0, "4-24 h"), (72.0, "1-3 days"), (float("inf"), "> 3 days"))


# Live backtest (pipeline/domain/backtest.py): each customer's churn_risk as published at
# the prediction instant t - h (their latest score at or before it), and whether they had
# any accepted event in (t - h, t]: no event = churned, the definition churn_risk estimates.
LIVE_BACKTEST_SQL = """
WITH {as_of:DateTime64(3, 'UTC')} AS t, {as_of:DateTime64(3, 'UTC')} - toIntervalSecond({horizon_seconds:UInt64}) AS p
SELECT customer_id,
       argMax(churn_risk, version) AS churn_risk,
       argMax(tier, version) AS tier,
       customer_id IN (SELECT customer_id FROM cx_events FINAL WHERE occurred_at > p AND occurred_at <= t) AS active
FROM cx_scores_history FINAL
WHERE as_of <= p
GROUP BY customer_id
ORDER BY customer_id
"""

# The early warning as last published at or before p2 = t − 2H (argMax skips NULL: the
# latest score that carried one), for the customers active in (p2, p1] (still there), with
# whether they were active in (p1, t] (not: they left). One read of cx_events over (p2, t]
# gives both.
EARLY_WARNING_BACKTEST_SQL = """
WITH {as_of:DateTime64(3, 'UTC')} AS t,
     t - toIntervalSecond({horizon_seconds:UInt64}) AS p1,
     p1 - toIntervalSecond({horizon_seconds:UInt64}) AS p2
SELECT s.customer_id AS customer_id, s.early_warning AS early_warning, e.after AS after
FROM
(
    SELECT customer_id, argMax(early_warning, version) AS early_warning
    FROM cx_scores_history FINAL
    WHERE as_of <= p2
    GROUP BY customer_id
    HAVING early_warning IS NOT NULL
) AS s
INNER JOIN
(
    SELECT customer_id, max(occurred_at > p1) AS after
    FROM cx_events FINAL
    WHERE occurred_at > p2 AND occurred_at <= t
    GROUP BY customer_id
    HAVING min(occurred_at) <= p1
) AS e ON e.customer_id = s.customer_id
ORDER BY customer_id
"""


def _period(since: datetime | None, until: datetime | None) -> dict[str, datetime]:
    return {"since": since or EPOCH, "until": until or FAR_FUTURE}


def _dicts(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return list(client.query(sql, parameters=parameters or {}).named_results())


def _one(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = _dicts(client, sql, parameters)
    return rows[0] if rows else {}


def _num(v: Any) -> float | None:
    """A number, or None for NULL / NaN (avg of nothing)."""
    return None if v is None or v != v else float(v)


def table_counts(client: Client) -> dict[str, int]:
    """Rows per table (logical rows: duplicates collapsed on ReplacingMergeTree tables)."""
    return {r["table"]: int(r["n"]) for r in _dicts(client, TABLE_COUNTS_SQL)}


def csat(client: Client, since: datetime | None = None, until: datetime | None = None) -> float | None:
    """CSAT %: share of 4-5 answers among 1-5 answers in [since, until); None without answers."""
    return _num(_one(client, CSAT_SQL, _period(since, until)).get("csat_pct"))


def nps(client: Client, since: datetime | None = None, until: datetime | None = None) -> float | None:
    """NPS: % promoters (9-10) - % detractors (0-6) in [since, until); None without answers."""
    return _num(_one(client, NPS_SQL, _period(since, until)).get("nps_score"))


def retention(client: Client, period_days: float = 30.0, as_of: datetime | None = None) -> dict[str, Any]:
    """Retention rate over two consecutive periods of `period_days` ending at `as_of`.

    With T = as_of (default: the latest event time in cx_events) and p = period_days:
    the previous period is (T - 2p, T - p], the last period is (T - p, T]. A customer is
    *active* in a period when they have at least one accepted event (any type) in it.
    retention = |active in previous ∩ active in last| / |active in previous|.
    Returns {"as_of", "period_days", "previous_active", "retained", "rate"}; rate is None
    when nobody was active in the previous period.
    """
    if as_of is None:
        as_of = client.query(LAST_EVENT_SQL).result_rows[0][0]
        if as_of is None or as_of <= EPOCH:
            return {"as_of": None, "period_days": period_days, "previous_active": 0, "retained": 0, "rate": None}
    row = _one(client, RETENTION_SQL, {"as_of": as_of, "period_seconds": int(period_days * 86400)})
    prev, kept = int(row.get("previous_active") or 0), int(row.get("retained") or 0)
    return {"as_of": as_of, "period_days": period_days, "previous_active": prev, "retained": kept,
            "rate": (kept / prev) if prev else None}


# Numbered alert episodes (churn risk, failed recovery) never resolved (a restarted worker
# withdraws the ones a crash left behind: pipeline/service/worker_loop.py `find_left_behind`).
OPEN_NUMBERED_ALERTS_SQL = """
SELECT customer_id, alert_id, type, argMax(severity, as_of) AS severity, argMax(tier, as_of) AS tier,
       toFloat64(max(as_of)) AS fired_at, any(complaint_id) AS complaint_id
FROM cx_alerts FINAL
WHERE type IN {types:Array(String)}
GROUP BY customer_id, alert_id, type
HAVING NOT has(groupArray(status), 'resolved')
"""


def open_numbered_alerts(client: Client) -> list[StoredAlert]:
    return [StoredAlert(r["customer_id"], r["alert_id"], r["severity"], r["tier"], float(r["fired_at"]),
                        r["type"], r["complaint_id"] or None)
            for r in _dicts(client, OPEN_NUMBERED_ALERTS_SQL, {"types": list(NUMBERED_TYPES)})]


def churn_alerts_by_tier(client: Client) -> list[dict[str, Any]]:
    """Per tier: churn-alert episodes ever, firing now, firing critical, revenue at risk of firing."""
    return [
        {"tier": r["tier"], "episodes": int(r["episodes"]), "firing": int(r["firing"]),
         "critical": int(r["critical"]), "revenue_at_risk": float(r["revenue_at_risk"])}
        for r in _dicts(client, CHURN_ALERTS_BY_TIER_SQL)
    ]


def sla_compliance_by_channel(client: Client, since: datetime | None = None,
                              until: datetime | None = None) -> list[dict[str, Any]]:
    """Per channel, complaints opened in [since, until): complaints, decided (breached or
    resolved), breached, open (undecided), compliance = (decided - breached) / decided."""
    return [
        {"channel": r["channel"], "complaints": int(r["n_complaints"]), "decided": int(r["n_decided"]),
         "breached": int(r["n_breached"]), "open": int(r["n_open"]), "compliance": _num(r["compliance"])}
        for r in _dicts(client, SLA_COMPLIANCE_BY_CHANNEL_SQL, _period(since, until))
    ]


def where_experience_breaks(client: Client, since: datetime | None = None,
                            until: datetime | None = None) -> list[dict[str, Any]]:
    """SERVQUAL dimension x journey stage: answers, average rating (1-5) and score (0-100),
    worst first."""
    return [
        {"stage": r["stage"], "dimension": r["dimension"], "answers": int(r["answers"]),
         "avg_rating": float(r["avg_rating"]), "score": float(r["score"])}
        for r in _dicts(client, WHERE_EXPERIENCE_BREAKS_SQL, _period(since, until))
    ]


def revenue(client: Client, since: datetime | None = None, until: datetime | None = None) -> dict[str, float]:
    """Service revenue per currency (see REVENUE_SQL for which orders count)."""
    return {r["currency"]: float(r["revenue"]) for r in _dicts(client, REVENUE_SQL, _period(since, until))}


def hourly(client: Client, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """The hourly aggregate, merged: one dict per hour x channel x stage x tier."""
    return _dicts(client, HOURLY_SQL, _period(since, until))


def kpis(client: Client, retention_days: float = 30.0) -> dict[str, Any]:
    """The headline numbers for the demo summary, over everything stored."""
    totals = _one(client, EVENT_TOTALS_SQL, _period(None, None))
    latest = _one(client, LATEST_SCORES_SQL)
    alerts = churn_alerts_by_tier(client)
    sla = sla_compliance_by_channel(client)
    decided = sum(r["decided"] for r in sla)
    breached = sum(r["breached"] for r in sla)
    return {
        "events": int(totals.get("events") or 0),
        "customers": int(totals.get("customers") or 0),
        "touchpoints": int(totals.get("touchpoints") or 0),
        "orders": int(totals.get("orders") or 0),
        "complaint_events": int(totals.get("complaint_events") or 0),
        "csat": csat(client),
        "nps": nps(client),
        "retention": retention(client, retention_days)["rate"],
        "revenue": revenue(client),
        "scored_customers": int(latest.get("customers") or 0),
        "avg_cxi": _num(latest.get("avg_cxi")),
        "customers_at_risk": int(latest.get("at_risk") or 0),
        "revenue_at_risk": float(latest.get("total_revenue_at_risk") or 0.0),
        "open_complaints": int(latest.get("total_open_complaints") or 0),
        "churn_alerts_firing": sum(r["firing"] for r in alerts),
        "sla_compliance": ((decided - breached) / decided) if decided else None,
    }


def live_backtest_rows(client: Client, horizon_days: float = 30.0,
                       as_of: datetime | None = None) -> tuple[datetime | None, list[BacktestRow]]:
    """(as_of, rows) for the live backtest: every customer with a score published at or before
    as_of − horizon_days, their latest such risk and tier, and whether they were active in
    (as_of − horizon_days, as_of]. as_of defaults to the latest event time in cx_events
    (the stream clock); (None, []) when nothing is stored."""
    if as_of is None:
        as_of = client.query(LAST_EVENT_SQL).result_rows[0][0]
        if as_of is None or as_of <= EPOCH:
            return None, []
        as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
    rows = _dicts(client, LIVE_BACKTEST_SQL, {"as_of": as_of, "horizon_seconds": int(horizon_days * 86400)})
    return as_of, [BacktestRow(r["customer_id"], float(r["churn_risk"]), r["tier"], bool(r["active"])) for r in rows]


def early_warning_backtest_rows(client: Client, horizon_days: float, as_of: datetime) -> list[EarlyWarningRow]:
    """The early warning's live backtest rows at `as_of` (pipeline/domain/backtest.py): every
    customer with an early warning published at or before as_of − 2·horizon_days who was
    active in the horizon after it, with whether they were active in the last horizon."""
    rows = _dicts(client, EARLY_WARNING_BACKTEST_SQL, {"as_of": as_of, "horizon_seconds": int(horizon_days * 86400)})
    return [EarlyWarningRow(r["customer_id"], float(r["early_warning"]), not r["after"]) for r in rows]


def case_outcomes(client: Client, by: str = "tier", since: datetime | None = None,
                  until: datetime | None = None) -> list[dict[str, Any]]:
    """Cases of alerts fired in [since, until) by `by` (CASE_DIMENSIONS): how many, how many
    closed, outcome shares among the closed, median hours from the alert to the first
    acknowledgement and to the first contact (None where there is none)."""
    rows = _dicts(client, case_outcomes_sql(by), _period(since, until))
    for r in rows:
        for k in ("retained_share", "lost_share", "unreachable_share", "not_needed_share",
                  "median_hours_to_ack", "median_hours_to_contact"):
            r[k] = _num(r[k])
    return rows


def open_cases(client: Client, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary, cases): open cases counted by tier x age bucket (CASE_AGE_BUCKETS) with how many
    are unacknowledged, and every open case oldest first (`cxpulse cases`)."""
    cases = _dicts(client, OPEN_CASES_SQL, {"now": now})
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cases:
        bucket = next(label for limit, label in CASE_AGE_BUCKETS if float(c["age_hours"]) < limit)
        row = summary.setdefault((c["tier"], bucket), {"tier": c["tier"], "age": bucket, "open": 0,
                                                        "unacknowledged": 0, "critical": 0})
        row["open"] += 1
        row["unacknowledged"] += c["acknowledged_at"] is None
        row["critical"] += c["severity"] == "critical"
    order = {label: i for i, (_, label) in enumerate(CASE_AGE_BUCKETS)}
    return sorted(summary.values(), key=lambda r: (r["tier"], order[r["age"]])), cases
