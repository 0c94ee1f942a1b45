-- cxpulse ClickHouse schema, part 1: the base tables the sink writes.
-- Applied by pipeline/clickhouse_migrations.py, statements separated by ';' at line end.
-- Every statement is idempotent (IF NOT EXISTS). All instants are DateTime64(3, 'UTC').
--
-- Exactly-once: the sink inserts each table's batch with insert_deduplication_token =
-- hash(rows); non_replicated_deduplication_window keeps the last N block tokens so a
-- retried insert is dropped (and, being dropped at the source, does not fire the
-- materialized views a second time). ReplacingMergeTree collapses re-deliveries that
-- arrive in a differently composed batch (after a worker crash); readers use FINAL.

-- cx_events: every accepted input event (touchpoint / order / complaint), ids and
-- derived measures only, no personal data.
-- ORDER BY (customer_id, event_id): event_id is the contract's identity, so a re-inserted
--   duplicate collapses; the customer_id prefix makes per-customer reads and erasure cheap.
-- PARTITION BY month of event time: time-range dashboards prune partitions, TTL drops
--   whole months, and a duplicate always lands in the same partition as its original.
-- TTL 400 days: 13 months of event-level (pseudonymous) data allow year-over-year views;
--   anything older lives on in the anonymous aggregates. ttl_only_drop_parts drops whole
--   expired parts instead of rewriting them.
CREATE TABLE IF NOT EXISTS cx_events
(
    event_id          String,
    event_type        LowCardinality(String),
    customer_id       String,
    occurred_at       DateTime64(3, 'UTC'),
    channel           LowCardinality(String),
    tier              LowCardinality(String),
    stage             LowCardinality(String),
    kind              LowCardinality(String),
    staff_id          String,
    wait_seconds      Nullable(Float64),
    handle_seconds    Nullable(Float64),
    resolved          Nullable(Bool),
    handoffs          Nullable(UInt16),
    rating_tangibles      Nullable(UInt8),
    rating_reliability    Nullable(UInt8),
    rating_responsiveness Nullable(UInt8),
    rating_assurance      Nullable(UInt8),
    rating_empathy        Nullable(UInt8),
    csat              Nullable(UInt8),
    nps               Nullable(UInt8),
    sentiment         Nullable(Float32),
    order_id          String,
    status            LowCardinality(String),
    amount            Nullable(Float64),
    currency          LowCardinality(String),
    promised_at       Nullable(DateTime64(3, 'UTC')),
    fulfilled_at      Nullable(DateTime64(3, 'UTC')),
    lateness_seconds  Nullable(Float64),
    complaint_id      String,
    category          LowCardinality(String),
    severity          LowCardinality(String),
    compensation      Nullable(Float64),
    satisfied         Nullable(Bool)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (customer_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL 400 DAY DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- cx_scores_history: every published cx.scores record.
-- ORDER BY (customer_id, version): version is monotonic per customer, so a republished
--   score collapses and a customer's trajectory is one contiguous range.
-- PARTITION BY month of as_of (a given (customer, version) always has the same as_of).
-- TTL 400 days: same reasoning as cx_events; the current state is in cx_scores_latest.
CREATE TABLE IF NOT EXISTS cx_scores_history
(
    customer_id          String,
    as_of                DateTime64(3, 'UTC'),
    version              UInt64,
    cxi                  Nullable(Float64),
    tangibles            Nullable(Float64),
    reliability          Nullable(Float64),
    responsiveness       Nullable(Float64),
    assurance            Nullable(Float64),
    empathy              Nullable(Float64),
    csat                 Nullable(Float64),
    nps                  Nullable(Float64),
    nps_class            LowCardinality(String),
    tier                 LowCardinality(String),
    stage                LowCardinality(String),
    revenue_365d         Float64,
    open_complaints      UInt32,
    sla_breaches         UInt32,
    churn_risk           Float64,
    driver_factors       Array(LowCardinality(String)),
    driver_contributions Array(Float64),
    revenue_at_risk      Float64,
    events               UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(as_of)
ORDER BY (customer_id, version)
TTL toDateTime(as_of) + INTERVAL 400 DAY DELETE
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- cx_scores_latest: the latest score per customer (the compacted cx.scores topic as a table).
-- ReplacingMergeTree(version) ORDER BY customer_id: merges keep the highest version;
--   read with FINAL (or argMax) for an exact answer before merges catch up.
-- No partition: one row per customer must be able to replace any older one.
-- No TTL: it is the customer's current state; erasure removes it on request.
CREATE TABLE IF NOT EXISTS cx_scores_latest
(
    customer_id          String,
    as_of                DateTime64(3, 'UTC'),
    version              UInt64,
    cxi                  Nullable(Float64),
    tangibles            Nullable(Float64),
    reliability          Nullable(Float64),
    responsiveness       Nullable(Float64),
    assurance            Nullable(Float64),
    empathy              Nullable(Float64),
    csat                 Nullable(Float64),
    nps                  Nullable(Float64),
    nps_class            LowCardinality(String),
    tier                 LowCardinality(String),
    stage                LowCardinality(String),
    revenue_365d         Float64,
    open_complaints      UInt32,
    sla_breaches         UInt32,
    churn_risk           Float64,
    driver_factors       Array(LowCardinality(String)),
    driver_contributions Array(Float64),
    revenue_at_risk      Float64,
    events               UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Fed from history by a materialized view, so the sink writes scores once.
CREATE MATERIALIZED VIEW IF NOT EXISTS cx_scores_latest_mv TO cx_scores_latest
AS SELECT * FROM cx_scores_history;

-- cx_alerts: alert state changes (firing -> resolved) from cx.alerts.
-- ReplacingMergeTree(as_of) ORDER BY (alert_id, status): one row per episode and state,
--   a re-published notice of the same state keeps the latest as_of.
-- No partition: an episode may fire in one month and resolve in the next, and a
--   re-published notice may carry a later as_of; volume is small.
-- TTL 2 years (row-level, by as_of): long enough to study alert precision over seasons.
CREATE TABLE IF NOT EXISTS cx_alerts
(
    alert_id           String,
    type               LowCardinality(String),
    status             LowCardinality(String),
    severity           LowCardinality(String),
    customer_id        String,
    tier               LowCardinality(String),
    as_of              DateTime64(3, 'UTC'),
    churn_risk         Float64,
    revenue_at_risk    Float64,
    reasons            Array(String),
    recommended_action String,
    complaint_id       String
)
ENGINE = ReplacingMergeTree(as_of)
ORDER BY (alert_id, status)
TTL toDateTime(as_of) + INTERVAL 2 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000;

-- cx_complaints: complaint lifecycle with the SLA (sunset rule) outcome.
-- ReplacingMergeTree(version) ORDER BY (customer_id, complaint_id): the latest lifecycle
--   state wins; customer prefix for per-customer reads and erasure.
-- PARTITION BY month of opened_at: constant over a complaint's life, so all its versions
--   share a partition and can replace each other.
-- TTL 3 years after opening: complaint handling records are kept for disputes and audits.
CREATE TABLE IF NOT EXISTS cx_complaints
(
    customer_id     String,
    complaint_id    String,
    channel         LowCardinality(String),
    category        LowCardinality(String),
    severity        LowCardinality(String),
    tier            LowCardinality(String),
    status          LowCardinality(String),
    opened_at       DateTime64(3, 'UTC'),
    due_at          Nullable(DateTime64(3, 'UTC')),
    acknowledged_at Nullable(DateTime64(3, 'UTC')),
    resolved_at     Nullable(DateTime64(3, 'UTC')),
    breached        Bool,
    satisfied       Nullable(Bool),
    compensation    Float64,
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (customer_id, complaint_id)
TTL toDateTime(opened_at) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000;

-- cx_erasures: the record that an erasure request was carried out (accountability).
-- Plain MergeTree ORDER BY requested_at: an append-only log read by time.
-- No TTL: proof of erasure is kept; it holds only the pseudonymous id and a count.
CREATE TABLE IF NOT EXISTS cx_erasures
(
    customer_id  String,
    requested_at DateTime64(3, 'UTC'),
    rows_deleted UInt64
)
ENGINE = MergeTree
ORDER BY (requested_at, customer_id);
