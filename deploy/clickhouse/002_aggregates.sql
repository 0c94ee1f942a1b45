-- cxpulse ClickHouse schema, part 2: anonymous aggregates fed by materialized views.
-- No customer ids here, so erasure leaves them alone. Measures are stored as sums and
-- counts (SimpleAggregateFunction(sum)) so ratios are recomputed exactly at read time:
--   CSAT % = 100 * sum(csat_satisfied) / sum(csat_answers)
--   NPS    = 100 * (sum(nps_promoters) - sum(nps_detractors)) / sum(nps_answers)
-- A retried insert deduplicated at its source table does not fire these views, so
-- retries never double count. Read with GROUP BY + sum()/-Merge (merges are lazy).

-- cx_agg_hourly: per hour x channel x journey stage x tier.
-- ORDER BY (hour, channel, stage, tier): the grouping key itself (AggregatingMergeTree
--   folds rows with equal keys); hour first because every dashboard filters by time.
-- PARTITION BY month: pruning for time ranges, TTL drops whole months.
-- TTL 3 years: aggregates are anonymous and small; long history for trends/seasonality.
-- Measures from scores and alerts have no channel (''), from complaints/alerts no stage ('').
CREATE TABLE IF NOT EXISTS cx_agg_hourly
(
    hour             DateTime64(3, 'UTC'),
    channel          LowCardinality(String),
    stage            LowCardinality(String),
    tier             LowCardinality(String),
    events           SimpleAggregateFunction(sum, UInt64),
    touchpoints      SimpleAggregateFunction(sum, UInt64),
    orders           SimpleAggregateFunction(sum, UInt64),
    late_fulfilments SimpleAggregateFunction(sum, UInt64),
    complaints       SimpleAggregateFunction(sum, UInt64),
    csat_answers     SimpleAggregateFunction(sum, UInt64),
    csat_satisfied   SimpleAggregateFunction(sum, UInt64),
    nps_answers      SimpleAggregateFunction(sum, UInt64),
    nps_promoters    SimpleAggregateFunction(sum, UInt64),
    nps_detractors   SimpleAggregateFunction(sum, UInt64),
    scores           SimpleAggregateFunction(sum, UInt64),
    cxi_sum          SimpleAggregateFunction(sum, Float64),
    cxi_quantiles    AggregateFunction(quantiles(0.1, 0.5, 0.9), Float64),
    sla_breaches     AggregateFunction(uniqExact, String),
    churn_alerts     AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, channel, stage, tier)
TTL toDateTime(hour) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- Events: counts, CSAT and NPS components, complaints opened, late fulfilments.
CREATE MATERIALIZED VIEW IF NOT EXISTS cx_agg_hourly_events_mv TO cx_agg_hourly
AS SELECT
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
    countIf(ifNull(nps <= 6, 0)) AS nps_detractors
FROM cx_events
GROUP BY hour, channel, stage, tier;

-- Scores: CXI average (cxi_sum / scores) and quantiles over every published score update.
CREATE MATERIALIZED VIEW IF NOT EXISTS cx_agg_hourly_scores_mv TO cx_agg_hourly
AS SELECT
    toDateTime64(toStartOfHour(as_of), 3, 'UTC') AS hour,
    '' AS channel, stage, tier,
    count() AS scores,
    sum(assumeNotNull(cxi)) AS cxi_sum,
    quantilesState(0.1, 0.5, 0.9)(assumeNotNull(cxi)) AS cxi_quantiles
FROM cx_scores_history
WHERE cxi IS NOT NULL
GROUP BY hour, channel, stage, tier;

-- Complaints: SLA breaches, distinct complaints (a complaint writes several versions),
-- counted in the hour the breach happened (its due time).
CREATE MATERIALIZED VIEW IF NOT EXISTS cx_agg_hourly_sla_mv TO cx_agg_hourly
AS SELECT
    toDateTime64(toStartOfHour(coalesce(due_at, opened_at)), 3, 'UTC') AS hour,
    channel, '' AS stage, tier,
    uniqExactState(complaint_id) AS sla_breaches
FROM cx_complaints
WHERE breached
GROUP BY hour, channel, stage, tier;

