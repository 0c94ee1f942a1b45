"""Evaluation metrics against hand-computed examples, and the evaluations end to end
through the real replay core."""
from __future__ import annotations

import math
from datetime import date, datetime, timezone

import pytest

from pipeline.config import load
from pipeline.tools.evaluate import median, precision_recall_at, recall_at_precision, roc_auc


def test_roc_auc_hand_computed():
    # positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) → 3/4
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0
    assert roc_auc([True, False], [0.1, 0.9]) == 0.0


def test_roc_auc_ties_count_half():
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    # pos {0.5, 0.9}, neg {0.5, 0.1}: 0.5 vs 0.5 tie (½), 0.5>0.1, 0.9>0.5, 0.9>0.1 → 3.5/4
    assert roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(0.875)


def test_roc_auc_matches_pairwise_definition():
    import random
    rng = random.Random(1)
    labels = [rng.random() < 0.3 for _ in range(200)]
    scores = [round(rng.random(), 1) for _ in range(200)]   # many ties
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    pairwise = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert roc_auc(labels, scores) == pytest.approx(pairwise)


def test_roc_auc_rejects_one_class_and_length_mismatch():
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError):
        roc_auc([1, 0], [0.2])


def test_recall_at_precision_hand_computed():
    # by score: 0.9 pos, 0.8 neg, 0.7 pos, 0.6 pos, 0.5 neg, 0.4 pos
    labels = [1, 0, 1, 1, 0, 1]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    # t=0.9: P 1, R 1/4; t=0.7: P 2/3; t=0.6: P 3/4, R 3/4; t=0.4: P 4/6, R 1
    assert recall_at_precision(labels, scores, 0.75) == (0.75, 0.6)
    assert recall_at_precision(labels, scores, 0.6) == (1.0, 0.4)
    assert recall_at_precision(labels, scores, 1.0) == (0.25, 0.9)
    # tied scores form one threshold: {0.5 pos, 0.5 neg} can only be taken together
    assert recall_at_precision([1, 0], [0.5, 0.5], 0.6) == (0.0, None)
    assert recall_at_precision([0, 0], [0.5, 0.4], 0.5) == (0.0, None)


def test_precision_recall_at():
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.5, 0.2, 0.6, 0.1]
    # >= 0.5 predicts {0.9, 0.5, 0.6}: tp 2, fp 1, fn 1
    p, r = precision_recall_at(labels, scores, 0.5)
    assert p == pytest.approx(2 / 3) and r == pytest.approx(2 / 3)
    assert precision_recall_at(labels, scores, 0.95) == (0.0, 0.0)   # nothing predicted
    assert precision_recall_at(labels, scores, 0.0) == (pytest.approx(0.6), 1.0)
    assert precision_recall_at([0, 0], [0.9, 0.1], 0.5) == (0.0, 0.0)


def test_alert_figures_judge_each_customer_against_their_tiers_threshold():
    """The churn alert thresholds as alerts fire (warning: standard 0.30, gold 0.24; critical:
    standard 0.60, gold 0.50); a customer with no score (no early warning yet) is not alerted."""
    from pipeline.domain.backtest import alert_figures, alerted_at
    labels = [True, False, True, False, True]
    scores = [0.26, 0.26, 0.31, None, 0.55]
    tiers = ["gold", "standard", "standard", "gold", "gold"]
    # alerted at warning: 0.26 gold (leaver), 0.31 standard (leaver), 0.55 gold (leaver) → 3, all leavers
    assert alert_figures(labels, scores, tiers) == (3, 1.0, 1.0)
    # at critical only 0.55 gold (≥ 0.50): 1 of 3 leavers
    alerted, precision, recall = alert_figures(labels, scores, tiers, "critical")
    assert (alerted, precision) == (1, 1.0) and recall == pytest.approx(1 / 3)
    assert alert_figures([False, False], [0.1, None], ["standard", "gold"]) == (0, None, None)
    assert not alerted_at(None, "gold") and alerted_at(0.30, "diamond")   # an unknown tier: the standard thresholds


def test_median():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert median([-1.5]) == -1.5
    with pytest.raises(ValueError):
        median([])


# ----------------------------------------------------------------------------- end to end

replay_mod = pytest.importorskip("pipeline.service.replay")


@pytest.fixture
def settings(tmp_path):
    return load(data_dir=tmp_path)


