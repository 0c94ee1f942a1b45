"""One definition per vocabulary item, and the two failed-recovery rules by name."""
from __future__ import annotations

from pipeline.adapters.clickhouse import tables
from pipeline.domain import vocabulary as V
from pipeline.domain.state import ComplaintRec
from schemas.events import ComplaintCategory, Ratings
from schemas.outputs import ScoreRecord


def test_dimensions_are_the_schema_ones_in_weight_order():
    assert V.DIMENSIONS == ("tangibles", "reliability", "responsiveness", "assurance", "empathy")
    assert set(V.DIMENSIONS) == set(Ratings.model_fields) == {c.value for c in ComplaintCategory} - {"other"}
    assert set(V.DIMENSIONS) <= set(ScoreRecord.model_fields)


def test_tiers_lowest_first_and_contract_lists():
    assert V.TIERS == ("standard", "silver", "gold", "platinum")
    assert "processing_error" in V.DEAD_LETTER_REASONS and "inactivity" in V.CHURN_FACTORS
    assert {V.CHURN_RISK, V.SLA_BREACH, V.FAILED_RECOVERY} <= set(V.ALERT_TYPES)
    assert V.ALERT_SEVERITIES == ("warning", "critical")


def test_table_groups():
    assert set(tables.CUSTOMER_TABLES) | set(tables.SINK_TABLES) <= set(tables.TABLES)
    assert tables.ERASURES not in tables.CUSTOMER_TABLES   # erasure records stay (no personal data)


def test_the_two_failed_recovery_rules_differ_after_a_reopened_complaint_is_resolved_again():
    rec = ComplaintRec(id="k1", reopened=1, status="reopened")
    assert rec.recovery_ever_failed and rec.recovery_failure_stands
    rec.status = "resolved"                    # resolved again, satisfaction not given
    assert rec.recovery_ever_failed and not rec.recovery_failure_stands
    unsatisfied = ComplaintRec(id="k2", status="closed", satisfied=False)
    assert unsatisfied.recovery_ever_failed and unsatisfied.recovery_failure_stands
    fine = ComplaintRec(id="k3", status="resolved", satisfied=True)
    assert not fine.recovery_ever_failed and not fine.recovery_failure_stands
