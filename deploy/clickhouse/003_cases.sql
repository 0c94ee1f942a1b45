-- cxpulse ClickHouse schema, part 3: cases — what operators did about alerts (cx.actions).

-- cx_case_events: one row per applied operator action (acknowledged, assigned, contacted,
--   closed), with the case's times so far: when the alert fired, was first acknowledged,
--   first contacted, closed. Codes only (staff code, channel, outcome, playbook action).
-- ReplacingMergeTree ORDER BY (customer_id, alert_id, action_id): a re-inserted action is
--   the same row; customer prefix for per-customer reads and erasure.
-- PARTITION BY month of the alert's firing: constant over a case's life.
-- TTL 3 years after the alert fired, like complaints: outcomes are studied over seasons.
CREATE TABLE IF NOT EXISTS cx_case_events
(
    customer_id      String,
    alert_id         String,
    action_id        String,
    action           LowCardinality(String),
    occurred_at      DateTime64(3, 'UTC'),
    staff_id         LowCardinality(String),
    channel          LowCardinality(String),
    outcome          LowCardinality(String),
    playbook_action  LowCardinality(String),
    alert_type       LowCardinality(String),
    severity         LowCardinality(String),
    tier             LowCardinality(String),
    alert_fired_at   DateTime64(3, 'UTC'),
    acknowledged_at  Nullable(DateTime64(3, 'UTC')),
    first_contact_at Nullable(DateTime64(3, 'UTC')),
    closed_at        Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(alert_fired_at)
ORDER BY (customer_id, alert_id, action_id)
TTL toDateTime(alert_fired_at) + INTERVAL 3 YEAR DELETE
SETTINGS non_replicated_deduplication_window = 10000;
