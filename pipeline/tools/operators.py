"""Operators in the causal generator: who acts on churn risk, how, and with what effect.

The generator cannot run the pipeline, so the operators' trigger is simulated from the
generator's own view (docs/evaluation.md §6):

- **Trigger.** At the start of every whole day d a present customer's 30-day leaving
  probability is computed from the incidents revealed before d (the oracle of
  pipeline.tools.hazard_model); the first day it is at or above `threshold` opens the
  customer's one case (case id `CUSTOMER|churn|d`).
- **Assignment.** The case is in the control group when `is_control(case id, control_share)`
  (pipeline.domain.uplift, the same hash the pipeline applies to alert ids): nobody calls.
- **Policy and effect.** Otherwise an operator calls within a day (at d + u, u uniform in
  [0, 1) from a hash of the case id, so the stream's random draws are untouched) and the
  call multiplies the customer's daily hazard by (1 − `effect`) on the `effect_days`
  whole days after it (d + 1 .. d + effect_days).

The planted effect is recorded by common random numbers: for every called case the
simulation also tests each day's departure draw against the hazard without the call's cut,
which gives the day the customer would have left without the call (never later than the
day they left). pipeline.tools.uplift_evaluate turns that into the planted uplift.
Pure: no I/O, no clock.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence


ACTION = "retention_call"


@dataclass(frozen=True)
class OperatorPolicy:
    threshold: float = 0.10      # generator-view 30-day leaving probability that opens a case
    effect: float = 0.5          # share of the daily hazard a call removes
    effect_days: int = 30        # whole days after the call the effect lasts
    control_share: float = 0.0   # cases nobody calls (the control group)
    horizon_days: int = 30       # outcome window after the trigger (for planted_uplift)

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"operator threshold must be in (0, 1), got {self.threshold}")
        if not 0 <= self.effect < 1:
            raise ValueError(f"operator effect must be in [0, 1), got {self.effect}")
        if self.effect_days < 0 or self.horizon_days < 1:
            raise ValueError("effect_days must be >= 0 and horizon_days >= 1")
        if not 0 <= self.control_share <= 1:
            raise ValueError(f"control share must be in [0, 1], got {self.control_share}")

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "effect": self.effect, "effect_days": self.effect_days,
                "control_share": self.control_share, "horizon_days": self.horizon_days, "action": ACTION}


@dataclass(frozen=True)
class OperatorCase:
    customer_id: str
    case_id: str
    trigger_day: int
    control: bool
    call_at: float | None        # days since the start (None: control)


def case_id(customer_id: str, day: int) -> str:
    return f"{customer_id}|churn|{day}"


def call_offset(cid: str) -> float:
    """A uniform draw in [0, 1) from the case id: when within the day the operator calls."""
    return int.from_bytes(hashlib.blake2b(f"call|{cid}".encode(), digest_size=8).digest(), "big") / 2.0 ** 64


def treated_on(case: OperatorCase | None, day: int, policy: OperatorPolicy) -> bool:
    """True when a call's effect is in force on whole day `day`."""
    return (case is not None and case.call_at is not None
            and case.call_at < day <= case.call_at + policy.effect_days)
