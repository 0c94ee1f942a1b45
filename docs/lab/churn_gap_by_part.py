"""Lab script (not shipped): where the learned model's gap to the oracle is, on what
docs/lab/churn_causal_harvest.py saved. The trainer fits the book at the cut (as a retraining
at the cut would); the customers present at the cut are ranked for leaving within 30 days
(the ranking `cxpulse evaluate --mode causal` judges) by
- the model's whole log-odds (what churn_risk ranks by),
- the part of it the experience factors add (the hazard model's incident factors), and
- the rest (inactivity, declining_frequency, declining_spend, experience_drop),
each as the share of the oracle's lift over 0.5. Top-2: the share of those leavers with a
planted driver whose driver is among the two factors of largest positive contribution, over
all factors and over the experience factors only, next to the oracle's own top two.

    .venv/bin/python docs/lab/churn_gap_by_part.py strong_7,weak_13,weak+H4_43
"""
import pickle
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.domain.churn_features import FEATURE_FACTOR, FEATURE_NAMES
from pipeline.learning import churn_trainer as ct
from pipeline.tools.hazard_model import INCIDENT_FACTORS

fac = np.array([FEATURE_FACTOR[n] for n in FEATURE_NAMES])
experience = np.isin(fac, list(INCIDENT_FACTORS))
print("other factors:", ", ".join(sorted({str(f) for f in fac[~experience]})))
for tag in sys.argv[1].split(","):
    d = pickle.load(open(f"/tmp/churn/h_{tag}.pkl", "rb"))
    model = ct.train(d["X"], d["y"], d["t"], version="lab", trained_at=0)
    contrib, _ = model.contributions(d["Xc"])
    lab = d["lab"]
    oracle = roc_auc_score(lab, d["orc"])

    def share(score):
        return (roc_auc_score(lab, score) - 0.5) / (oracle - 0.5)

    def top2(only_experience: bool) -> float:
        hits = n = 0
        for i in np.flatnonzero(lab):
            if not d["drv"][i]:
                continue
            by: dict[str, float] = {}
            for j, f in enumerate(fac):
                if experience[j] or not only_experience:
                    by[f] = by.get(f, 0.0) + contrib[i, j]
            top = [f for f, v in sorted(by.items(), key=lambda kv: -kv[1]) if v > 0][:2]
            hits += d["drv"][i] in top
            n += 1
        return hits / max(n, 1)

    own = np.mean([drv in rank[:2] for drv, rank, y in zip(d["drv"], d["orank"], lab) if y and drv])
    print(f"{tag:14s} oracle AUC {oracle:.3f} | lift share: whole {share(contrib.sum(1)):.2f}, experience part "
          f"{share(contrib[:, experience].sum(1)):.2f}, rest {share(contrib[:, ~experience].sum(1)):.2f} "
          f"(AUC {roc_auc_score(lab, contrib[:, ~experience].sum(1)):.3f}) | top-2: all factors {top2(False):.2f}, "
          f"experience factors {top2(True):.2f}, oracle's own {own:.2f}")
