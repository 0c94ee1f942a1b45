"""Lab (not shipped, not a test): how often does a customer leave within 30 days of an incident?

Replays `cxpulse evaluate`'s default stream through the real core, records every incident the
core counts for churn (late delivery, refund/return, low rating, detractor answer, effortful
contact, failed recovery) with its event time, and prints, per factor, the share of incidents
after which the customer left within 30 days (planted churners only leave once). That share is
the churn probability a calibrated model can give right after one such incident, so it bounds how
early an alert at the warning threshold (0.30) can come without alerting on stayers.

    .venv/bin/python docs/lab/incident_churn_rates.py [SEED]     # about 30 s
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pipeline.domain.scoring as scoring  # noqa: E402
from pipeline.bootstrap import build_core  # noqa: E402
from pipeline.config import load  # noqa: E402
from pipeline.tools.evaluate import _fresh_topic_of  # noqa: E402
from pipeline.tools.generator import generate  # noqa: E402
from pipeline.service.replay import replay  # noqa: E402

HORIZON = 30 * 86400.0
incidents: set[tuple[str, float, str]] = set()
_count = scoring._factor


def _recording(state, name, t, rates, amount=1.0):
    if amount > 0 and name != "sla_breaches_folded":   # folded = old complaints summarised, not new incidents
        incidents.add((state.customer_id, t, name))
    return _count(state, name, t, rates, amount)


scoring._factor = _recording


def main(seed: int) -> None:
    settings = load()
    stream = generate(customers=2000, days=120, seed=seed, end=datetime(2026, 11, 23, tzinfo=timezone.utc))
    replay(stream.values(), build_core(settings), clock=time.time, as_of=stream.end, topic_of=_fresh_topic_of(stream, settings.topic_for_type))
    last = stream.end.timestamp() - HORIZON      # incidents whose 30 days are inside the stream
    n: Counter[str] = Counter()
    left: Counter[str] = Counter()
    for cid, t, name in incidents:
        if t > last:
            continue
        truth = stream.truth[cid]
        n[name] += 1
        left[name] += bool(truth.churned and t < truth.churn_at.timestamp() <= t + HORIZON)
    # the same, by how many incidents (of any factor) the customer had in the 14 days up to this one
    times: dict[str, list[float]] = {}
    for cid, t, _ in incidents:
        times.setdefault(cid, []).append(t)
    n_run: Counter[int] = Counter()
    left_run: Counter[int] = Counter()
    for cid, ts in times.items():
        truth = stream.truth[cid]
        for t in ts:
            if t > last:
                continue
            k = min(3, sum(1 for u in ts if t - 14 * 86400.0 <= u <= t))
            n_run[k] += 1
            left_run[k] += bool(truth.churned and t < truth.churn_at.timestamp() <= t + HORIZON)
    churn_share = stream.n_churners / len(stream.truth)
    print(f"seed {seed}: {len(stream.truth)} customers, {churn_share:.0%} planted churners")
    for name in sorted(n):
        print(f"  {name:<18} {n[name]:>6} incidents   left within 30 days {left[name] / n[name]:.2f}")
    for k in sorted(n_run):
        label = f"{k}{'+' if k == 3 else ''} in 14 days"
        print(f"  {label:<18} {n_run[k]:>6} incidents   left within 30 days {left_run[k] / n_run[k]:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
