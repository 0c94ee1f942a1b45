-- cxpulse ClickHouse schema, part 10: several learning workers share the churn history
-- (issue #16 item 6; pipeline/service/churn_history.py). Each worker's tick rows and snapshot
-- rows carry its scope, the input partition numbers it owned at the tick ("0,1,2"); a restarted
-- worker reads back the rows of its own scope only. The ticks of two workers at the same instant
-- are two rows: the scope joins cx_churn_ticks' sorting key (a column added in the same ALTER
-- may extend it; re-running the statement changes nothing). Rows written before this migration
-- have the scope '' (a single worker's history), read by any scope.
ALTER TABLE cx_churn_ticks ADD COLUMN IF NOT EXISTS scope String, MODIFY ORDER BY (tick_at, scope);
ALTER TABLE cx_churn_snapshots ADD COLUMN IF NOT EXISTS scope LowCardinality(String);
