"""Purchase-history baselines (recency, RFM, BG/NBD): hand-computed values and recovery of
known BG/NBD parameters from data simulated by the model itself."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.tools import purchase_baselines as pb

CUT = datetime(2024, 10, 1, tzinfo=timezone.utc)
EPOCH_DAY = CUT.timestamp() / 86400.0


def _at(days_before_cut: float) -> datetime:
    return CUT - timedelta(days=days_before_cut)


def test_summarise_counts_purchase_days_up_to_the_cutoff():
    rows = [("a", _at(10.5), 5.0), ("a", _at(10.2), 7.0), ("a", _at(3.5), 1.0),   # two purchases one day
            ("a", CUT + timedelta(days=1), 100.0),                                 # after the cutoff: ignored
            ("b", _at(40.5), 2.5)]
    s = pb.summarise(rows, CUT)
    assert s["a"].purchase_days == 2 and s["a"].spend == pytest.approx(13.0)
    assert s["b"].purchase_days == 1 and s["b"].spend == 2.5
    assert pb.recency_days(s["a"], CUT) == pytest.approx(4.0)     # last purchase day starts 4 days before
    assert pb.bgnbd_inputs(s["a"], CUT) == (1, pytest.approx(7.0), pytest.approx(11.0))
    assert pb.bgnbd_inputs(s["b"], CUT) == (0, 0.0, pytest.approx(41.0))


def test_rfm_hand_computed():
    s = {"a": pb.PurchaseSummary(5, EPOCH_DAY - 100, EPOCH_DAY - 2, 500.0),    # recent, frequent, big
         "b": pb.PurchaseSummary(1, EPOCH_DAY - 50, EPOCH_DAY - 50, 20.0),     # old, once, small
         "c": pb.PurchaseSummary(2, EPOCH_DAY - 80, EPOCH_DAY - 10, 20.0)}
    rfm = pb.rfm_scores(s, CUT)
    # recency ranks a 3, c 2, b 1; frequency a 3, c 2, b 1; monetary a 3, b and c tie at 1.5
    assert rfm["a"] == pytest.approx((3 + 3 + 3) / 3 / 3)
    assert rfm["c"] == pytest.approx((2 + 2 + 1.5) / 3 / 3)
    assert rfm["b"] == pytest.approx((1 + 1 + 1.5) / 3 / 3)


def test_bgnbd_p_alive_hand_computed():
    p = pb.BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.4)
    assert pb.bgnbd_p_alive(p, 0, 0.0, 30.0) == 1.0        # BG/NBD: no repeat purchase, never dropped
    # x = 2, t_x = 10, T = 30: 1 / (1 + 0.8/3.4 · (34/14)^2.25)
    expected = 1.0 / (1.0 + 0.8 / 3.4 * (34.0 / 14.0) ** 2.25)
    assert pb.bgnbd_p_alive(p, 2, 10.0, 30.0) == pytest.approx(expected)
    assert pb.bgnbd_p_alive(p, 2, 30.0, 30.0) > pb.bgnbd_p_alive(p, 2, 10.0, 30.0)   # recent = more alive


def test_bgnbd_p_no_purchase_hand_computed():
    p = pb.BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.4)
    alive = pb.bgnbd_p_alive(p, 2, 10.0, 30.0)
    quiet = (34.0 / 124.0) ** 2.25                       # ((α+T)/(α+T+h))^(r+x), h = 90
    assert pb.bgnbd_p_no_purchase(p, 2, 10.0, 30.0, 90.0) == pytest.approx(1 - alive * (1 - quiet))
    # a single-purchase customer is alive for the BG/NBD, yet likely to stay quiet
    assert pb.bgnbd_p_no_purchase(p, 0, 0.0, 200.0, 90.0) == pytest.approx(1 - (1 - (204.0 / 294.0) ** 0.25))
    assert pb.bgnbd_p_no_purchase(p, 2, 10.0, 30.0, 0.0) == pytest.approx(1.0)


def test_bgnbd_log_likelihood_hand_computed():
    from scipy.special import betaln, gammaln
    r, alpha, a, b = 0.5, 5.0, 1.2, 3.0
    x, t_x, T = 3, 20.0, 40.0
    a1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * math.log(alpha + T)
    a4 = math.log(a / (b + x - 1)) - (r + x) * math.log(alpha + t_x)
    expected = a1 + a2 + math.log(math.exp(a3) + math.exp(a4))
    got = pb.bgnbd_log_likelihood((r, alpha, a, b), [x, 0], [t_x, 0.0], [T, T])
    assert got[0] == pytest.approx(expected)
    assert got[1] == pytest.approx(gammaln(r) - gammaln(r) + r * math.log(alpha) - r * math.log(alpha + T))


def test_fit_bgnbd_recovers_the_parameters_it_was_simulated_with():
    rng = random.Random(4)
    true = dict(r=0.8, alpha=20.0, a=0.7, b=2.5)
    xs, txs, Ts = [], [], []
    for _ in range(6000):
        lam = rng.gammavariate(true["r"], 1.0 / true["alpha"])
        p = rng.betavariate(true["a"], true["b"])
        T = rng.uniform(150.0, 300.0)
        t, x, t_x = 0.0, 0, 0.0
        while True:
            t += rng.expovariate(lam)
            if t > T:
                break
            x, t_x = x + 1, t
            if rng.random() < p:
                break
        xs.append(x), txs.append(t_x), Ts.append(T)
    fit = pb.fit_bgnbd(xs, txs, Ts)
    assert fit.r == pytest.approx(true["r"], rel=0.2)
    assert fit.alpha == pytest.approx(true["alpha"], rel=0.25)
    assert fit.a == pytest.approx(true["a"], rel=0.3)
    assert fit.b == pytest.approx(true["b"], rel=0.4)


def test_hindsight_features_hand_computed():
    rows = [("a", _at(100.5), 10.0), ("a", _at(20.5), 20.0), ("a", _at(20.2), 5.0), ("a", _at(2.5), 15.0),
            ("a", CUT + timedelta(days=3), 99.0),                                   # after the cutoff: ignored
            ("b", _at(200.5), 8.0)]
    a, b = pb.hindsight_features(pb.summarise(rows, CUT), CUT, ["a", "b"])
    # a: purchase days 101, 21 and 3 days before the cut starts; 50 spent; gaps of 80 and 18 days
    assert [math.expm1(v) for v in a] == pytest.approx([3, 3, 101, 50 / 3, 49, 2, 2, 3])
    # b: one purchase: its gap is its tenure, no purchase day in any window
    assert [math.expm1(v) for v in b] == pytest.approx([201, 1, 201, 8, 201, 0, 0, 0])


def test_hindsight_ceiling_ranks_what_the_features_hold_and_no_more():
    rng = random.Random(5)
    rows, quiet_for = [], {}
    for i in range(600):
        cid = f"c{i}"
        quiet_for[cid] = rng.uniform(1, 150)          # days since the last purchase
        for k in range(rng.randint(1, 6)):
            rows.append((cid, _at(quiet_for[cid] + 30 * k), rng.uniform(5, 50)))
    ids = sorted(quiet_for)
    features = pb.hindsight_features(pb.summarise(rows, CUT), CUT, ids)
    from pipeline.domain.prediction_metrics import roc_auc
    # a label the history explains (long quiet = gone): the out-of-fold fit ranks it well
    gone = [quiet_for[c] + rng.gauss(0, 20) > 75 for c in ids]
    assert roc_auc(gone, pb.hindsight_ceiling(features, gone)) > 0.85
    # a label the history does not explain: out of fold, the fit cannot learn the answer itself
    coin = [rng.random() < 0.5 for _ in ids]
    assert 0.4 < roc_auc(coin, pb.hindsight_ceiling(features, coin)) < 0.6
