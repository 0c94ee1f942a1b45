-- cxpulse ClickHouse schema, part 6: the churn-alert count from deduplicated rows.
--
-- Until now cx_agg_hourly's churn_alerts came from a materialized view on cx_alerts inserts
-- (cx_agg_hourly_ids_alerts_mv). A worker killed (SIGKILL) inside an insert can leave the
-- cx_alerts rows stored without the view's push; the micro-batch is delivered again, and an
-- alert often fires alone in its batch, so the retried cx_alerts insert has the same rows,
-- hence the same dedup token, and ClickHouse drops it with the view's push: the view counted
-- one alert fewer (6 vs 7 once in the kill -9 drill). Now the sink writes each alert state
-- change to cx_alert_facts too, as an insert of its own (its own dedup token: a lost insert
-- is made again by the redelivery, a repeated one is dropped), and cx_agg_hourly counts
-- churn alerts at query time from cx_alert_facts FINAL, like the other measures of 004.
-- cx_alert_facts has no customer id (alert_id is a one-way hash of customer, rule and start;
-- 002 kept the same ids in uniqExact states): an erasure leaves it, like the other aggregates.
-- The migration fills it from cx_alerts; churn alerts of customers erased before it (only in
-- the old uniqExact states) are not carried over.

-- cx_alert_facts: one row per alert episode and state (the latest as_of wins), as cx_alerts
-- without customer, scores or reasons. TTL 3 years like the aggregates.
CREATE TABLE IF NOT EXISTS cx_alert_facts
(
    alert_id  String,
    type      LowCardinality(String),
    status    LowCardinality(String),
    tier      LowCardinality(String),
    as_of     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(as_of)
ORDER BY (alert_id, status)
TTL toDateTime(as_of) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000;

DROP VIEW IF EXISTS cx_agg_hourly_ids_alerts_mv;

INSERT INTO cx_alert_facts SELECT alert_id, type, status, tier, as_of FROM cx_alerts FINAL;

-- cx_agg_hourly: as in 004 (same columns), churn_alerts from cx_alert_facts.
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
FROM cx_alert_facts FINAL
WHERE type = 'churn_risk' AND status = 'firing'
GROUP BY hour, channel, stage, tier;
