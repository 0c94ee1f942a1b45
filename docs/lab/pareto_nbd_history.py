"""Lab script (not shipped): a purchase history of another shape than CDNOW's, for
`cxpulse evaluate --transactions` — a Pareto/NBD-like population: each customer has a
purchase rate λ drawn from a gamma and dies at an exponential time whose rate is drawn from
another gamma; the first purchase is on arrival, the gap to the next one exponential(λ), every
later gap the sum of two (Erlang-2: more regular than Poisson, so the BG/NBD is not the true
model). Customers arrive over the first 180 days of two years (2020–2021).
Written as customer_id,date,amount (log-normal amounts). Deterministic by seed.

    .venv/bin/python docs/lab/pareto_nbd_history.py 1 20000 /tmp/p1.csv
    .venv/bin/cxpulse evaluate --transactions /tmp/p1.csv --cutoff 2021-04-01 --holdout-weeks 39

(20,000 customers, seed 1: 272,347 purchases, 179,972 up to the cutoff; docs/evaluation.md §7,
"A purchase history of 20,000 customers".)
"""
import datetime as dt
import sys

import numpy as np

seed, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(seed)
start, days = dt.date(2020, 1, 1), 730
lam = rng.gamma(0.6, 1 / 12.0, n)    # purchases per day (mean 0.05)
mu = rng.gamma(0.5, 1 / 400.0, n)    # death rate per day (mean 1/800)
birth = rng.integers(0, 180, n)
with open(out, "w") as f:
    f.write("customer_id,date,amount\n")
    for i in range(n):
        life = rng.exponential(1 / mu[i]) if mu[i] > 0 else 1e9
        t, end, first = birth[i], min(days, birth[i] + life), True
        while t < end:
            amount = round(float(rng.lognormal(3, 0.6)), 2)
            f.write(f"C{i},{start + dt.timedelta(days=int(t))},{amount}\n")
            t += rng.exponential(1 / lam[i]) if not first else 0
            first = False
            t += rng.exponential(1 / lam[i])
