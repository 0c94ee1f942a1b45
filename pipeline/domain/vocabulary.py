"""The project's vocabulary, one definition each, derived from the wire contract's enums
(schemas/events.py, schemas/outputs.py): code that needs the list of dimensions, tiers,
churn factors, dead-letter reasons or alert kinds imports it from here.
"""
from __future__ import annotations

from typing import get_args

from schemas.events import Dimension
from schemas.outputs import AlertRecord, AlertType, ChurnFactor, DeadLetterReason, Tier

# The five SERVQUAL dimensions, in the order of the CXI weights (CXPULSE_CXI_WEIGHTS).
DIMENSIONS: tuple[str, ...] = tuple(d.value for d in Dimension)
# Customer tiers, lowest first (CXPULSE_TIER_THRESHOLDS gives the revenue of each step up).
TIERS: tuple[str, ...] = tuple(t.value for t in Tier)
# Named churn drivers (`churn_drivers[].factor`).
CHURN_FACTORS: tuple[str, ...] = tuple(f.value for f in ChurnFactor)
# Why a record was dead-lettered (`cx.deadletter` reason).
DEAD_LETTER_REASONS: tuple[str, ...] = get_args(DeadLetterReason)
# Alert kinds (`cx.alerts` type) and severities.
ALERT_TYPES: tuple[str, ...] = tuple(t.value for t in AlertType)
CHURN_RISK, SLA_BREACH, FAILED_RECOVERY = (AlertType.churn_risk.value, AlertType.sla_breach.value,
                                           AlertType.failed_recovery.value)
ALERT_SEVERITIES: tuple[str, ...] = get_args(AlertRecord.model_fields["severity"].annotation)
