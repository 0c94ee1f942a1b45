-- cxpulse ClickHouse schema, part 9: the learning worker's retrainings that ended (issue #16;
-- pipeline/service/churn_history.py). A retraining runs after its tick, off the event loop; a
-- worker that died while it ran has the tick's row in cx_churn_ticks (retrain = true) and no row
-- here, and a restarted worker trains it again from the same history. One row a retraining
-- (weekly in event time), no customer data, no TTL.
-- version: the model trained ('' when nothing was: a cold start, or a history that cannot train
-- one); serving: the version serving after it ('hand-set' for the hand-set model)
CREATE TABLE IF NOT EXISTS cx_churn_trainings
(
    trained_at    DateTime64(3, 'UTC'),
    horizon_days  Float64,
    feature_set   LowCardinality(String),
    version       String,
    serving       String
)
ENGINE = ReplacingMergeTree
ORDER BY trained_at
SETTINGS non_replicated_deduplication_window = 10000;
