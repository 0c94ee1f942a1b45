"""Lab script (not shipped): the planted driver among the top two named drivers under the driver
rule before session 19 (every feature names its factor; the drivers share the risk above the
average customer's) and the rule now (pipeline/domain/churn_model.py `drivers_from`: features
with no sign prior move the customer's own baseline and name no driver), for the early-warning
model and churn_risk's model, both fitted offline on what docs/lab/churn_causal_harvest.py saved.

    .venv/bin/python docs/lab/churn_driver_rule.py strong_7,weak_7

A "PRESET+TAG" row reads HZR / HZB / HZD from the environment, as the harvest did.
"""
import os
import pickle
import sys
import numpy as np, scipy.special as sp
from pipeline.domain.churn_features import FEATURE_FACTOR, FEATURE_NAMES
from pipeline.domain.churn_model import drivers_from
from pipeline.domain.churn import MAX_DRIVERS, MIN_CONTRIBUTION
from pipeline.learning.churn_trainer import train

def old_rule(contrib, risk, baseline):
    by = {}
    for n, c in zip(FEATURE_NAMES, contrib):
        by[FEATURE_FACTOR[n]] = by.get(FEATURE_FACTOR[n], 0.0) + c
    pos = {f: c for f, c in by.items() if c > 0}
    tot = sum(pos.values()); lift = max(0.0, risk - baseline)
    if tot <= 0 or lift <= 0: return []
    sh = sorted(((f, lift * c / tot) for f, c in pos.items()), key=lambda fc: (-fc[1], fc[0]))
    return [(f, c) for f, c in sh if c >= MIN_CONTRIBUTION][:MAX_DRIVERS]

H = 30
src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "churn_early_warning.py")).read()
# the stream regeneration and activity lookups of the early-warning lab script, without its run
ns: dict = {}
exec(src[:src.index("for tag in sys.argv[1]")], ns)
for tag in sys.argv[1].split(","):
    d = pickle.load(open(f"/tmp/churn/h_{tag}.pkl", "rb"))
    days = ns["active_days"](tag)
    X, y, t, ids = d["X"], d["y"], d["t"], d["ids"]
    k = (t // 86400).astype(int)
    cutk = int(d["start"] // 86400) + 150
    here = np.array([ns["active_in"](days, c, kk + 1, kk + H + 1) for c, kk in zip(ids, k)])
    left = np.array([not ns["active_in"](days, c, kk + H + 1, kk + 2 * H + 1) for c, kk in zip(ids, k)])
    ok = here & (k + 2 * H <= cutk)
    models = {"early_warning": train(X[ok], left[ok], t[ok], version="lab", trained_at=0),
              "churn_risk": train(X, y, t, version="lab", trained_at=0)}
    lab, Xc = d["lab"], d["Xc"]
    orank = d.get("orank")
    line = [tag]
    for name, m in models.items():
        p = m.predict(Xc)
        contrib, base = m.contributions(Xc)
        res = {}
        for rule, fn in (("old", old_rule), ("new", drivers_from)):
            hits = n = 0
            for i in np.flatnonzero(lab):
                if d["drv"][i]:
                    top = [f for f, _ in fn(contrib[i], p[i], float(sp.expit(base[i])))][:2]
                    hits += d["drv"][i] in top; n += 1
            res[rule] = hits / n
        line.append(f"{name}: old {res['old']:.2f} new {res['new']:.2f}")
    if orank is not None:
        o = [d["drv"][i] in list(orank[i])[:2] for i in np.flatnonzero(lab) if d["drv"][i]]
        line.append(f"oracle own {np.mean(o):.2f}")
    print(" | ".join(line), flush=True)
