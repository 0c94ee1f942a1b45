-- cxpulse ClickHouse schema, part 12: the churn-alert count from cx_alert_facts and cx_alerts.
--
-- The sink writes a batch's alert rows to cx_alerts and then to cx_alert_facts, two inserts
-- (006). A worker killed between them leaves the alerts in cx_alerts only; the redelivered batch
-- makes the facts insert when it computes the same alert rows. It does not always: an alert
-- depends on the micro-batch boundaries (a customer is evaluated once per batch, after the
-- batch's events) and the redelivery cuts its batches anew, so it can fire the customer's alert
-- at another event, under another id (docs/fault-tolerance.md, "Alert ids after a crash").
-- The kill -9 drill saw it: 7 churn alerts counted against 9 in cx_alerts, two customers with
-- two firing churn ids each, the first only in cx_alerts. The count now takes the distinct ids
-- of both tables: equal to cx_alerts while the customers are there, and it keeps the alerts of
-- erased customers (their cx_alerts rows are gone, their facts stay), as 006 did.
-- No data changes; only the view is restated (same columns).

DROP VIEW IF EXISTS cx_agg_hourly;

CREATE VIEW IF NOT EXISTS cx_agg_hourly AS
SELECT
    toDateTime64(toStartOfHour(occurred_at), 3, 'UTC') AS hour,
    channel, stage, tier,
    count() AS events,
    countIf(event_type = 'touchpoint') AS touchpoints,
    countIf(event_type = 'order') AS orders,
    countIf(ifNull(lateness_seconds > 0, 0)) AS late_fulfilments,
    countIf(event_type = 'complaint' AND status = 'opened') AS complaints,
    countIf(csat IS NOT NULL) AS csat_answers,
    countIf(ifNull(csat >= 4, 0)) AS csat_satisfied,
    countIf(nps IS NOT NULL) AS nps_answers,
    countIf(ifNull(nps >= 9, 0)) AS nps_promoters,
    countIf(ifNull(nps <= 6, 0)) AS nps_detractors,
    toUInt64(0) AS scores,
    toFloat64(0) AS cxi_sum,
    quantilesStateIf(0.1, 0.5, 0.9)(toFloat64(0), 0) AS cxi_quantiles,
    uniqExactStateIf('', 0) AS sla_breaches,
    uniqExactStateIf('', 0) AS churn_alerts
FROM cx_event_facts FINAL
GROUP BY hour, channel, stage, tier
UNION ALL
SELECT
    toDateTime64(toStartOfHour(as_of), 3, 'UTC') AS hour,
    '' AS channel, stage, tier,
    toUInt64(0) AS events, toUInt64(0) AS touchpoints, toUInt64(0) AS orders,
    toUInt64(0) AS late_fulfilments, toUInt64(0) AS complaints,
    toUInt64(0) AS csat_answers, toUInt64(0) AS csat_satisfied,
    toUInt64(0) AS nps_answers, toUInt64(0) AS nps_promoters, toUInt64(0) AS nps_detractors,
    count() AS scores,
    sum(assumeNotNull(cxi)) AS cxi_sum,
    quantilesState(0.1, 0.5, 0.9)(assumeNotNull(cxi)) AS cxi_quantiles,
    uniqExactStateIf('', 0) AS sla_breaches,
    uniqExactStateIf('', 0) AS churn_alerts
FROM cx_score_facts FINAL
WHERE cxi IS NOT NULL
GROUP BY hour, channel, stage, tier
UNION ALL
SELECT
    hour, channel, stage, tier,
    toUInt64(0) AS events, toUInt64(0) AS touchpoints, toUInt64(0) AS orders,
    toUInt64(0) AS late_fulfilments, toUInt64(0) AS complaints,
    toUInt64(0) AS csat_answers, toUInt64(0) AS csat_satisfied,
    toUInt64(0) AS nps_answers, toUInt64(0) AS nps_promoters, toUInt64(0) AS nps_detractors,
    toUInt64(0) AS scores,
    toFloat64(0) AS cxi_sum,
    quantilesStateIf(0.1, 0.5, 0.9)(toFloat64(0), 0) AS cxi_quantiles,
    uniqExactMergeState(sla_breaches) AS sla_breaches,
    uniqExactStateIf('', 0) AS churn_alerts
FROM cx_agg_hourly_ids
GROUP BY hour, channel, stage, tier
UNION ALL
SELECT
    toDateTime64(toStartOfHour(as_of), 3, 'UTC') AS hour,
    '' AS channel, '' AS stage, tier,
    toUInt64(0) AS events, toUInt64(0) AS touchpoints, toUInt64(0) AS orders,
    toUInt64(0) AS late_fulfilments, toUInt64(0) AS complaints,
    toUInt64(0) AS csat_answers, toUInt64(0) AS csat_satisfied,
    toUInt64(0) AS nps_answers, toUInt64(0) AS nps_promoters, toUInt64(0) AS nps_detractors,
    toUInt64(0) AS scores,
    toFloat64(0) AS cxi_sum,
    quantilesStateIf(0.1, 0.5, 0.9)(toFloat64(0), 0) AS cxi_quantiles,
    uniqExactStateIf('', 0) AS sla_breaches,
    uniqExactState(alert_id) AS churn_alerts
FROM
(
    SELECT alert_id, tier, as_of FROM cx_alert_facts FINAL WHERE type = 'churn_risk' AND status = 'firing'
    UNION ALL
    SELECT alert_id, tier, as_of FROM cx_alerts FINAL WHERE type = 'churn_risk' AND status = 'firing'
)
GROUP BY hour, channel, stage, tier;
