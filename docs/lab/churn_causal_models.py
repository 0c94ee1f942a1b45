"""Lab script (not shipped), step 2 of 2: on what docs/lab/churn_causal_harvest.py saved,
relabel the snapshots from the stream's active days with two label definitions —
L0 "no activity within H" (before 30 Nov 2026) and L1 "gone, or no activity within H" (no
active day in the H days after t, or none in the G days after those) — train the learned
model on each and judge it at the cut like `cxpulse evaluate --mode causal` (AUC among the
customers present at the cut for leaving within 30 days, share of the oracle's lift,
planted driver in the top two, and the oracle's own top-two as the ceiling).

    L0=1 .venv/bin/python docs/lab/churn_causal_models.py strong 3 30 logistic,lightgbm,gbm:15:4:200:100

(gbm:LEAVES:DEPTH:ROUNDS:MIN_LEAF overrides the trees' parameters; FILTER=D trains only on
snapshots of customers active within D days; SHOW=1 prints every recent leaver's drivers.)
"""
import os, pickle, sys, orjson, numpy as np, collections
from datetime import datetime, timezone
from sklearn.metrics import roc_auc_score
from pipeline.domain.churn_features import FEATURE_NAMES, FEATURE_FACTOR
from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import hazard_model
from pipeline.learning.churn_trainer import train
hz, seed = sys.argv[1], int(sys.argv[2])
d = pickle.load(open(f"/tmp/churn/h_{hz}_{seed}.pkl", "rb"))
cache = f"/tmp/churn/days_{hz}_{seed}.pkl"
try:
    days = pickle.load(open(cache, "rb"))
except FileNotFoundError:
    s = generate(customers=2000, days=180, seed=seed, end=datetime(2026, 11, 30, tzinfo=timezone.utc), model=hazard_model(hz))
    days = collections.defaultdict(set)
    for v in s.values():
        try:
            r = orjson.loads(v); days[r["customer_id"]].add(int(datetime.fromisoformat(r["occurred_at"].replace("Z", "+00:00")).timestamp() // 86400))
        except Exception:
            continue
    days = dict(days); pickle.dump(days, open(cache, "wb"))
X, t, ids = d["X"], d["t"], d["ids"]
k = (t // 86400).astype(int)
cutk = int(d["start"] // 86400) + 150
H = 30
def silent(c, a, b):  # no active day in [a, b)
    return not any(a <= x < b for x in days.get(c, ()))
L0 = np.array([silent(c, kk, kk + H) for c, kk in zip(ids, k)])
G = int(sys.argv[3]) if len(sys.argv) > 3 else H
L1 = np.array([silent(c, kk, kk + H) or silent(c, kk + H, kk + H + G) for c, kk in zip(ids, k)])
ok1 = k + H + G <= cutk
if os.environ.get("FILTER"):
    ok1 &= X[:, FEATURE_NAMES.index("silence_days")] < np.log1p(float(os.environ["FILTER"]))
dep = np.array([d["dep"][c] if d["dep"][c] is not None else 10**6 for c in ids])
sday = ((t - d["start"]) / 86400).round().astype(int)
gone = (dep >= sday) & (dep < sday + 30)      # the truth: departs within 30 days of the snapshot
for name, L, ok in (("L0", L0, k + H <= cutk), ("L1", L1, k + H + G <= cutk)):
    print(f"{name}: P(departs within 30 d | labelled churned) {gone[ok & L].mean():.3f}, "
          f"P(labelled churned | departs within 30 d) {L[ok & gone].mean():.3f}")
print("L0 pos", L0.mean(), "agrees with book", (L0 == d["y"]).mean(), "L1 pos", L1[ok1].mean(), "rows", ok1.sum())
# recently active only?
lab = d["lab"]; Xc = d["Xc"]; orc = d["orc"]
print("oracle AUC", round(roc_auc_score(lab, orc), 3))
def ev(name, model):
    p = model.predict(Xc)
    a = roc_auc_score(lab, p)
    share = (a - .5) / (roc_auc_score(lab, orc) - .5)
    # drivers
    contrib, base = model.contributions(Xc)
    fac = sorted(set(FEATURE_FACTOR.values()))
    F = np.zeros((len(Xc), len(fac)))
    for j, n in enumerate(FEATURE_NAMES):
        F[:, fac.index(FEATURE_FACTOR[n])] += contrib[:, j]
    from pipeline.domain.churn_model import drivers_from
    import scipy.special as sp
    hits = n_ = 0; oh = 0
    for i in range(len(Xc)):
        if lab[i] and d["drv"][i]:
            top = [f for f, _ in drivers_from(contrib[i], p[i], float(sp.expit(base[i])))][:2]
            hits += d["drv"][i] in top; n_ += 1; oh += d["drv"][i] in d["orank"][i][:2]
            if os.environ.get("SHOW"): print("   planted", d["drv"][i], "oracle", d["orank"][i][:2], "named", [(f, round(c, 3)) for f, c in drivers_from(contrib[i], p[i], float(sp.expit(base[i])))][:3])
    print("oracle-ranking top2 ceiling", round(oh / n_, 2))
    br = np.mean((p - lab) ** 2); base_b = lab.mean() * (1 - lab.mean())
    print(f"{name:30s} AUC {a:.3f} share {share:.2f} top2 {hits/n_:.2f} brier {br:.4f} base {base_b:.4f} val {model.card.auc_validation}")
from pipeline.learning import churn_trainer as ct
import os
base_params = dict(ct.LGBM_PARAMS)
for kind in sys.argv[4].split(",") if len(sys.argv) > 4 else ("logistic",):
    k2 = kind
    if kind.startswith("gbm"):   # gbm:leaves:depth:rounds:minleaf
        _, lv, dp, rd, ml = kind.split(":")
        ct.LGBM_PARAMS = {**base_params, "num_leaves": int(lv), "max_depth": int(dp), "min_data_in_leaf": int(ml)}
        ct.LGBM_ROUNDS = int(rd); k2 = "lightgbm"
    if os.environ.get("L0"):
        ev(f"{kind} L0", train(X, L0, t, version="x", trained_at=0, kind=k2))
    ev(f"{kind} L1", train(X[ok1], L1[ok1], t[ok1], version="x", trained_at=0, kind=k2))
