"""Did the action work? A control group for churn alerts and the uplift it measures.

A configurable share of churn_risk alerts is a control group: chosen deterministically
from the alert id (`is_control`), published with `control: true` and no recommended
action. Comparing what became of treated and control customers per action gives the
action's uplift:

- churned within the horizon: the difference of two proportions (control − treated, so a
  positive uplift means fewer departures when treated) with the Newcombe hybrid score
  interval (Newcombe 1998, method 10), built from the Wilson interval of each arm;
- revenue kept: the difference of mean revenue in the horizon (treated − control) with a
  percentile bootstrap interval (seeded, reproducible).

Pure: no I/O, no clock. docs/evaluation.md §6 explains the figures.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959963984540054


def is_control(alert_id: str, share: float) -> bool:
    """True for the control group: the alert id's hash, as a number in [0, 1), below `share`.
    Deterministic (the same id is always in the same arm) and independent of the customer's
    risk, tier or action, so the arms are comparable."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"control share must be in [0, 1], got {share}")
    if share == 0.0:
        return False
    h = int.from_bytes(hashlib.blake2b(f"control|{alert_id}".encode(), digest_size=8).digest(), "big")
    return h / 2.0 ** 64 < share


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """p1 − p2 with its Newcombe hybrid score interval: (difference, low, high).
    Raises ValueError when an arm is empty."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both groups need at least one customer")
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


def bootstrap_mean_difference(a: Sequence[float], b: Sequence[float], resamples: int = 1000,
                              seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) − mean(b) with a percentile bootstrap interval (each group resampled on its
    own): (difference, low, high). Raises ValueError when a group is empty."""
    if not a or not b:
        raise ValueError("both groups need at least one value")
    rng = random.Random(seed)
    d = sum(a) / len(a) - sum(b) / len(b)
    diffs = []
    for _ in range(resamples):
        ra = [a[rng.randrange(len(a))] for _ in a]
        rb = [b[rng.randrange(len(b))] for _ in b]
        diffs.append(sum(ra) / len(ra) - sum(rb) / len(rb))
    diffs.sort()
    tail = (1 - level) / 2
    lo = diffs[min(len(diffs) - 1, int(math.floor(tail * resamples)))]
    hi = diffs[min(len(diffs) - 1, int(math.ceil((1 - tail) * resamples)) - 1)]
    return d, lo, hi


@dataclass(frozen=True)
class CaseOutcome:
    """One churn alert (or one operator trigger) and what became of the customer."""
    action: str          # the playbook action recommended (or withheld, for control)
    control: bool
    churned: bool        # left (or went silent) within the horizon after the alert
    revenue: float       # revenue in the horizon after the alert


def uplift_by_action(cases: Sequence[CaseOutcome], resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Per action (and `all`): counts, churn rate and mean revenue of each arm and, when both
    arms have cases, the churn uplift (control − treated rate, Newcombe 95 % interval) and the
    revenue kept (treated − control mean, bootstrap 95 % interval). Without control cases the
    uplift fields are None and `note` says that uplift needs a control group."""
    groups: dict[str, list[CaseOutcome]] = {}
    for c in cases:
        groups.setdefault(c.action, []).append(c)
    rows = []
    for action, cs in sorted(groups.items()) + ([("all", list(cases))] if len(groups) > 1 else []):
        t = [c for c in cs if not c.control]
        k = [c for c in cs if c.control]
        row: dict = {"action": action, "treated": len(t), "control": len(k),
                     "churn_treated": _rate(t), "churn_control": _rate(k),
                     "revenue_treated": _mean(t), "revenue_control": _mean(k),
                     "churn_uplift": None, "churn_uplift_ci": None,
                     "revenue_kept": None, "revenue_kept_ci": None, "note": None}
        if t and k:
            d, lo, hi = newcombe_difference(sum(c.churned for c in k), len(k), sum(c.churned for c in t), len(t))
            row["churn_uplift"], row["churn_uplift_ci"] = d, (lo, hi)
            r, rlo, rhi = bootstrap_mean_difference([c.revenue for c in t], [c.revenue for c in k], resamples, seed)
            row["revenue_kept"], row["revenue_kept_ci"] = r, (rlo, rhi)
        else:
            row["note"] = ("uplift needs a control group (CXPULSE_CHURN_CONTROL_SHARE > 0)" if not k
                           else "no treated cases")
        rows.append(row)
    return rows


def _rate(cs: Sequence[CaseOutcome]) -> float | None:
    return sum(c.churned for c in cs) / len(cs) if cs else None


def _mean(cs: Sequence[CaseOutcome]) -> float | None:
    return sum(c.revenue for c in cs) / len(cs) if cs else None
