"""Lab script (not shipped): on what docs/lab/churn_causal_harvest.py saved, (1) what silence
means in the self-labelled book — how many rows of each silence were of customers already gone,
and, among those still there, how often they were labelled churned and left within 30 days —
and (2) an early-warning model, P(leaves soon | still here), learned from the book's own
observable labels: the rows whose customer was active in (t, t+H] (so was still there at t),
labelled churned when there was no activity in (t+H, t+2H]; fitted by the same trainer and judged
at the cut like `cxpulse evaluate --mode causal` (AUC among the customers present at the cut
for leaving within 30 days, share of the oracle's lift, planted driver in the top two, Brier).

    .venv/bin/python docs/lab/churn_early_warning.py strong_11,weak_13

The stream's active days are regenerated once per row (same settings as the harvest: a
"PRESET+TAG" row reads HZR / HZB / HZD from the environment) and cached in /tmp/churn.
"""
import collections
import os
import pickle
import sys
from datetime import datetime, timezone

import numpy as np
import orjson
import scipy.special as sp
from sklearn.metrics import roc_auc_score

from pipeline.domain.churn_features import FEATURE_NAMES
from pipeline.domain.churn_model import drivers_from
from pipeline.learning.churn_trainer import train
from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import hazard_model, parse_ratios

H = 30


def active_days(tag: str) -> dict[str, np.ndarray]:
    cache = f"/tmp/churn/days_{tag}.pkl"
    if os.path.exists(cache):
        return pickle.load(open(cache, "rb"))
    name, seed = tag.rsplit("_", 1)
    model = hazard_model(name.split("+")[0], parse_ratios(os.environ["HZR"]) if os.environ.get("HZR") else None,
                         float(os.environ["HZB"]) if os.environ.get("HZB") else None,
                         float(os.environ["HZD"]) if os.environ.get("HZD") else None)
    stream = generate(customers=2000, days=180, seed=int(seed), end=datetime(2026, 11, 30, tzinfo=timezone.utc), model=model)
    days: dict[str, set[int]] = collections.defaultdict(set)
    for value in stream.values():
        try:
            r = orjson.loads(value)
            days[r["customer_id"]].add(int(datetime.fromisoformat(r["occurred_at"].replace("Z", "+00:00")).timestamp() // 86400))
        except Exception:   # the planted invalid records
            continue
    out = {c: np.array(sorted(v)) for c, v in days.items()}
    pickle.dump(out, open(cache, "wb"))
    return out


def active_in(days: dict[str, np.ndarray], c: str, a: int, b: int) -> bool:
    """An active day in [a, b)."""
    arr = days.get(c)
    if arr is None:
        return False
    i = np.searchsorted(arr, a)
    return bool(i < len(arr) and arr[i] < b)


for tag in sys.argv[1].split(","):
    d = pickle.load(open(f"/tmp/churn/h_{tag}.pkl", "rb"))
    days = active_days(tag)
    X, y, t, ids = d["X"], d["y"], d["t"], d["ids"]
    k = (t // 86400).astype(int)
    cutk = int(d["start"] // 86400) + 150

    # (1) silence in the book
    silence = np.expm1(X[:, FEATURE_NAMES.index("silence_days")])
    sday = ((t - d["start"]) / 86400).round().astype(int)
    dep = np.array([d["dep"][c] if d["dep"][c] is not None else 10**6 for c in ids])
    gone = dep <= sday
    soon = (dep > sday) & (dep <= sday + 30)
    print(tag)
    for lo, hi in ((0, 3), (3, 7), (7, 14), (14, 21), (21, 30), (30, 60)):
        b = (silence >= lo) & (silence < hi)
        print(f"  silence {lo:>2}-{hi:<2} d: rows {b.sum():6d}, already gone {gone[b].mean():.2f}, labelled churned "
              f"{y[b].mean():.2f} | still there: labelled churned {y[b & ~gone].mean():.2f}, "
              f"leave within 30 d {soon[b & ~gone].mean():.3f}")

    # (2) the early-warning model
    here = np.array([active_in(days, c, kk + 1, kk + H + 1) for c, kk in zip(ids, k)])
    left = np.array([not active_in(days, c, kk + H + 1, kk + 2 * H + 1) for c, kk in zip(ids, k)])
    ok = here & (k + 2 * H <= cutk)
    model = train(X[ok], left[ok], t[ok], version="lab", trained_at=0)
    lab, Xc = d["lab"], d["Xc"]
    oracle = roc_auc_score(lab, d["orc"])
    p = model.predict(Xc)
    auc = roc_auc_score(lab, p)
    contrib, base = model.contributions(Xc)
    hits = n = 0
    for i in np.flatnonzero(lab):
        if d["drv"][i]:
            top = [f for f, _ in drivers_from(contrib[i], p[i], float(sp.expit(base[i])))][:2]
            hits += d["drv"][i] in top
            n += 1
    print(f"  early-warning model: {ok.sum()} rows, {left[ok].mean():.3f} labelled leaving | AUC {auc:.3f} "
          f"(oracle {oracle:.3f}), lift share {(auc - .5) / (oracle - .5):.2f}, top-2 {hits / n:.2f}, "
          f"Brier {np.mean((p - lab) ** 2):.4f} (base rate {lab.mean() * (1 - lab.mean()):.4f})")
