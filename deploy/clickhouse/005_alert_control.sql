-- cxpulse ClickHouse schema, part 5: the control group of churn alerts (README "Did the action work?").
-- control: the alert was in the control group (CXPULSE_CHURN_CONTROL_SHARE): no action recommended.
-- withheld_action: for control alerts, the playbook action that was not recommended.
ALTER TABLE cx_alerts ADD COLUMN IF NOT EXISTS control Bool DEFAULT false;
ALTER TABLE cx_alerts ADD COLUMN IF NOT EXISTS withheld_action LowCardinality(String) DEFAULT '';
