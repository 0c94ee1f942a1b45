-- cxpulse ClickHouse schema, part 11: the learned models' part of every score (issue #16). Which
-- learned churn model scored churn_risk ('' = the hand-set model), and the early warning:
-- P(leaves within the horizon | still a customer), NULL until a learning loop has trained one, with
-- its drivers as two parallel arrays like churn_risk's (largest first). Rows written before this
-- migration read '' / NULL / [] (the hand-set model, no early warning).
ALTER TABLE cx_scores_history
    ADD COLUMN IF NOT EXISTS churn_model LowCardinality(String),
    ADD COLUMN IF NOT EXISTS early_warning Nullable(Float64),
    ADD COLUMN IF NOT EXISTS early_warning_factors Array(LowCardinality(String)),
    ADD COLUMN IF NOT EXISTS early_warning_contributions Array(Float64);
ALTER TABLE cx_scores_latest
    ADD COLUMN IF NOT EXISTS churn_model LowCardinality(String),
    ADD COLUMN IF NOT EXISTS early_warning Nullable(Float64),
    ADD COLUMN IF NOT EXISTS early_warning_factors Array(LowCardinality(String)),
    ADD COLUMN IF NOT EXISTS early_warning_contributions Array(Float64);
-- the view that feeds cx_scores_latest lists its columns as of its creation: it takes the new ones
-- only with its query restated (ClickHouse ≥ 23.12 alters a view's query without a setting; running
-- it again changes nothing)
ALTER TABLE cx_scores_latest_mv MODIFY QUERY SELECT * FROM cx_scores_history;
