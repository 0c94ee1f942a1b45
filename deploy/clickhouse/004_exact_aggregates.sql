-- cxpulse ClickHouse schema, part 3: aggregates that stay exact under redelivery.
--
-- Until 002 the hourly and quality aggregates were summed by materialized views at insert
-- time. A worker that crashes re-delivers the events of its unfinished micro-batch in a
-- differently composed batch: the insert dedup token does not match, the base tables
-- (ReplacingMergeTree, read with FINAL) collapse the repeat, and the views counted it a
-- second time. Now:
--   * cx_event_facts / cx_score_facts keep one anonymous row per event (by event_id) and per
--     published score (by a hash of customer and version): ReplacingMergeTree, so a
--     re-delivered row replaces its earlier copy instead of adding to it;
--   * cx_agg_hourly_ids keeps the distinct-id measures (SLA breaches, churn alerts) as
--     uniqExact states, which are idempotent by nature (a repeated id is counted once);
--   * cx_agg_hourly, cx_quality_channel and cx_quality_staff are views of the same names
--     and columns, aggregated at query time from the deduplicated rows (FINAL). Readers
--     keep their GROUP BY + sum()/-Merge queries.
-- No customer ids in these tables (an erasure leaves them, as before). The migration fills
-- them from the base tables; pre-migration aggregates of events no longer in cx_events
-- (older than its 400-day TTL, or of erased customers) are not carried over, the
-- distinct-id measures are.

DROP VIEW IF EXISTS cx_agg_hourly_events_mv;
DROP VIEW IF EXISTS cx_agg_hourly_scores_mv;
DROP VIEW IF EXISTS cx_quality_channel_mv;
DROP VIEW IF EXISTS cx_quality_staff_mv;

-- cx_event_facts: the measures of every accepted event, no customer or order ids.
-- ORDER BY event_id (the contract's identity: a redelivery collapses onto its original);
-- PARTITION BY month of event time (constant per event, so repeats meet in one partition).
CREATE TABLE IF NOT EXISTS cx_event_facts
(
    event_id          String,
    occurred_at       DateTime64(3, 'UTC'),
    event_type        LowCardinality(String),
    channel           LowCardinality(String),
    tier              LowCardinality(String),
    stage             LowCardinality(String),
    staff_id          String,
    status            LowCardinality(String),
    lateness_seconds  Nullable(Float64),
    csat              Nullable(UInt8),
    nps               Nullable(UInt8),
    wait_seconds      Nullable(Float64),
    handle_seconds    Nullable(Float64),
    resolved          Nullable(Bool),
    handoffs          Nullable(UInt16),
    rating_tangibles      Nullable(UInt8),
    rating_reliability    Nullable(UInt8),
    rating_responsiveness Nullable(UInt8),
    rating_assurance      Nullable(UInt8),
    rating_empathy        Nullable(UInt8),
    sentiment         Nullable(Float32)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id
TTL toDateTime(occurred_at) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS cx_event_facts_mv TO cx_event_facts
AS SELECT event_id, occurred_at, event_type, channel, tier, stage, staff_id, status, lateness_seconds, csat, nps, wait_seconds, handle_seconds, resolved, handoffs, rating_tangibles, rating_reliability, rating_responsiveness, rating_assurance, rating_empathy, sentiment
FROM cx_events;

INSERT INTO cx_event_facts SELECT event_id, occurred_at, event_type, channel, tier, stage, staff_id, status, lateness_seconds, csat, nps, wait_seconds, handle_seconds, resolved, handoffs, rating_tangibles, rating_reliability, rating_responsiveness, rating_assurance, rating_empathy, sentiment FROM cx_events FINAL;

-- cx_score_facts: one row per published score update. score_key = sipHash128(customer_id,
-- version): a republished score (same customer and version) replaces its copy; the hash
-- is one-way, like the uniqExact states of ids that 002 already kept.
CREATE TABLE IF NOT EXISTS cx_score_facts
(
    score_key  FixedString(16),
    as_of      DateTime64(3, 'UTC'),
    tier       LowCardinality(String),
    stage      LowCardinality(String),
    cxi        Nullable(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(as_of)
ORDER BY score_key
TTL toDateTime(as_of) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS cx_score_facts_mv TO cx_score_facts
AS SELECT sipHash128(customer_id, version) AS score_key, as_of, tier, stage, cxi
FROM cx_scores_history;

INSERT INTO cx_score_facts SELECT sipHash128(customer_id, version), as_of, tier, stage, cxi FROM cx_scores_history FINAL;

-- cx_agg_hourly_ids: distinct complaints breached and churn alerts fired, per hour x channel
-- x stage x tier (uniqExact states: a re-delivered id adds nothing).
CREATE TABLE IF NOT EXISTS cx_agg_hourly_ids
(
    hour          DateTime64(3, 'UTC'),
    channel       LowCardinality(String),
    stage         LowCardinality(String),
    tier          LowCardinality(String),
    sla_breaches  AggregateFunction(uniqExact, String),
    churn_alerts  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, channel, stage, tier)
TTL toDateTime(hour) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS cx_agg_hourly_ids_sla_mv TO cx_agg_hourly_ids
AS SELECT
    toDateTime64(toStartOfHour(coalesce(due_at, opened_at)), 3, 'UTC') AS hour,
    channel, '' AS stage, tier,
    uniqExactState(complaint_id) AS sla_breaches
FROM cx_complaints
WHERE breached
GROUP BY hour, channel, stage, tier;

CREATE MATERIALIZED VIEW IF NOT EXISTS cx_agg_hourly_ids_alerts_mv TO cx_agg_hourly_ids
AS SELECT
    toDateTime64(toStartOfHour(as_of), 3, 'UTC') AS hour,
    '' AS channel, '' AS stage, tier,
    uniqExactState(alert_id) AS churn_alerts
FROM cx_alerts
WHERE type = 'churn_risk' AND status = 'firing'
GROUP BY hour, channel, stage, tier;

-- Carry the distinct-id measures over from 002's table (idempotent: uniqExact states).
INSERT INTO cx_agg_hourly_ids SELECT hour, channel, stage, tier, sla_breaches, churn_alerts FROM cx_agg_hourly;

DROP VIEW IF EXISTS cx_agg_hourly_sla_mv;
DROP VIEW IF EXISTS cx_agg_hourly_alerts_mv;
DROP TABLE IF EXISTS cx_agg_hourly;
DROP TABLE IF EXISTS cx_quality_channel;
DROP TABLE IF EXISTS cx_quality_staff;

-- cx_agg_hourly: per hour x channel x journey stage x tier, as in 002 (same columns; read
-- with GROUP BY + sum()/-Merge). Measures from scores have no channel (''), from
-- complaints/alerts no stage ('').
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
    uniqExactMergeState(churn_alerts) AS churn_alerts
FROM cx_agg_hourly_ids
GROUP BY hour, channel, stage, tier;

-- cx_quality_channel: service quality per day x channel x stage (touchpoints only), as in 002.
CREATE VIEW IF NOT EXISTS cx_quality_channel AS
SELECT
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
FROM cx_event_facts FINAL
WHERE event_type = 'touchpoint'
GROUP BY day, channel, stage;

-- cx_quality_staff: the same measures per day x staff member x channel, as in 002.
CREATE VIEW IF NOT EXISTS cx_quality_staff AS
SELECT
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
FROM cx_event_facts FINAL
WHERE event_type = 'touchpoint' AND staff_id != ''
GROUP BY day, staff_id, channel;