def test_run_evaluate_small(settings):
    lines: list[str] = []
    from pipeline.tools.evaluate import run_evaluate
    r = run_evaluate(settings, customers=150, days=60, seed=2, out=lines.append,
                     end=datetime(2025, 3, 1, tzinfo=timezone.utc), horizon_days=28)
    assert lines and any("ROC AUC" in s for s in lines)
    assert r["churners"] == 30 and r["stayers"] == 120
    # every planted invalid record is dead-lettered (or, for a naive timestamp whose face
    # value is after the end, left out by as_of), every planted duplicate recognised
    assert r["dead_letters"] + r["left_out_after_end"] == r["invalid_planted"] > 0
    assert r["left_out_after_end"] <= 2
    assert r["duplicates_seen"] == r["duplicates_planted"] > 0
    assert r["unscored_customers"] == 0
    assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
    assert r["driver_top2"] is not None and 0.0 <= r["driver_top2"] <= 1.0
    assert r["lead_time_days_median"] is None or math.isfinite(r["lead_time_days_median"])
    assert r["early_positives"] > 0 and r["early_negatives"] > 0
    # the hand-set model has no early warning: none judged at the early cutoff
    assert r["early_warning_customers_early"] == 0 and r["auc_early_warning_early"] is None
    # calibration covers every customer, and beats (or at worst matches) knowing only the churn share
    assert sum(row["n"] for row in r["reliability"]) == 150
    assert 0.0 <= r["brier"] <= r["brier_base_rate"] == pytest.approx(0.2 * 0.8)


def test_run_transactions_evaluate(settings, tmp_path):
    from pipeline.tools.evaluate import run_transactions_evaluate
    from pipeline.tools.transactions import write_sample_csv
    log = write_sample_csv(tmp_path / "tx.csv", customers=120, days=365, end=date(2024, 12, 31))
    said: list[str] = []
    r = run_transactions_evaluate(settings, log.path, cutoff="2024-09-30", window_days=90, out=said.append)
    assert r["transactions"] == r["input_rows"] == log.rows and r["left_out"] == {}
    # the risk's horizon (30 days) is not the label's (90): the report says so
    assert r["churn_horizon_days"] == settings.churn_horizon_days == 30
    assert any("P(no activity within 30 days)" in line and "within 90 days" in line for line in said)
    assert 0 < r["transactions_replayed"] < log.rows
    assert r["customers"] > 50 and 0 < r["churned"] < r["customers"]
    assert r["unscored_customers"] == 0
    assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["auc_recency_baseline"] <= 1.0
    assert sum(row["n"] for row in r["reliability"]) == r["customers"]
    assert 0.0 <= r["brier"] <= 1.0


def test_a_purchase_history_older_than_the_time_floor_is_scored(settings, tmp_path):
    """CDNOW is 1997, before the live input's floor (CXPULSE_TIME_FLOOR, 2000): evaluating a
    history replays it from its first purchase instead of dead-lettering every purchase."""
    from pipeline.tools.evaluate import run_transactions_evaluate
    from pipeline.tools.transactions import write_sample_csv
    log = write_sample_csv(tmp_path / "tx.csv", customers=60, days=365, end=date(1997, 12, 31))
    r = run_transactions_evaluate(settings, log.path, cutoff="1997-09-30", window_days=60, resamples=20)
    assert settings.time_floor.year == 2000 and r["time_floor"] < "1997"
    assert r["customers"] > 20 and r["unscored_customers"] == 0
    assert r["auc"] is not None and r["auc"] != 0.5


def test_a_history_where_every_customer_churned_reports_no_auc_instead_of_failing(settings, tmp_path):
    """One class only (nobody bought after the cutoff): no ranking to judge. The figures say
    n/a; before, printing them raised a TypeError after the whole replay."""
    from pipeline.tools.evaluate import run_transactions_evaluate
    log = tmp_path / "tx.txt"
    log.write_text("".join(f"C{i} 2024050{1 + i % 5} 1 {10 + i}.50\n" for i in range(12)))
    said: list[str] = []
    r = run_transactions_evaluate(settings, log, cutoff="2024-06-30", window_days=30, resamples=10, out=said.append,
                                  columns=["customer_id", "date", "quantity", "amount"])
    assert r["customers"] == 12 and r["churn_rate"] == 1.0 and r["auc"] is None
    assert r["scores"]["churn_risk"]["auc"] is None
    assert any(s.strip() == "ROC AUC churn_risk                       n/a (the labels hold one class only)" for s in said)


