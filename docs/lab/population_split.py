"""Lab script (not shipped): how far apart one customer's churn_risk is when two workers each
re-fit the population on their own half of the customers (split by the partition of the key,
as Kafka's default partitioner does), and how far either half's fit is from the fit on all.
Replays a generated stream (default generator, 120 days) with the core, fits the population
three ways as of the stream's end, and scores every customer with each.

    .venv/bin/python docs/lab/population_split.py 7 2000
    .venv/bin/python docs/lab/population_split.py 11 6000

Session 26 (3 Dec 2026): seed 7, 2,000 customers: |half A − half B| p50 0.0014, p90 0.0161,
p99 0.0314, max 0.0394 (own half against all: p90 0.0078, max 0.0229); seed 11, 6,000: p50
0.0023, p90 0.0204, p99 0.0325, max 0.0376 (p90 0.0101, max 0.0236). Why the
workers that do not learn now serve the fit of the owner of input partition 0 (README,
"Calibration").
"""
import sys
import time

from kafka.partitioner.default import murmur2

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.churn import fit_population
from pipeline.domain.scoring import profile
from pipeline.service.replay import replay
from pipeline.tools.generator import generate

seed, customers = int(sys.argv[1]), int(sys.argv[2])
stream = generate(customers=customers, days=120, seed=seed)
core = build_core(Settings())
states = replay([r.value for r in stream.records], core, clock=time.time).states
as_of = max(s.wm for s in states.values())
half = {cid: (murmur2(cid.encode()) & 0x7fffffff) % 2 for cid in states}
on_all = fit_population(states.values(), core.population, as_of=as_of)
halves = [fit_population([s for c, s in states.items() if half[c] == h], core.population, as_of=as_of) for h in (0, 1)]
print("all   ", on_all)
print("half A", halves[0])
print("half B", halves[1])
apart, off = [], []
for cid, s in states.items():
    if not s.n:
        continue
    risk = [profile(s, as_of, core.params, p, core.rates).churn.risk for p in (on_all, *halves)]
    apart.append(abs(risk[1] - risk[2]))
    off.append(abs(risk[1 + half[cid]] - risk[0]))
apart.sort()
off.sort()


def q(values: list[float], p: float) -> float:
    return values[int(p * (len(values) - 1))]


print(f"seed {seed}, {len(apart)} customers: |half A - half B| p50 {q(apart, .5):.4f} p90 {q(apart, .9):.4f} "
      f"p99 {q(apart, .99):.4f} max {apart[-1]:.4f}; own half vs all p50 {q(off, .5):.4f} p90 {q(off, .9):.4f} "
      f"p99 {q(off, .99):.4f} max {off[-1]:.4f}")
