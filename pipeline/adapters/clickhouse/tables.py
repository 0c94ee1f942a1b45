"""The ClickHouse tables (created by pipeline/adapters/clickhouse/migrations.py), one list
with what each group is for: the sink, erasure, the row counts and the metrics use these."""
from __future__ import annotations

EVENTS, SCORES_HISTORY, SCORES_LATEST, ALERTS, COMPLAINTS, CASE_EVENTS, ERASURES = (
    "cx_events", "cx_scores_history", "cx_scores_latest", "cx_alerts", "cx_complaints", "cx_case_events",
    "cx_erasures")
# The alert state changes without customer data (migration 006): the sink writes them with
# every cx_alerts insert, as an insert of its own; the churn-alert count is read from them.
ALERT_FACTS = "cx_alert_facts"
# The learning worker's churn-model history (migration 007; pipeline/service/churn_history.py).
CHURN_SNAPSHOTS, CHURN_LABELS, CHURN_TICKS = "cx_churn_snapshots", "cx_churn_labels", "cx_churn_ticks"
CHURN_TRAININGS = "cx_churn_trainings"   # the retrainings that ended (migration 009)
# The population parameters each wall-clock re-fit gave (migration 008; no customer data).
POPULATION = "cx_population"
AGGREGATES = ("cx_agg_hourly", "cx_quality_channel", "cx_quality_staff")   # views aggregated at query time (migration 004)

# Every table, in the order `cxpulse demo` and `queries.table_counts` list them.
TABLES = (EVENTS, SCORES_HISTORY, SCORES_LATEST, ALERTS, COMPLAINTS, CASE_EVENTS, ERASURES, ALERT_FACTS, *AGGREGATES,
          CHURN_SNAPSHOTS, CHURN_LABELS, CHURN_TICKS, CHURN_TRAININGS, POPULATION)
# Tables holding customer ids: erasure deletes from all of them. The aggregates are keyed
# by time/channel/stage/tier/staff only and stay. They are ReplacingMergeTree tables.
CUSTOMER_TABLES = (EVENTS, SCORES_HISTORY, SCORES_LATEST, ALERTS, COMPLAINTS, CASE_EVENTS, CHURN_SNAPSHOTS, CHURN_LABELS)
# Tables the sink inserts into (cx_scores_latest and the aggregates are filled by views).
SINK_TABLES = (EVENTS, SCORES_HISTORY, ALERTS, COMPLAINTS, CASE_EVENTS, ERASURES, ALERT_FACTS,
               CHURN_SNAPSHOTS, CHURN_LABELS, CHURN_TICKS, CHURN_TRAININGS, POPULATION)
