-- cxpulse ClickHouse schema, part 7: the learning worker's churn-model history (issue #16 item 1;
-- pipeline/service/churn_history.py). A learning worker (CXPULSE_LEARN_CHURN=true) writes at every
-- event-time tick what the tick changed; a restarted worker reads it back, so its snapshot book,
-- population parameters and retraining schedule survive the restart.
-- No TTL: the worker reads only the newest snapshots its book keeps (500,000 labelled rows by
-- default, about 100 days of 5,000 customers); older rows stay for analysis, about 200 bytes a
-- row uncompressed. Erasure deletes a customer's rows from the two tables with customer ids.

-- cx_churn_snapshots: one row per customer and snapshot, the features the learned model sees
-- (feature_set names the build's feature list: a build with other features does not read them)
CREATE TABLE IF NOT EXISTS cx_churn_snapshots
(
    snapshot_at  DateTime64(3, 'UTC'),
    customer_id  String,
    features     Array(Float32),
    reference    Float32,
    feature_set  LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (snapshot_at, customer_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- cx_churn_labels: what the stream showed after a snapshot. stage 1 (at t + H): active within the
-- horizon (NULL: no longer readable); stage 2 (at t + 2H): the label (churned) of each row kept
CREATE TABLE IF NOT EXISTS cx_churn_labels
(
    snapshot_at  DateTime64(3, 'UTC'),
    customer_id  String,
    stage        UInt8,
    within       Nullable(Bool),
    churned      Nullable(Bool)
)
ENGINE = ReplacingMergeTree
ORDER BY (snapshot_at, customer_id, stage)
SETTINGS non_replicated_deduplication_window = 10000;

-- cx_churn_ticks: one row per tick, written after the tick's rows: a tick without its row
-- runs again after a restart. population: the MBG/NBD parameters when re-fitted at the tick (JSON)
CREATE TABLE IF NOT EXISTS cx_churn_ticks
(
    tick_at       DateTime64(3, 'UTC'),
    horizon_days  Float64,
    feature_set   LowCardinality(String),
    refit         Bool,
    retrain       Bool,
    population    String
)
ENGINE = ReplacingMergeTree
ORDER BY tick_at
SETTINGS non_replicated_deduplication_window = 10000;