-- Alerts: distinct churn-risk alert episodes that fired, in the hour of the firing notice.
CREATE MATERIALIZED VIEW IF NOT EXISTS cx_agg_hourly_alerts_mv TO cx_agg_hourly
AS SELECT
    toDateTime64(toStartOfHour(as_of), 3, 'UTC') AS hour,
    '' AS channel, '' AS stage, tier,
    uniqExactState(alert_id) AS churn_alerts
FROM cx_alerts
WHERE type = 'churn_risk' AND status = 'firing'
GROUP BY hour, channel, stage, tier;

-- cx_quality_channel: service quality per day x channel x stage (touchpoints only):
-- responsiveness (wait, handle), reliability (first-contact resolution), effort (handoffs),
-- SERVQUAL ratings, CSAT, sentiment. Sums and counts; averages = sum / n at read time.
-- ORDER BY (channel, day, stage): channel dashboards read one channel over time.
-- PARTITION BY month, TTL 3 years: anonymous, as for cx_agg_hourly.
CREATE TABLE IF NOT EXISTS cx_quality_channel
(
    day               Date,
    channel           LowCardinality(String),
    stage             LowCardinality(String),
    touchpoints       SimpleAggregateFunction(sum, UInt64),
    wait_n            SimpleAggregateFunction(sum, UInt64),
    wait_sum          SimpleAggregateFunction(sum, Float64),
    handle_n          SimpleAggregateFunction(sum, UInt64),
    handle_sum        SimpleAggregateFunction(sum, Float64),
    resolved_n        SimpleAggregateFunction(sum, UInt64),
    resolved_yes      SimpleAggregateFunction(sum, UInt64),
    handoffs_n        SimpleAggregateFunction(sum, UInt64),
    handoffs_sum      SimpleAggregateFunction(sum, UInt64),
    tangibles_n       SimpleAggregateFunction(sum, UInt64),
    tangibles_sum     SimpleAggregateFunction(sum, UInt64),
    reliability_n     SimpleAggregateFunction(sum, UInt64),
    reliability_sum   SimpleAggregateFunction(sum, UInt64),
    responsiveness_n  SimpleAggregateFunction(sum, UInt64),
    responsiveness_sum SimpleAggregateFunction(sum, UInt64),
    assurance_n       SimpleAggregateFunction(sum, UInt64),
    assurance_sum     SimpleAggregateFunction(sum, UInt64),
    empathy_n         SimpleAggregateFunction(sum, UInt64),
    empathy_sum       SimpleAggregateFunction(sum, UInt64),
    csat_answers      SimpleAggregateFunction(sum, UInt64),
    csat_satisfied    SimpleAggregateFunction(sum, UInt64),
    sentiment_n       SimpleAggregateFunction(sum, UInt64),
    sentiment_sum     SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (channel, day, stage)
TTL day + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS cx_quality_channel_mv TO cx_quality_channel
AS SELECT
    toDate(occurred_at) AS day, channel, stage,
    count() AS touchpoints,
    count(wait_seconds) AS wait_n, sum(ifNull(wait_seconds, 0)) AS wait_sum,
    count(handle_seconds) AS handle_n, sum(ifNull(handle_seconds, 0)) AS handle_sum,
    count(resolved) AS resolved_n, countIf(ifNull(resolved, false)) AS resolved_yes,
    count(handoffs) AS handoffs_n, sum(toUInt64(ifNull(handoffs, 0))) AS handoffs_sum,
    count(rating_tangibles) AS tangibles_n, sum(toUInt64(ifNull(rating_tangibles, 0))) AS tangibles_sum,
    count(rating_reliability) AS reliability_n, sum(toUInt64(ifNull(rating_reliability, 0))) AS reliability_sum,
    count(rating_responsiveness) AS responsiveness_n, sum(toUInt64(ifNull(rating_responsiveness, 0))) AS responsiveness_sum,
    count(rating_assurance) AS assurance_n, sum(toUInt64(ifNull(rating_assurance, 0))) AS assurance_sum,
    count(rating_empathy) AS empathy_n, sum(toUInt64(ifNull(rating_empathy, 0))) AS empathy_sum,
    count(csat) AS csat_answers, countIf(ifNull(csat >= 4, 0)) AS csat_satisfied,
    count(sentiment) AS sentiment_n, sum(toFloat64(ifNull(sentiment, 0))) AS sentiment_sum
FROM cx_events
WHERE event_type = 'touchpoint'
GROUP BY day, channel, stage;

-- cx_quality_staff: the same measures per day x staff member x channel (service-profit
-- chain: quality per staff member, an aggregate for coaching, never a blame list in alerts).
-- ORDER BY (staff_id, day, channel): staff dashboards read one person over time.
-- PARTITION BY month, TTL 3 years. Staff ids are employee ids, not customer data.
CREATE TABLE IF NOT EXISTS cx_quality_staff
(
    day               Date,
    staff_id          String,
    channel           LowCardinality(String),
    touchpoints       SimpleAggregateFunction(sum, UInt64),
    wait_n            SimpleAggregateFunction(sum, UInt64),
    wait_sum          SimpleAggregateFunction(sum, Float64),
    handle_n          SimpleAggregateFunction(sum, UInt64),
    handle_sum        SimpleAggregateFunction(sum, Float64),
    resolved_n        SimpleAggregateFunction(sum, UInt64),
    resolved_yes      SimpleAggregateFunction(sum, UInt64),
    handoffs_n        SimpleAggregateFunction(sum, UInt64),
    handoffs_sum      SimpleAggregateFunction(sum, UInt64),
    tangibles_n       SimpleAggregateFunction(sum, UInt64),
    tangibles_sum     SimpleAggregateFunction(sum, UInt64),
    reliability_n     SimpleAggregateFunction(sum, UInt64),
    reliability_sum   SimpleAggregateFunction(sum, UInt64),
    responsiveness_n  SimpleAggregateFunction(sum, UInt64),
    responsiveness_sum SimpleAggregateFunction(sum, UInt64),
    assurance_n       SimpleAggregateFunction(sum, UInt64),
    assurance_sum     SimpleAggregateFunction(sum, UInt64),
    empathy_n         SimpleAggregateFunction(sum, UInt64),
    empathy_sum       SimpleAggregateFunction(sum, UInt64),
    csat_answers      SimpleAggregateFunction(sum, UInt64),
    csat_satisfied    SimpleAggregateFunction(sum, UInt64),
    sentiment_n       SimpleAggregateFunction(sum, UInt64),
    sentiment_sum     SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (staff_id, day, channel)
TTL day + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS cx_quality_staff_mv TO cx_quality_staff
AS SELECT
    toDate(occurred_at) AS day, staff_id, channel,
    count() AS touchpoints,
    count(wait_seconds) AS wait_n, sum(ifNull(wait_seconds, 0)) AS wait_sum,
    count(handle_seconds) AS handle_n, sum(ifNull(handle_seconds, 0)) AS handle_sum,
    count(resolved) AS resolved_n, countIf(ifNull(resolved, false)) AS resolved_yes,
    count(handoffs) AS handoffs_n, sum(toUInt64(ifNull(handoffs, 0))) AS handoffs_sum,
    count(rating_tangibles) AS tangibles_n, sum(toUInt64(ifNull(rating_tangibles, 0))) AS tangibles_sum,
    count(rating_reliability) AS reliability_n, sum(toUInt64(ifNull(rating_reliability, 0))) AS reliability_sum,
    count(rating_responsiveness) AS responsiveness_n, sum(toUInt64(ifNull(rating_responsiveness, 0))) AS responsiveness_sum,
    count(rating_assurance) AS assurance_n, sum(toUInt64(ifNull(rating_assurance, 0))) AS assurance_sum,
    count(rating_empathy) AS empathy_n, sum(toUInt64(ifNull(rating_empathy, 0))) AS empathy_sum,
    count(csat) AS csat_answers, countIf(ifNull(csat >= 4, 0)) AS csat_satisfied,
    count(sentiment) AS sentiment_n, sum(toFloat64(ifNull(sentiment, 0))) AS sentiment_sum
FROM cx_events
WHERE event_type = 'touchpoint' AND staff_id != ''
GROUP BY day, staff_id, channel;
