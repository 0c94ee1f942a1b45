"""The control group and the uplift figures (pipeline.domain.uplift): hand-computed values."""
import pytest

from pipeline.domain.uplift import (
    CaseOutcome, bootstrap_mean_difference, is_control, newcombe_difference, uplift_by_action, wilson_interval,
)


def test_wilson_five_of_ten():
    # p = .5, z² = 3.8415: centre .5, half = 1.96·sqrt(.025 + .009604)/1.38415 = .26340
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


def test_wilson_zero_successes_and_empty():
    lo, hi = wilson_interval(0, 10)   # z²/n / (1 + z²/n) = .38415/1.38415 = .2775
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_newcombe_published_example():
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 − 48/80, method 10: 0.0524 to 0.3339
    d, lo, hi = newcombe_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2, abs=1e-9)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    with pytest.raises(ValueError):
        newcombe_difference(1, 0, 1, 2)


def test_bootstrap_mean_difference():
    assert bootstrap_mean_difference([1.0, 1.0], [0.0, 0.0], resamples=200) == (1.0, 1.0, 1.0)
    d, lo, hi = bootstrap_mean_difference([0.0, 10.0], [0.0], resamples=500, seed=3)
    assert d == 5.0 and lo == 0.0 and hi == 10.0      # resampled means of [0, 10] are 0, 5, 10
    assert bootstrap_mean_difference([0.0, 10.0], [0.0], resamples=500, seed=3) == (d, lo, hi)


def test_is_control_share_and_determinism():
    ids = [f"alert-{i}" for i in range(20000)]
    assert not any(is_control(i, 0.0) for i in ids)
    assert all(is_control(i, 1.0) for i in ids)
    share = sum(is_control(i, 0.2) for i in ids) / len(ids)
    assert 0.19 < share < 0.21
    assert [is_control(i, 0.2) for i in ids[:50]] == [is_control(i, 0.2) for i in ids[:50]]
    # nested: an id in control at 10 % is in control at 20 %
    assert all(is_control(i, 0.2) for i in ids if is_control(i, 0.1))
    with pytest.raises(ValueError):
        is_control("x", 1.5)


def test_uplift_by_action():
    cases = ([CaseOutcome("call", False, churned, 100.0) for churned in [True] * 2 + [False] * 8]
             + [CaseOutcome("call", True, churned, 50.0) for churned in [True] * 5 + [False] * 5]
             + [CaseOutcome("offer", False, False, 10.0)])
    rows = {r["action"]: r for r in uplift_by_action(cases, resamples=100)}
    call = rows["call"]
    assert (call["treated"], call["control"]) == (10, 10)
    assert call["churn_treated"] == 0.2 and call["churn_control"] == 0.5
    d, lo, hi = newcombe_difference(5, 10, 2, 10)
    assert call["churn_uplift"] == pytest.approx(0.3) and call["churn_uplift_ci"] == (lo, hi)
    assert call["revenue_kept"] == 50.0 and call["revenue_kept_ci"] == (50.0, 50.0)
    assert rows["offer"]["churn_uplift"] is None and "control group" in rows["offer"]["note"]
    assert rows["all"]["treated"] == 11 and rows["all"]["control"] == 10

