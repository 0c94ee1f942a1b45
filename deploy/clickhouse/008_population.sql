-- cxpulse ClickHouse schema, part 8: the population parameters a worker fitted (the churn model's
-- MBG/NBD population and incident rates, pipeline/domain/churn.py), one row per wall-clock re-fit.
-- A restarted worker that does not learn reads the latest back and scores with it until its next
-- re-fit (CXPULSE_REFIT_SECONDS after start-up); before, it scored with the priors (or
-- CXPULSE_POPULATION_FILE) for that first interval. No customer data; a row a re-fit, no TTL.
CREATE TABLE IF NOT EXISTS cx_population
(
    fitted_at  DateTime64(3, 'UTC'),
    params     String
)
ENGINE = ReplacingMergeTree
ORDER BY fitted_at
SETTINGS non_replicated_deduplication_window = 10000;
