"""Benchmark: train the churn model on 100k customers × 30 daily snapshots (3 million rows)
and print the seconds it takes and the process's peak memory (resident set) before and after
training; then the early-warning model a retraining fits with it (on the rows still there,
here 80 %), and the two together; also the cost of scoring one customer.

    .venv/bin/python bench/churn_training.py [--customers 100000] [--snapshots 30] [--kind logistic]

The rows are random feature vectors with a planted signal (the speed of the trainer does
not depend on where the rows come from); target: under 60 s on the project machine
(issue #16). Not a unit test: it prints figures, it does not assert them.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from pipeline.domain.churn import DAY
from pipeline.domain.churn_features import FEATURE_NAMES
from pipeline.learning.churn_trainer import MIN_EARLY_WARNING_SPAN_HORIZONS, train, train_early_warning

HORIZON_DAYS = 30.0   # the default churn horizon (CXPULSE_CHURN_HORIZON_DAYS)


def _peak_rss_mb() -> float:
    """The process's peak resident set so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=30)
    ap.add_argument("--kind", default="logistic", choices=("logistic", "lightgbm"))
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n = args.customers * args.snapshots
    X = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    # daily snapshots, or further apart when daily ones would span less than the horizon: the
    # early-warning model is trained only on snapshots spanning one horizon
    # (churn_trainer.MIN_EARLY_WARNING_SPAN_HORIZONS), and 30 daily ones span 29 days
    spacing = max(1.0, HORIZON_DAYS * MIN_EARLY_WARNING_SPAN_HORIZONS / max(1, args.snapshots - 1))
    t = np.repeat(np.arange(args.snapshots) * spacing * DAY, args.customers).astype(float)
    # the signal on two features the models fit (`orders`, column 8, was the second until the
    # history counts stopped being fitted: churn_trainer.HISTORY_COUNTS)
    signal = [FEATURE_NAMES.index("quiet_logit"), FEATURE_NAMES.index("basket")]
    z = -2.0 + 1.5 * np.nan_to_num(X[:, signal[0]]) - 0.7 * np.nan_to_num(X[:, signal[1]])
    y = rng.random(n) < 1 / (1 + np.exp(-z))
    rss_before = _peak_rss_mb()
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    model = train(X, y, t, version="bench", trained_at=float(t.max()), kind=args.kind, horizon_days=HORIZON_DAYS)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    card = model.card
    print(f"{args.kind}: trained, calibrated and validated on {n:,} rows × {X.shape[1]} features "
          f"in {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (all threads; 1-min load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after); validation AUC {card.auc_validation}, "
          f"Brier {card.brier_validation}, AUC among the still-active {card.auc_validation_active}, "
          f"half-life {card.half_life_days} (candidates {card.selection}); "
          f"peak resident memory {rss_before:,.0f} MB with the rows built, {_peak_rss_mb():,.0f} MB after training")
    here = rng.random(n) < 0.8
    started = time.perf_counter()
    fit = train_early_warning(X, y, t, here, version="bench-ew", trained_at=float(t.max()), leavers=10_000,
                              horizon_days=HORIZON_DAYS)
    early = fit.model
    ew_seconds = time.perf_counter() - started
    if early is None or early.card is None:
        print(f"early-warning model: not trained ({ew_seconds:.1f} s; {fit.withheld})")
    else:
        print(f"early-warning model on the {int(here.sum()):,} rows still there: {ew_seconds:.1f} s wall "
              f"(validation AUC {early.card.auc_validation}); a retraining fits both: {seconds + ew_seconds:.1f} s; "
              f"peak resident memory {_peak_rss_mb():,.0f} MB")
    row = X[0].tolist()
    k = 2000 if args.kind == "logistic" else 50
    started = time.perf_counter()
    for _ in range(k):
        model.explain(row)
    print(f"scoring one customer with exact contributions: {1e6 * (time.perf_counter() - started) / k:.0f} µs")


if __name__ == "__main__":
    main()
