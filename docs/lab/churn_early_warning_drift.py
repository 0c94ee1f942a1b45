"""Lab script (not shipped): why the early warning published on a causal stream runs high.

Replays a causal stream (2,000 customers, 180 days to 1 Dec 2026) with the learning loop
retraining weekly, keeps every early-warning model, then judges each on the still-there
snapshots of the week after its training (labelled by the end of the stream): the mean
warning against the leave rate, and the Brier score, as served and with the standardised
features clipped to the range of the labelled history the model was fitted on (min–max,
and the 0.1–99.9 % quantiles). It also names the three features whose contribution moved
most between the training rows and that week, with their largest z before → after.

    .venv/bin/python docs/lab/churn_early_warning_drift.py strong 7     # ~6 minutes
    .venv/bin/python docs/lab/churn_early_warning_drift.py weak 11

Findings (2 Dec 2026) are in docs/evaluation.md, "The early warning's live backtest".
"""
import sys
from datetime import datetime, timezone

import numpy as np

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.churn_features import FEATURE_NAMES
from pipeline.learning.churn_trainer import calibrated
from pipeline.service import churn_learning as cl
from pipeline.service.replay import replay
from pipeline.tools.evaluate import _fresh_topic_of
from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import hazard_model

DAY = 86400.0
hz, seed = sys.argv[1], int(sys.argv[2])
settings = Settings()
end = datetime(2026, 12, 1, tzinfo=timezone.utc)
stream = generate(customers=2000, days=180, seed=seed, end=end, model=hazard_model(hz))
models = []
train_early_warning = cl.train_early_warning


def kept(X, y, t, here, **kw):
    fit = train_early_warning(X, y, t, here, **kw)
    if fit.model is not None:
        models.append((kw["trained_at"], fit.model, float(np.asarray(t)[np.asarray(here, bool)].max())))
    return fit


cl.train_early_warning = kept
learner = cl.ChurnLearner(settings.churn_horizon_days)
replay(stream.values(), build_core(settings), clock=lambda: end.timestamp(), learner=learner,
       topic_of=_fresh_topic_of(stream, settings.topic_for_type))
X, y, t, _ = learner.book.training_data()
here = learner.book.still_here()
X, y, t = X[here], y[here], t[here]


def brier(p, labels):
    return float(np.mean((p - labels) ** 2))


total = np.zeros(4)
judged = 0
for trained_at, m, last in models:
    week = (t >= trained_at) & (t < trained_at + 7 * DAY)
    if week.sum() < 200:
        continue
    Z_train = m._z(X[t <= last])
    lo, hi = Z_train.min(0), Z_train.max(0)
    q_lo, q_hi = np.quantile(Z_train, 0.001, 0), np.quantile(Z_train, 0.999, 0)
    Z = m._z(X[week])
    labels = y[week].astype(float)
    served = calibrated(m.platt, Z @ m.coef + m.intercept)
    clipped = calibrated(m.platt, np.clip(Z, lo, hi) @ m.coef + m.intercept)
    clipped_q = calibrated(m.platt, np.clip(Z, q_lo, q_hi) @ m.coef + m.intercept)
    rate = labels.mean()
    base = rate * (1 - rate)
    fitted = t <= last   # its labelled history: the leave rate then, and the model's mean on it
    then = (f"span {(last - t.min()) / DAY:3.0f} d history rate {y[fitted].mean():.3f} "
            f"mean {m.predict(X[fitted]).mean():.3f} | ")
    shift = (Z.mean(0) - Z_train.mean(0)) * m.coef * m.platt[0]
    top = np.argsort(-np.abs(shift))[:3]
    print(f"{m.version:20s} {then}rows {week.sum():6d} leave rate {rate:.3f} | served {served.mean():.3f} {brier(served, labels):.4f}"
          f" | clipped {clipped.mean():.3f} {brier(clipped, labels):.4f} | clipped 0.1% {clipped_q.mean():.3f} "
          f"{brier(clipped_q, labels):.4f} | base {base:.4f} | "
          + ", ".join(f"{FEATURE_NAMES[i]} {shift[i]:+.2f} (z {Z_train[:, i].max():.1f} → {Z[:, i].max():.1f})" for i in top))
    total += [brier(served, labels), brier(clipped, labels), brier(clipped_q, labels), base]
    judged += 1
print("mean Brier: served %.4f, clipped %.4f, clipped 0.1%% %.4f, base rate %.4f" % tuple(total / max(judged, 1)))