def test_brier_score_hand_computed():
    from pipeline.tools.evaluate import brier_score
    # (0.8-1)² + (0.4-1)² + (0.6-0)² + (0.2-0)² = 0.04 + 0.36 + 0.36 + 0.04 = 0.8 → 0.2
    assert brier_score([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.2)
    assert brier_score([True, False], [1.0, 0.0]) == 0.0
    with pytest.raises(ValueError):
        brier_score([1], [0.5, 0.5])


def test_reliability_bins_hand_computed():
    from pipeline.tools.evaluate import reliability
    labels = [0, 0, 1, 1, 0, 1, 1]
    scores = [0.05, 0.15, 0.12, 0.35, 0.45, 0.9, 1.0]
    rows = reliability(labels, scores, edges=(0.0, 0.1, 0.3, 0.5, 1.0))
    assert rows == [
        {"bin": "0.00-0.10", "n": 1, "mean_risk": 0.05, "observed": 0.0},
        {"bin": "0.10-0.30", "n": 2, "mean_risk": 0.135, "observed": 0.5},
        {"bin": "0.30-0.50", "n": 2, "mean_risk": 0.4, "observed": 0.5},
        {"bin": "0.50-1.00", "n": 2, "mean_risk": 0.95, "observed": 1.0},   # 1.0 falls in the last bin
    ]
    assert reliability([1], [0.25], edges=(0.0, 0.5, 1.0)) == [{"bin": "0.00-0.50", "n": 1, "mean_risk": 0.25, "observed": 1.0}]


def test_lift_share_hand_computed():
    from pipeline.tools.evaluate import lift_share
    # model 0.65, oracle 0.75: (0.15) / (0.25) = 0.6
    assert lift_share(0.65, 0.75) == pytest.approx(0.6)
    assert lift_share(0.75, 0.75) == pytest.approx(1.0)
    assert lift_share(0.45, 0.75) == pytest.approx(-0.2)   # worse than chance: negative
    with pytest.raises(ValueError):
        lift_share(0.6, 0.5)


def test_top_k_share_hand_computed():
    from pipeline.tools.evaluate import top_k_share
    planted = ["detractor", "late_fulfilment", "failed_recovery", "high_effort"]
    named = [["detractor", "inactivity"],            # 1st: hit
             ["inactivity", "late_fulfilment"],      # 2nd: hit
             ["inactivity", "detractor", "failed_recovery"],  # 3rd: miss at k=2, hit at k=3
             []]                                      # none named: miss
    assert top_k_share(planted, named, 2) == pytest.approx(2 / 4)
    assert top_k_share(planted, named, 3) == pytest.approx(3 / 4)
    assert top_k_share(planted, named, 1) == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        top_k_share([], [], 2)
    with pytest.raises(ValueError):
        top_k_share(["x"], [], 2)


def test_bootstrap_auc_interval_brackets_the_auc_and_narrows_with_data():
    import random
    from pipeline.tools.evaluate import bootstrap_auc_interval
    rng = random.Random(5)

    def sample(n):
        labels = [rng.random() < 0.3 for _ in range(n)]
        return labels, [rng.gauss(1.0 if y else 0.0, 1.0) for y in labels]

    small_l, small_s = sample(200)
    big_l, big_s = sample(5000)
    lo, hi = bootstrap_auc_interval(small_l, small_s, resamples=300, seed=1)
    assert lo < roc_auc(small_l, small_s) < hi
    blo, bhi = bootstrap_auc_interval(big_l, big_s, resamples=300, seed=1)
    assert blo < roc_auc(big_l, big_s) < bhi
    assert (bhi - blo) < (hi - lo) / 3          # 25x the data: about 1/5 of the width
    assert 0.70 < blo and bhi < 0.80            # binormal with d' = 1: AUC = Φ(1/√2) ≈ 0.760
    # a perfect score has a degenerate interval at 1; same seed, same interval
    assert bootstrap_auc_interval([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 100) == (1.0, 1.0)
    assert bootstrap_auc_interval(small_l, small_s, 50, seed=3) == bootstrap_auc_interval(small_l, small_s, 50, seed=3)
    with pytest.raises(ValueError):
        bootstrap_auc_interval([1, 1], [0.2, 0.3])


def test_run_transactions_evaluate_reports_the_scores_and_the_ceiling_with_intervals(settings, tmp_path):
    from pipeline.tools.evaluate import run_transactions_evaluate
    from pipeline.tools.transactions import write_sample_csv
    log = write_sample_csv(tmp_path / "tx.csv", customers=150, days=365, end=date(2024, 12, 31))
    r = run_transactions_evaluate(settings, log.path, cutoff="2024-09-30", window_days=90, resamples=100)
    scores = r["scores"]
    assert set(scores) == {"churn_risk", "days_since_last_purchase", "rfm (1 - percentile score)",
                           "bgnbd (1 - P(alive))", "bgnbd P(no purchase in window)",
                           "ceiling: fit on these labels (5-fold)"}
    assert scores["churn_risk"]["auc"] == r["auc"]
    assert scores["days_since_last_purchase"]["auc"] == r["auc_recency_baseline"]
    for name, f in scores.items():
        lo, hi = f["ci95"]
        assert lo <= f["auc"] <= hi, name
    # on this log the stoppers are the churners: recency separates them well above chance
    assert scores["days_since_last_purchase"]["ci95"][0] > 0.6
    assert set(scores["bgnbd (1 - P(alive))"]["params_days"]) == {"r", "alpha", "a", "b"}
