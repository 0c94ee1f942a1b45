"""Lab script (not shipped), step 1 of 2: replay a causal stream up to the cut with the
learning loop collecting snapshots (nothing trained), and save the labelled snapshots, the
features of the customers present at the cut and the truth (departures, oracle, planted
driver, the oracle's own drivers) to /tmp/churn/h_<hazard>_<seed>.pkl for
docs/lab/churn_causal_models.py. 2,000 customers, 180 days, cut at day 150, end 2026-11-30.

    .venv/bin/python docs/lab/churn_causal_harvest.py strong 3

Another setting: a name "PRESET+TAG" and the overrides in the environment, e.g.
    HZR=late_fulfilment=3,detractor=2.2 HZB=0.0007 HZD=45 .venv/bin/python docs/lab/churn_causal_harvest.py weak+H4 43
(HZR: hazard ratios, HZB: baseline hazard, HZD: decay days; saved as /tmp/churn/h_weak+H4_43.pkl).
"""
import os, sys, pickle, time
from pipeline.tools.hazard_model import parse_ratios
from datetime import datetime, timedelta, timezone
import numpy as np
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.tools.hazard_model import hazard_model, in_force, INCIDENT_FACTORS
from pipeline.tools.generator import generate
from pipeline.service.replay import replay
from pipeline.service.churn_learning import ChurnLearner
from pipeline.tools.evaluate import _fresh_topic_of
from pipeline.domain.churn_features import churn_features
from pipeline.domain.scoring import profile
import math

hz, seed = sys.argv[1], int(sys.argv[2])
days, cut_day, customers = 180, 150, 2000
settings = Settings()
model = hazard_model(hz.split("+")[0], parse_ratios(os.environ["HZR"]) if os.environ.get("HZR") else None,
                     float(os.environ["HZB"]) if os.environ.get("HZB") else None,
                     float(os.environ["HZD"]) if os.environ.get("HZD") else None)
end = datetime(2026, 11, 30, tzinfo=timezone.utc)
stream = generate(customers=customers, days=days, seed=seed, end=end, model=model)
truth = stream.causal
cut = stream.start + timedelta(days=cut_day)
learner = ChurnLearner(settings.churn_horizon_days, retrain_every=1e18)
core = build_core(settings)
t0 = time.time()
res = replay(stream.values(), core, clock=lambda: cut.timestamp(), as_of=cut, learner=learner,
             topic_of=_fresh_topic_of(stream, settings.topic_for_type))
os.makedirs("/tmp/churn", exist_ok=True)
print("replay", time.time() - t0, file=sys.stderr)
book = learner.book
X, y, t, ref = book.training_data()
ids = np.concatenate([np.array(s.customer_ids) for s in book.labelled])
ids_cut = sorted(c for c, tr in truth.customers.items() if tr.present_at(cut_day) and c in res.states)
now = cut.timestamp()
Xc = np.array([churn_features(res.states[c], profile(res.states[c], now, core.params, core.population, core.rates), core.population) for c in ids_cut])
lab = np.array([truth.customers[c].leaves_within(cut_day, 30) for c in ids_cut])
orc = np.array([truth.oracle(c, cut_day, 30) for c in ids_cut])
hand = np.array([float(res.scores[c]["churn_risk"]) for c in ids_cut])
drv = [truth.customers[c].driver for c in ids_cut]
# oracle factor ranking at the cut: log-HR summed over incidents revealed before cut in force during window
def oracle_rank(c):
    inc = [(r, f) for r, f in truth.customers[c].incidents if r < cut_day]
    tot = {}
    for r, f in inc:
        overlap = max(0.0, min(r + model.decay_days, cut_day + 30) - max(r, cut_day))
        if overlap > 0:
            tot[f] = tot.get(f, 0) + math.log(model.ratio(f)) * overlap
    return [f for f, v in sorted(tot.items(), key=lambda kv: -kv[1]) if v > 0]
orank = [oracle_rank(c) for c in ids_cut]
dep = {c: tr.departed_day for c, tr in truth.customers.items()}
start = stream.start.timestamp()
pickle.dump(dict(X=X, y=y, t=t, ref=ref, ids=ids, Xc=Xc, ids_cut=ids_cut, lab=lab, orc=orc, hand=hand, drv=drv,
                 orank=orank, dep=dep, start=start, pop=core.population), open(f"/tmp/churn/h_{hz}_{seed}.pkl", "wb"))
print("saved", X.shape, y.mean(), Xc.shape, lab.sum(), file=sys.stderr)
