"""Lab script (not shipped): logistic regression or gradient-boosted trees for the learned
churn model? Replays a stream with the learning loop collecting snapshots (the hand-set
model serving throughout), then trains both kinds on the same labelled snapshots with the
same time-ordered split and prints their validation figures, training seconds and the
cost of scoring one customer with exact contributions.

    .venv/bin/python docs/lab/churn_model_choice.py --seed 7
    .venv/bin/python docs/lab/churn_model_choice.py --transactions cdnow.csv --cutoff 1997-09-30
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

import numpy as np

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.learning.churn_trainer import train
from pipeline.service.replay import replay
from pipeline.service.churn_learning import ChurnLearner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--transactions", default=None)
    ap.add_argument("--cutoff", default="1997-09-30")
    args = ap.parse_args()
    settings = Settings()
    learner = ChurnLearner(settings.churn_horizon_days, retrain_every=float("inf"))
    if args.transactions:
        from pipeline.tools.evaluate import _cutoff_dt
        from pipeline.tools.transactions import occurred_at, read_transactions, to_order_events

        cut = _cutoff_dt(args.cutoff)
        rows = sorted(read_transactions(args.transactions), key=lambda r: occurred_at(r[1]))
        replay(to_order_events([r for r in rows if occurred_at(r[1]) <= cut]), build_core(settings), clock=time.time,
               as_of=cut, learner=learner)
        label = f"{args.transactions} up to {args.cutoff}"
    else:
        from pipeline.tools.generator import generate

        end = datetime(2026, 11, 23, tzinfo=timezone.utc)
        stream = generate(customers=args.customers, days=args.days, seed=args.seed, end=end)
        replay(stream.values(), build_core(settings), clock=time.time, as_of=end, learner=learner)
        label = f"generator seed {args.seed}, {args.customers} customers, {args.days} days"
    X, y, t, ref = learner.book.training_data()
    print(f"{label}: {len(y):,} labelled snapshot rows, {int(y.sum()):,} leaving")
    for kind in ("logistic", "lightgbm"):
        started = time.perf_counter()
        m = train(X, y, t, version=kind, trained_at=float(t.max()), reference=ref, kind=kind)
        seconds = time.perf_counter() - started
        row = X[-1].tolist()
        k = 200 if kind == "logistic" else 20
        s0 = time.perf_counter()
        for _ in range(k):
            m.explain(row)
        per_row = (time.perf_counter() - s0) / k
        c = m.card
        print(f"  {kind:9s} validation AUC {c.auc_validation} (hand-set {c.auc_reference}), Brier {c.brier_validation} "
              f"(uncalibrated {c.brier_uncalibrated}, hand-set {c.brier_reference}, base rate {c.brier_base_rate}); "
              f"trained in {seconds:.1f} s on {c.rows_train:,} rows; one customer explained in {1e6 * per_row:.0f} µs")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
