"""The learned churn model (issue #16): features, self-labelled snapshots, training and
calibration, cold start and handover, drivers, and arrival-order invariance. No broker."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.domain.churn import DAY, PopulationParams
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.churn_features import FEATURE_DIRECTION, FEATURE_FACTOR, FEATURE_NAMES, FEATURES, churn_features
from pipeline.domain.churn_model import customer_baseline, drivers_from, factor_contributions, learned_profile
from pipeline.domain.churn_snapshots import SnapshotBook, churned_after, sample_key
from pipeline.learning import churn_trainer
from pipeline.learning.churn_trainer import (
    LinearChurnModel, auc_noise, better_than_reference, enough_history, fit_platt, recency_weights, time_split, train,
)
from pipeline.service.processor import BatchResult, Core, RawRecord
from pipeline.domain.scoring import ScoringParams, apply, profile, score_record
from pipeline.service.churn_learning import ChurnLearner
from pipeline.domain.state import CustomerState
from schemas.outputs import ChurnFactor, ScoreRecord
from tests.factories import RECEIVED_AT, at, complaint, ev, order, raw, touchpoint

PARAMS = ScoringParams()
POP = PopulationParams()
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()


def state_of(events) -> CustomerState:
    s = CustomerState()
    for e in sorted(events, key=lambda d: d["occurred_at"]):
        apply(s, ev(e), PARAMS)
    return s


def features_at(s: CustomerState, as_of: float) -> dict[str, float]:
    p = profile(s, as_of, PARAMS, POP)
    return dict(zip(FEATURE_NAMES, churn_features(s, p, POP)))


# ----------------------------------------------------------------------------- features

def test_every_feature_maps_to_one_factor_of_the_vocabulary():
    assert len(FEATURES) == len(FEATURE_NAMES) == len(FEATURE_FACTOR)
    vocabulary = {f.value for f in ChurnFactor}
    assert set(FEATURE_FACTOR.values()) <= vocabulary
    # every factor of the hand-set model's units has its own feature under its own name
    for name in ("unresolved_complaints", "sla_breaches", "failed_recovery", "late_fulfilment", "detractor",
                 "low_ratings", "refunds_returns", "high_effort", "experience_drop", "declining_frequency",
                 "declining_spend"):
        assert FEATURE_FACTOR[name] == name


def test_features_read_silence_against_own_rhythm():
    weekly = [order(when=at(days=7 * i)) for i in range(10)]
    s = state_of(weekly)
    last = s.wm
    soon = features_at(s, last + 2 * DAY)
    later = features_at(s, last + 40 * DAY)
    assert len(soon) == len(FEATURE_NAMES)
    assert later["silence_days"] > soon["silence_days"]
    assert later["quiet_logit"] > soon["quiet_logit"]
    assert later["silence_vs_own_gap"] > soon["silence_vs_own_gap"]
    assert later["recent_active_vs_usual"] < soon["recent_active_vs_usual"]
    assert soon["orders"] == pytest.approx(math.log1p(10))
    # unknown values are NaN, not a made-up number
    assert math.isnan(soon["cxi"]) or soon["cxi"] >= 0
    one = features_at(state_of([order(customer="c2")]), T0 + DAY)
    assert math.isnan(one["silence_vs_own_gap"]) and math.isnan(one["purchase_gap_open"])


def test_features_count_failed_recoveries():
    evs = [order(when=at(days=0))]
    for i in range(3):
        evs += [complaint(complaint_id=f"k{i}", when=at(days=1 + i)),
                complaint(complaint_id=f"k{i}", status="resolved", satisfied=False, when=at(days=1 + i, hours=2))]
    f = features_at(state_of(evs), T0 + 5 * DAY)
    assert f["failed_recovery"] > 2.5
    assert features_at(state_of(evs[:1]), T0 + 5 * DAY)["failed_recovery"] == 0


def test_incident_counts_over_two_windows_tell_a_fresh_incident_from_an_old_one():
    """Three failed recoveries in days 1–3: the 45-day count halves in 45 days, the one-week
    count in a week; an old incident keeps its 45-day count and has almost no weekly one."""
    evs = [order(when=at(days=0))]
    for i in range(3):
        evs += [complaint(complaint_id=f"k{i}", when=at(days=1 + i)),
                complaint(complaint_id=f"k{i}", status="resolved", satisfied=False, when=at(days=1 + i, hours=2))]
    s = state_of(evs)
    fresh, old = features_at(s, s.wm), features_at(s, s.wm + 42 * DAY)
    assert fresh["failed_recovery_count"] == pytest.approx(3.0, abs=0.15)
    assert fresh["failed_recovery_week"] == pytest.approx(3 * 0.5 ** (1 / 7), abs=0.2)
    assert old["failed_recovery_count"] == pytest.approx(fresh["failed_recovery_count"] * 0.5 ** (42 / 45), rel=1e-3)
    assert old["failed_recovery_week"] == pytest.approx(fresh["failed_recovery_week"] * 0.5 ** 6, rel=1e-3)
    assert fresh["detractor_count"] == fresh["late_fulfilment_week"] == 0


# ----------------------------------------------------------------------------- labels

def test_label_is_gone_or_no_activity_within_the_horizon():
    """churned at t = no active day in the H days from t's day on (no activity within H), or
    none in the H days after those (gone by t + H); active in both windows = not churned."""
    day = 86400
    t = 100 * day                                   # a snapshot at a midnight: days 100..129, then 130..159
    s = CustomerState()
    s.last_day, s.day_mask, s.n_days, s.first_day = 99, 1, 1, 99
    assert churned_after(s, t, 30) is True          # last active the day before the snapshot
    s.last_day, s.day_mask = 129, 1                 # active on day 129 only: active within H, then gone
    assert churned_after(s, t, 30) is True
    s.last_day, s.day_mask = 110, 1 | (1 << 10)     # active on days 100 and 110, never after: gone by t + H
    assert churned_after(s, t, 30) is True
    s.last_day, s.day_mask = 130, 1 | (1 << 1)      # days 129 and 130: active in both windows
    assert churned_after(s, t, 30) is False
    s.last_day, s.day_mask = 159, 1 | (1 << 59)     # days 100 and 159: the last days of both windows count
    assert churned_after(s, t, 30) is False
    s.last_day, s.day_mask = 160, 1 | (1 << 60)     # days 100 and 160: 160 is past both windows
    assert churned_after(s, t, 30) is True
    s.last_day, s.day_mask = 140, 1                 # day 140 only: no activity within H
    assert churned_after(s, t, 30) is True
    s.last_day, s.day_mask = 200, 1 | (1 << 60)     # active at 140 and 200; the bitmap no longer reaches day 100
    assert churned_after(s, t, 30) is None


def test_snapshot_book_labels_only_after_the_horizon_and_bounds_memory():
    book = SnapshotBook(horizon_days=2, max_rows=5)
    states = {}
    for d in range(6):
        t = (100 + d) * DAY
        for c in ("a", "b"):
            s = states.setdefault(c, CustomerState(customer_id=c, n=1))
            if c == "a":                      # a comes daily, b never comes back
                s.last_day, s.day_mask = 100 + d, (s.day_mask << 1 | 1) & ((1 << 64) - 1)
                s.first_day, s.n_days = 100, d + 1
            elif d == 0:
                s.last_day, s.day_mask, s.first_day, s.n_days = 99, 1, 99, 1
        book.label_due(t, states.get)
        book.add(t, [(c, [float(d)], 0.5) for c in ("b", "a")])
        if d < 4:
            assert book.rows == 0               # nothing labelled before 2H days have passed
    assert book.rows <= 5                      # oldest snapshots dropped first
    X, y, t, ref = book.training_data()
    # a (daily, still coming) never churned; b (gone) always did
    labels = dict(zip(zip(t.tolist(), X[:, 0].tolist()), y.tolist()))
    assert sum(y) == len(y) // 2
    with pytest.raises(ValueError):
        book.add(100 * DAY, [])


def test_a_snapshot_row_whose_state_is_no_longer_given_is_dropped_unless_its_label_is_known():
    """`state_of` None (in the worker: the customer's partition was given away) is not "no
    activity": the row cannot be labelled and is dropped, unless its first window, read while
    the state was there, already decided it (no activity within H: churned)."""
    book = SnapshotBook(horizon_days=2)
    daily, quiet = CustomerState(customer_id="daily", n=1), CustomerState(customer_id="quiet", n=1)
    quiet.last_day, quiet.day_mask, quiet.first_day, quiet.n_days = 99, 1, 99, 1   # gone before the snapshot
    states = {"daily": daily, "quiet": quiet, "moved": CustomerState(customer_id="moved", n=1)}
    for d in range(5):
        for c in ("daily", "moved")[:2 if "moved" in states else 1]:
            s = states[c]
            s.last_day, s.day_mask = 100 + d, (s.day_mask << 1 | 1) & ((1 << 64) - 1)
            s.first_day, s.n_days = 100, d + 1
        if d == 3:   # after the first window of day 100's snapshot was read (day 102)
            del states["moved"], states["quiet"]
        book.label_due((100 + d) * DAY, states.get)
        if d == 0:
            book.add(100 * DAY, [(c, [0.0], 0.5) for c in ("daily", "moved", "quiet")])
    [snap] = book.labelled
    assert dict(zip(snap.customer_ids, snap.labels.tolist())) == {"daily": False, "quiet": True}


def test_snapshot_book_labels_horizons_longer_than_half_the_bitmap():
    """H = 45: 2H = 90 days is beyond the 64-day bitmap; the book reads the first window as
    it closes, the second as it closes, and loses no row."""
    book = SnapshotBook(horizon_days=45)
    states = {"a": CustomerState(customer_id="a", n=1), "b": CustomerState(customer_id="b", n=1)}
    b = states["b"]
    b.last_day, b.day_mask, b.first_day, b.n_days = 99, 1, 99, 1      # b: gone before the first snapshot
    a = states["a"]
    for d in range(100):
        t = (100 + d) * DAY
        a.last_day, a.day_mask = 100 + d, (a.day_mask << 1 | 1) & ((1 << 64) - 1)   # a: every day
        a.first_day, a.n_days = 100, d + 1
        book.label_due(t, states.get)
        if d < 60:
            book.add(t, [("a", [float(d)], 0.5), ("b", [float(d)], 0.5)])
    X, y, t, _ = book.training_data()
    assert len(y) == 2 * 10                       # the snapshots of days 100..109 are labelled (t + 90 ≤ day 199)
    assert [bool(v) for v in y] == [False, True] * 10


def test_the_early_warning_model_learns_who_leaves_among_the_customers_still_there():
    """Rows whose customer was active within H after the snapshot (`still_here`) are the
    early-warning model's: among them the label is "left within H after that". Here silence
    marks the customers already gone (churned, not here) while among those still there the
    incidents decide: churn_risk's model weights silence, the early-warning model does not
    need it and ranks the ones still there by their incidents."""
    rng = np.random.default_rng(4)
    n, k = 6000, len(FEATURE_NAMES)
    X = np.zeros((n, k))
    silence, incidents = FEATURE_NAMES.index("silence_days"), FEATURE_NAMES.index("failed_recovery_count")
    gone = rng.random(n) < 0.3
    X[:, silence] = np.where(gone, rng.uniform(2.5, 4.0, n), rng.uniform(0.0, 3.0, n))
    X[:, incidents] = rng.exponential(1.0, n)
    leaves = ~gone & (X[:, incidents] + rng.normal(0, 0.7, n) > 1.8)
    y, here = gone | leaves, ~gone
    t = np.repeat(np.arange(30) * 1.5 * DAY, n // 30)
    ew = churn_trainer.train_early_warning(X, y, t, here, version="ew-1", trained_at=float(t[-1]), leavers=500).model
    direct = train(X[here], y[here], t[here], version="ew-1", trained_at=float(t[-1]), leavers=500)
    assert ew is not None and np.array_equal(ew.coef, direct.coef) and ew.card == direct.card
    from sklearn.metrics import roc_auc_score
    whole = train(X, y, t, version="lr-1", trained_at=float(t[-1]), leavers=500)
    assert roc_auc_score(leaves[here], ew.predict(X[here])) > roc_auc_score(leaves[here], whole.predict(X[here])) + 0.05
    # too few rows still there: no early-warning model (the cold-start minimums), and it says so
    few = churn_trainer.train_early_warning(X, y, t, here & (np.arange(n) < 150), version="ew-2",
                                            trained_at=float(t[-1]), leavers=500)
    assert few.model is None and few.withheld.startswith("too few rows of customers still there")
    assert "it needs 200 / 200 from 50" in few.withheld


def test_an_early_warning_at_chance_is_withheld_and_says_why():
    """Incidents that do not tell who leaves: the model trained on them validates at chance
    and serves no warning; `withheld` names the AUC, which the learner logs and
    `cxpulse evaluate` prints."""
    rng = np.random.default_rng(5)
    n, k = 6000, len(FEATURE_NAMES)
    X = np.zeros((n, k))
    X[:, FEATURE_NAMES.index("failed_recovery_count")] = rng.exponential(1.0, n)
    y = rng.random(n) < 0.2
    t = np.repeat(np.arange(30) * 1.5 * DAY, n // 30)
    fit = churn_trainer.train_early_warning(X, y, t, np.ones(n, bool), version="ew", trained_at=float(t[-1]),
                                            leavers=500)
    direct = train(X, y, t, version="ew", trained_at=float(t[-1]), leavers=500)
    assert direct.card.auc_validation <= 0.5   # the case at hand: the same training, at chance
    assert fit.model is None
    assert fit.withheld == (f"validation AUC {direct.card.auc_validation:.4f}, not above chance "
                            f"({direct.card.rows_validation} rows of customers still there)")


def test_no_early_warning_model_until_its_labelled_history_spans_a_horizon():
    """The early warning's first models learn from the first days of a stream only (its label
    needs 2H of hindsight) and met the same customers weeks older: none is trained before its
    snapshots span H days (docs/evaluation.md §7, "A young history"). The same rows spread
    over H days train one."""
    rng = np.random.default_rng(4)
    n, k = 6000, len(FEATURE_NAMES)
    X = np.zeros((n, k))
    incidents = FEATURE_NAMES.index("failed_recovery_count")
    X[:, incidents] = rng.exponential(1.0, n)
    y = X[:, incidents] + rng.normal(0, 0.7, n) > 1.8
    here = np.ones(n, bool)
    for days, trained in ((29.0, False), (30.0, True)):
        t = np.repeat(np.linspace(0.0, days, 30) * DAY, n // 30)
        ew = churn_trainer.train_early_warning(X, y, t, here, version="ew", trained_at=float(t[-1]), leavers=500)
        assert (ew.model is not None) is trained, days
        assert (ew.withheld is None) is trained, days
    short = churn_trainer.train_early_warning(X, y, t * 29.0 / 30.0, here, version="ew", trained_at=float(t[-1]),
                                              leavers=500)
    assert short.withheld == "its labelled snapshots span 29 days, less than 30 (one horizon)"
    t = np.repeat(np.linspace(0.0, 14.0, 30) * DAY, n // 30)   # a shorter horizon asks a shorter span
    assert churn_trainer.train_early_warning(X, y, t, here, version="ew", trained_at=float(t[-1]), leavers=500,
                                             horizon_days=14).model is not None


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_neither_model_fits_the_counts_of_the_observed_history(kind):
    """orders, active_days, tenure_days and revenue_365d (a 12-month window over a younger
    stream) grow with the time the stream has been watched: a model fitted on snapshots 2H old
    meets them past its range when it serves (docs/evaluation.md, "The early warning's live
    backtest"; for churn_risk's model, §7 "History counts in churn_risk's model"). Here they
    even predict the label in the training rows; neither churn_risk's model (logistic or trees)
    nor the early-warning model gives them weight, so a risk, a warning and their baselines do
    not move with them, the incidents still rank, and the caller's rows are left as they were."""
    rng = np.random.default_rng(8)
    n, k = 6000, len(FEATURE_NAMES)
    X = np.zeros((n, k))
    incidents, orders = FEATURE_NAMES.index("failed_recovery_count"), FEATURE_NAMES.index("orders")
    X[:, incidents] = rng.exponential(1.0, n)
    X[:, orders] = rng.poisson(5.0, n)
    revenue = FEATURE_NAMES.index("revenue_365d")
    X[:, revenue] = rng.normal(6.0, 1.0, n)
    y = X[:, incidents] + 0.3 * X[:, orders] + 0.4 * X[:, revenue] + rng.normal(0, 0.7, n) > 5.7
    t = np.repeat(np.arange(30) * 1.5 * DAY, n // 30)
    before = X.copy()
    ew = churn_trainer.train_early_warning(X, y, t, np.ones(n, bool), version="ew-1", trained_at=float(t[-1]),
                                           leavers=500).model
    risk = train(X, y, t, version="m-1", trained_at=float(t[-1]), leavers=500, kind=kind)
    assert np.array_equal(X, before)
    assert ew is not None and ew.card.auc_validation > 0.7   # the incidents still rank
    assert risk.card is not None and risk.card.auc_validation > 0.7
    for name in churn_trainer.HISTORY_COUNTS:
        assert ew.coef[FEATURE_NAMES.index(name)] == 0.0
        if isinstance(risk, LinearChurnModel):
            assert risk.coef[FEATURE_NAMES.index(name)] == 0.0
    x = X[0].copy()
    x[orders], x[FEATURE_NAMES.index("tenure_days")], x[FEATURE_NAMES.index("active_days")] = 400.0, 900.0, 300.0
    x[revenue] = 12.0
    for model in (ew, risk):
        moved, same = model.explain(x), model.explain(X[0])
        assert moved[:2] == pytest.approx(same[:2], abs=1e-12)   # the same risk and baseline
        for name in churn_trainer.HISTORY_COUNTS:
            assert moved[2][FEATURE_NAMES.index(name)] == pytest.approx(0.0, abs=1e-12)   # no contribution


def test_the_book_tells_which_labelled_rows_were_still_there():
    """`still_here`: active within H after the snapshot (the first label window), per labelled row."""
    book = SnapshotBook(horizon_days=2)
    states = {c: CustomerState(customer_id=c, n=1) for c in ("a", "b", "c")}
    for d in range(6):
        for c, s in states.items():
            active = c == "a" or (c == "c" and d == 1)   # a daily; c once the day after the first snapshot; b never
            if active:
                s.day_mask = ((s.day_mask << (100 + d - (s.last_day or 100 + d))) | 1) & ((1 << 64) - 1)
                s.last_day, s.first_day = 100 + d, s.first_day or 100 + d
        book.label_due((100 + d) * DAY, states.get)
        book.add((100 + d) * DAY, [(c, [float(d)], 0.5) for c in states])
    X, y, t, _ = book.training_data()
    here = book.still_here()
    rows = {(float(x[0]), cid): (bool(h), bool(lab)) for x, h, lab, cid in
            zip(X, here, y, [c for s in book.labelled for c in s.customer_ids])}
    assert rows[(0.0, "a")] == (True, False)     # there, and still coming
    assert rows[(0.0, "c")] == (True, True)      # there (came on day 1), then gone: left within H
    assert (0.0, "b") not in rows or rows[(0.0, "b")] == (False, True)


def test_snapshot_sample_is_deterministic_and_bounded():
    rows = [(f"c{i}", [float(i)], 0.1) for i in range(50)]
    a = SnapshotBook(30, max_per_snapshot=10).add(DAY, rows)
    b = SnapshotBook(30, max_per_snapshot=10).add(DAY, list(reversed(rows)))
    assert a.customer_ids == b.customer_ids and len(a.customer_ids) == 10
    assert a.customer_ids == sorted(a.customer_ids)
    # the customers a caller may compute alone (the worker's tick): exactly those `add` keeps
    ids = [r[0] for r in rows]
    assert SnapshotBook(30, max_per_snapshot=10).sampled(DAY, list(reversed(ids))) == a.customer_ids
    assert a.customer_ids == sorted(sorted(ids, key=lambda c: (sample_key(c, DAY), c))[:10])   # the smallest keys
    assert SnapshotBook(30, max_per_snapshot=100).sampled(DAY, list(reversed(ids))) == sorted(ids)


def test_a_horizon_the_bitmap_cannot_label_is_refused_with_the_setting_to_fix():
    from pydantic import ValidationError

    from pipeline.domain.churn_snapshots import HorizonTooLong

    assert SnapshotBook(64).horizon_days == 64
    with pytest.raises(HorizonTooLong, match="CXPULSE_CHURN_HORIZON_DAYS"):
        SnapshotBook(90)
    with pytest.raises(HorizonTooLong):
        ChurnLearner(90)
    with pytest.raises(ValidationError, match="at most 64 days"):
        Settings(learn_churn=True, churn_horizon_days=90)
    assert Settings(churn_horizon_days=90).churn_horizon_days == 90   # the hand-set model serves any horizon


@pytest.mark.parametrize("serving", ["hand-set", "learned"])
def test_the_sweep_observes_only_the_sample_and_gives_the_snapshot_the_worker_takes(serving):
    """A replay tick (the sweep views every customer) and the worker's tick (`snapshot`:
    only the sample) store the same rows; the sweep computes features for the sample only,
    and reuses those the learned model computed to score a customer."""
    from pipeline.service.replay import replay

    evs = [order(customer=f"c{i % 40}", when=at(hours=i * 5.3)) for i in range(400)]
    evs += [complaint(customer=f"c{i % 9}", when=at(hours=13 + 31 * i)) for i in range(30)]
    evs.sort(key=lambda e: e["occurred_at"])
    states = replay([raw(e) for e in evs], build_core(Settings()), clock=lambda: T0 + 400 * DAY).states
    now = (int(max(s.wm for s in states.values()) // DAY) + 1) * DAY
    core = build_core(Settings())
    if serving == "learned":
        trained, _ = _learner_with(rows=6000, leavers=400)
        core.churn_model = trained.fit(30 * DAY, trained.training_set(30 * DAY))
    by_sweep = ChurnLearner(30, book=SnapshotBook(30, max_per_snapshot=12))
    by_sweep.begin_tick(now, states, core)
    computed = []
    import pipeline.service.churn_learning as learning
    real = learning.churn_features
    learning.churn_features = lambda *a: computed.append(a[0].customer_id) or real(*a)
    try:
        core.sweep(states.values(), now, observe=by_sweep.observe)
    finally:
        learning.churn_features = real
    assert len(states) == 40 and len(by_sweep._rows) == 12
    # features computed by the learner: the sample's only, none when the learned model computed them
    assert sorted(computed) == ([] if serving == "learned" else by_sweep._keep)
    by_sweep.close_tick(now)
    by_tick = ChurnLearner(30, book=SnapshotBook(30, max_per_snapshot=12))
    by_tick.snapshot(now, states, core)
    a, b = by_sweep.book.pending[0], by_tick.book.pending[0]
    assert a.customer_ids == b.customer_ids and len(a.customer_ids) == 12
    assert np.array_equal(a.features, b.features, equal_nan=True)
    assert np.array_equal(a.reference, b.reference)


def test_replay_snapshot_features_do_not_see_events_after_the_tick():
    """The features snapshot at a tick equal those of a replay cut at that tick: later
    events (even ones that arrive before the tick runs, within the lateness bound) are
    held back."""
    from pipeline.service.replay import replay

    settings = Settings(lateness_seconds=3600)
    evs = [order(customer=f"c{i % 7}", when=at(hours=i * 8.9)) for i in range(60)]
    evs += [touchpoint(customer=f"c{i % 5}", when=at(hours=15 - 1 / 6 + 24 * i)) for i in range(20)]  # near midnight
    evs.sort(key=lambda e: e["occurred_at"])
    values = _shuffled_within([raw(e) for e in evs], 1200, 0.0, seed=2)
    learner = ChurnLearner(horizon_days=30, retrain_every=10**9)
    replay(values, build_core(settings), clock=lambda: T0 + 400 * DAY, learner=learner)
    snap = learner.book.pending[5]
    cut = replay([raw(e) for e in evs if datetime.fromisoformat(e["occurred_at"]).timestamp() <= snap.t],
                 build_core(settings), clock=lambda: T0 + 400 * DAY)
    assert cut.applied > 0
    rows = dict(zip(snap.customer_ids, snap.features.tolist()))
    core = build_core(settings)
    for cid, state in cut.states.items():
        p = profile(state, snap.t, core.params, POP)
        expected = np.array(churn_features(state, p, POP), dtype=np.float32)
        got = np.array(rows[cid], dtype=np.float32)
        same = (expected == got) | (np.isnan(expected) & np.isnan(got))
        # the population parameters of the two replays are the same prior at this size
        assert same.all(), [n for n, ok in zip(FEATURE_NAMES, same) if not ok]
    assert sorted(cut.states) == snap.customer_ids


# ----------------------------------------------------------------------------- trainer

def synthetic(n_per_t: int = 300, instants: int = 20, seed: int = 1, drift: float = 0.0):
    """Rows whose churn depends on two features (quiet_logit up, basket down; basket has no
    sign prior), the base rate rising by `drift` in log-odds over time."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_per_t * instants, len(FEATURE_NAMES)))
    t = np.repeat(np.arange(instants) * DAY, n_per_t).astype(float)
    i_q, i_b = FEATURE_NAMES.index("quiet_logit"), FEATURE_NAMES.index("basket")
    z = -1.5 + 1.6 * X[:, i_q] - 0.8 * X[:, i_b] + drift * t / t.max()
    y = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    return X.astype(np.float32), y, t


def test_time_split_keeps_the_latest_instants_for_validation():
    t = np.repeat(np.arange(20.0), 3)
    tr, cal, val = time_split(t)
    assert t[tr].max() < t[cal].min() and t[cal].max() < t[val].min()
    assert set(np.unique(t[val])) == {17.0, 18.0, 19.0}
    with pytest.raises(ValueError):
        time_split(np.array([1.0, 1.0, 2.0]))


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_trainer_learns_the_signal_and_explains_exactly(kind):
    X, y, t = synthetic()
    m = train(X, y, t, version="v1", trained_at=t.max(), kind=kind)
    assert m.card.auc_validation > 0.8
    assert m.card.rows_train + m.card.rows_calibration + m.card.rows_validation == len(y)
    risk, base, contrib = m.explain(X[0].tolist())
    assert risk == pytest.approx(float(m.predict(X[:1])[0]), abs=1e-9)
    logit = lambda p: math.log(p / (1 - p))
    assert logit(risk) == pytest.approx(logit(base) + sum(contrib), abs=1e-6)
    # the factors' sums and the customer's own baseline (the features with no sign prior)
    # account for every contribution
    by_factor = factor_contributions(contrib)
    own = customer_baseline(contrib, base)
    assert sum(by_factor.values()) + logit(own) - logit(base) == pytest.approx(sum(contrib), abs=1e-6)
    # the planted features carry the largest weight
    i_q = FEATURE_NAMES.index("quiet_logit")
    top = np.argsort(-np.abs(m.contributions(X[:300])[0]).mean(axis=0))[:2]
    assert i_q in top


def test_every_feature_carries_the_sign_prior_of_its_meaning():
    assert len(FEATURE_DIRECTION) == len(FEATURE_NAMES) and set(FEATURE_DIRECTION) <= {-1, 0, 1}
    direction = dict(zip(FEATURE_NAMES, FEATURE_DIRECTION))
    # silence against any rhythm, and every unit of the hand-set model, never lower the risk
    for name in ("quiet_logit", "gone_logit", "silence_days", "silence_vs_own_gap", "silence_vs_population_gap",
                 "purchase_gap_open", "failed_recovery", "failed_recovery_count", "open_past_sla"):
        assert direction[name] == 1, name
    for f in FEATURES:
        if f.meaning.startswith("unit:"):
            assert f.direction == 1, f.name
    # recent activity and experience levels never raise it; volume, tenure and value have no prior
    assert direction["recent_active_vs_usual"] == direction["cxi"] == direction["nps"] == -1
    assert direction["orders"] == direction["tenure_days"] == direction["basket"] == 0


def _collinear_silence(seed: int = 2, n_per_t: int = 300, instants: int = 20):
    """Rows where the past says little about silence: two collinear silence features whose
    best unconstrained weights have opposite signs (quiet_logit up, gone_logit down), as a
    history whose long silences mostly came back teaches a free fit (docs/evaluation.md)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_per_t * instants, len(FEATURE_NAMES)))
    t = np.repeat(np.arange(instants) * DAY, n_per_t).astype(float)
    i_q, i_g, i_b = (FEATURE_NAMES.index(n) for n in ("quiet_logit", "gone_logit", "basket"))
    X[:, i_g] = 0.9 * X[:, i_q] + 0.45 * X[:, i_g]
    z = -1.5 + 1.6 * X[:, i_q] - 1.4 * X[:, i_g] - 0.8 * X[:, i_b]
    y = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    return X.astype(np.float32), y, t


def _moved(X: np.ndarray, by: float) -> np.ndarray:
    """Each feature moved `by` standard units in the direction its prior says raises the risk."""
    return X + by * np.asarray(FEATURE_DIRECTION, dtype=np.float32) * X.std(axis=0)


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_learned_risk_never_falls_with_more_silence_or_incidents(kind):
    """The domain's sign prior holds for a learned model whatever the history: longer
    silence, more incidents, worse experience never lower the risk — also far outside the
    range the history held (the default generator's leavers, silent for weeks at the end,
    were scored below its stayers by a free fit with a negative gone_logit weight)."""
    X, y, t = _collinear_silence()
    m = train(X, y, t, version="v", trained_at=t.max(), kind=kind)
    rows = X[:500]
    base = m.predict(rows)
    for by in (0.5, 3.0, 10.0):
        assert np.all(m.predict(_moved(rows, by)) >= base - 1e-12), by
    # one feature at a time, far beyond the history: gone_logit alone
    i_g = FEATURE_NAMES.index("gone_logit")
    far = rows.copy()
    far[:, i_g] = X[:, i_g].max() + 10 * X[:, i_g].std()
    assert np.all(m.predict(far) >= base - 1e-12)
    if kind == "logistic":
        signs = np.asarray(FEATURE_DIRECTION)
        assert np.all(signs * m.coef >= 0)
        assert m.coef[FEATURE_NAMES.index("quiet_logit")] > 0   # the signal that agrees with the prior is kept


def test_bounded_logistic_without_priors_is_plain_l2_logistic_regression():
    """The bounded solver minimises sklearn's objective: with no prior it finds sklearn's
    solution; with the priors only the weights whose free sign contradicts them change."""
    from sklearn.linear_model import LogisticRegression

    X, y, _ = synthetic()
    m = churn_trainer._fit_logistic(X, y, "v", directions=[0] * len(FEATURE_NAMES))
    Z = m._z(X)   # standardised within the fitted range, as the fit saw them
    ref = LogisticRegression(C=churn_trainer.L2_C, max_iter=1000).fit(Z, y)
    assert m.coef == pytest.approx(ref.coef_[0], abs=2e-3)
    assert m.intercept == pytest.approx(float(ref.intercept_[0]), abs=2e-3)
    bounded = churn_trainer._fit_logistic(X, y, "v")
    signs = np.asarray(FEATURE_DIRECTION)
    assert np.all(signs * bounded.coef >= 0)
    # the planted signals agree with their priors (quiet_logit up; basket has none) and stay
    for name in ("quiet_logit", "basket"):
        i = FEATURE_NAMES.index(name)
        assert bounded.coef[i] == pytest.approx(m.coef[i], abs=0.05)


def test_a_linear_model_holds_each_feature_to_the_range_it_was_fitted_on():
    """A feature past the range of the training rows (a count that keeps growing, a change
    hundreds of standard deviations out) scores as the range's edge, as it does for trees:
    the range is the 0.1–99.9 % quantiles of the training values, the fit sees the values
    clipped to it, and the explanation stays exact."""
    X, y, t = synthetic()
    m = train(X, y, t, version="v", trained_at=t.max())
    i_q = FEATURE_NAMES.index("quiet_logit")
    tr = time_split(t)[0]
    assert m.low[i_q] == pytest.approx(np.quantile(X[tr][:, i_q].astype(np.float64), 0.001))
    assert m.high[i_q] == pytest.approx(np.quantile(X[tr][:, i_q].astype(np.float64), 0.999))
    counts = [FEATURE_NAMES.index(name) for name in churn_trainer.HISTORY_COUNTS]
    fitted = np.ones(len(FEATURE_NAMES), dtype=bool)
    fitted[counts] = False
    assert np.all(m.low[fitted] < m.high[fitted])
    assert np.all(m.low[counts] == 0.0) and np.all(m.high[counts] == 0.0)   # not fitted: held at 0
    row = X[0].copy()
    edge, far = row.copy(), row.copy()
    edge[i_q], far[i_q] = m.high[i_q], m.high[i_q] + 100.0
    assert m.predict(far[None, :])[0] == m.predict(edge[None, :])[0]
    inside = row.copy()
    inside[i_q] = m.high[i_q] - 0.5
    assert m.predict(inside[None, :])[0] < m.predict(edge[None, :])[0]   # within it, the value counts
    risk, base, contrib = m.explain(far.tolist())
    logit = lambda p: math.log(p / (1 - p))
    assert logit(risk) == pytest.approx(logit(base) + sum(contrib), abs=1e-9)
    # the fit sees the clipped values: three wild rows of quiet_logit change nothing, the model
    # is the one fitted on rows already clipped to the range
    wild = X[tr].copy()
    wild[:3, i_q] = 1e4
    fit = churn_trainer._fit_logistic(wild, y[tr], "a")
    assert fit.high[i_q] < 10
    again = churn_trainer._fit_logistic(np.clip(wild, fit.low, fit.high).astype(np.float32), y[tr], "b")
    assert again.coef == pytest.approx(fit.coef, abs=1e-3)
    assert fit.coef[i_q] == pytest.approx(m.coef[i_q], rel=0.1)


def test_calibration_improves_brier_on_held_out_rows():
    """The base rate drifts up over time: the model fitted on the older rows under-states
    the later ones, Platt scaling on the recent calibration part corrects it."""
    X, y, t = synthetic(drift=2.5, seed=3)
    card = train(X, y, t, version="v", trained_at=t.max()).card
    assert card.brier_validation < card.brier_uncalibrated
    assert card.brier_validation < card.brier_base_rate


def test_the_served_model_is_recalibrated_on_the_latest_rows():
    """The base rate keeps drifting up: Platt's numbers from the calibration part under-state
    the latest rows, those refitted on the latest part (the validation part, nearest the
    future) do not. The card keeps the held-out figures of the calibration before; ranking and
    exact explanations are unchanged (Platt is monotone and affine in the log-odds). With too
    few rows of a class in the latest part the calibration part's fit serves."""
    X, y, t = synthetic(drift=2.5, seed=3)
    m = train(X, y, t, version="v", trained_at=t.max())
    tr, cal, val = time_split(t)
    held = churn_trainer.fit_platt(m.raw(X[cal]), y[cal])
    assert m.platt == churn_trainer.fit_platt(m.raw(X[val]), y[val]) and m.platt != held
    served, before = m.predict(X[val]), churn_trainer.calibrated(held, m.raw(X[val]))
    assert before.mean() < y[val].mean() - 0.02                        # the drift: the older fit under-states
    assert abs(served.mean() - y[val].mean()) < 0.01
    assert m.card.brier_validation == pytest.approx(float(np.mean((before - y[val]) ** 2)), abs=1e-5)
    risk, baseline, contributions = m.explain(X[val][0])
    assert risk == pytest.approx(served[0]) and math.log(baseline / (1 - baseline)) + sum(contributions) == pytest.approx(
        math.log(served[0] / (1 - served[0])))
    y_few = y.copy()
    y_few[np.flatnonzero(val & y)[churn_trainer.MIN_CALIBRATION_ROWS - 1:]] = False   # 29 positives left there
    few = train(X, y_few, t, version="v", trained_at=t.max())
    assert few.platt == churn_trainer.fit_platt(few.raw(X[cal]), y_few[cal])


def test_recency_half_life_is_chosen_on_the_latest_rows_when_the_drivers_change():
    """The driver changes half-way (quiet_logit first, then basket): a model weighting recent
    rows ranks the latest rows better, and the trainer picks it on its validation part."""
    rng = np.random.default_rng(5)
    n_per_t, instants = 400, 60
    X = rng.normal(size=(n_per_t * instants, len(FEATURE_NAMES))).astype(np.float32)
    t = np.repeat(np.arange(instants) * DAY, n_per_t).astype(float)
    i_q, i_b = FEATURE_NAMES.index("quiet_logit"), FEATURE_NAMES.index("basket")
    late = t >= 30 * DAY
    z = -1.5 + np.where(late, 1.6 * X[:, i_b], 1.6 * X[:, i_q])
    y = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    card = train(X, y, t, version="v", trained_at=t.max(), horizon_days=30).card
    assert set(card.selection) == {"none", "30", "15", "7.5"}
    assert card.half_life_days is not None
    chosen = card.selection[f"{card.half_life_days:g}"]
    assert chosen == max(v for v in card.selection.values() if v is not None)
    assert chosen > card.selection["none"] + 0.02



def test_lightgbm_candidates_reuse_one_binned_dataset_and_fit_as_a_fresh_one_would():
    import lightgbm as lgb

    X, y, t = synthetic(n_per_t=150, instants=20)
    rng = np.random.default_rng(4)
    weights = [None, rng.random(len(y)), None, recency_weights(t, 7.5)]   # "none" again after a weighted fit
    fit = churn_trainer._lightgbm_fitter(X, y)
    for w in weights:
        fresh = lgb.train(churn_trainer.LGBM_PARAMS, lgb.Dataset(X.astype(np.float64), label=y.astype(np.float64), weight=w,
                                                                 feature_name=list(FEATURE_NAMES)),
                          num_boost_round=churn_trainer.LGBM_ROUNDS)
        assert np.array_equal(fit("v", w).raw(X), fresh.predict(X.astype(np.float64), raw_score=True))


def test_logistic_candidates_start_from_the_last_solution_and_reach_a_fresh_fits_optimum(monkeypatch):
    """The recency candidates share one standardisation and each starts L-BFGS-B where the
    previous fit ended: the same optimum as a fit from zero (the objective is strictly
    convex), in fewer iterations."""
    from scipy import optimize

    X, y, t = synthetic(n_per_t=150, instants=20)
    rng = np.random.default_rng(4)
    weights = [None, recency_weights(t, 15.0), rng.random(len(y)), recency_weights(t, 7.5)]
    calls: list[tuple[np.ndarray, int]] = []
    minimize = optimize.minimize

    def counted(fun, x0, *args, **kwargs):
        result = minimize(fun, x0, *args, **kwargs)
        calls.append((np.array(x0), result.nit))
        return result

    monkeypatch.setattr(optimize, "minimize", counted)
    fit = churn_trainer._logistic_fitter(X, y)
    warm = [fit("v", w) for w in weights]
    warm_calls, calls[:] = list(calls), []
    fresh = [churn_trainer._fit_logistic(X, y, "v", w) for w in weights]
    for a, b in zip(warm, fresh):
        assert np.array_equal(a.mean, b.mean) and np.array_equal(a.scale, b.scale)
        assert np.abs(a.predict(X) - b.predict(X)).max() < 1e-3
        assert a.coef == pytest.approx(b.coef, abs=0.02)
    assert not warm_calls[0][0].any()                   # the first from zero, as a fresh fit
    for (start, _), model in zip(warm_calls[1:], warm):  # then each from the fit before it
        assert np.array_equal(start, np.append(model.coef, model.intercept))
    assert sum(n for _, n in warm_calls[1:]) < sum(n for _, n in calls[1:])


def test_logistic_selects_on_a_subsample_and_refits_the_winner_on_every_row_from_its_solution(monkeypatch):
    """Above SELECTION_MAX_ROWS training rows the candidates are fitted on a strided
    subsample; the winner is refitted on every training row starting from its own solution,
    and reaches the optimum a fit from zero on those rows reaches."""
    X, y, t = synthetic(n_per_t=200, instants=20)
    monkeypatch.setattr(churn_trainer, "SELECTION_MAX_ROWS", 1_000)
    starts: list[tuple[int, np.ndarray | None]] = []
    fitter = churn_trainer._logistic_fitter

    def recorded(X_, y_, directions=FEATURE_DIRECTION, start=None):
        starts.append((len(y_), None if start is None else np.array(start)))
        return fitter(X_, y_, directions, start)

    monkeypatch.setattr(churn_trainer, "_logistic_fitter", recorded)
    model = churn_trainer.train(X, y, t, version="v", trained_at=float(t.max()))
    tr, _, _ = churn_trainer.time_split(t)
    (sub_rows, sub_start), (all_rows, all_start) = starts[0], starts[-1]
    assert sub_start is None and sub_rows < 1_000 * 1.01 and all_rows == int(tr.sum())
    assert all_start is not None and all_start.any()
    rows = np.flatnonzero(tr)
    half_life = model.card.half_life_days
    fresh = fitter(churn_trainer.without_history_counts(X[rows]), y[rows])("v", recency_weights(t[rows], half_life))
    assert np.abs(model.raw(X) - fresh.raw(X)).max() < 5e-3


def test_training_runs_its_linear_algebra_on_one_thread(monkeypatch):
    """Every BLAS loaded, scipy's own included (it is imported before the limit is set), is
    held to one thread while a model trains, and given back its setting after."""
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> dict[str, int]:
        return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen: list[dict[str, int]] = []
    inner = churn_trainer._train

    def watched(*args, **kwargs):
        seen.append(blas_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(churn_trainer, "_train", watched)
    X, y, t = synthetic(n_per_t=100, instants=12)
    with threadpool_limits(limits=2, user_api="blas"):   # as on a 2-core machine, whatever this one has
        before = blas_threads()
        assert before and set(before.values()) == {2}
        churn_trainer.train(X, y, t, version="v", trained_at=float(t.max()))
        after = blas_threads()
    assert seen == [{path: 1 for path in before}]
    assert after == before


def test_lightgbm_selects_on_a_subsample_and_fits_the_winner_on_at_most_the_row_cap(monkeypatch):
    """A large history: the candidates are fitted on a strided subsample, judged on a strided part
    of the validation rows, the winner refitted on at most LGBM_MAX_ROWS rows; the recency choice
    still finds the changed driver and the card counts every row."""
    monkeypatch.setattr(churn_trainer, "LGBM_SELECTION_ROWS", 3000)
    monkeypatch.setattr(churn_trainer, "LGBM_MAX_ROWS", 6000)
    monkeypatch.setattr(churn_trainer, "JUDGE_MAX_ROWS", 2000)
    fitted: list[int] = []
    real_fitter = churn_trainer._lightgbm_fitter
    monkeypatch.setattr(churn_trainer, "_lightgbm_fitter", lambda X, y: fitted.append(len(X)) or real_fitter(X, y))
    rng = np.random.default_rng(5)
    n_per_t, instants = 400, 60
    X = rng.normal(size=(n_per_t * instants, len(FEATURE_NAMES))).astype(np.float32)
    t = np.repeat(np.arange(instants) * DAY, n_per_t).astype(float)
    i_q, i_b = FEATURE_NAMES.index("quiet_logit"), FEATURE_NAMES.index("basket")
    z = -1.5 + np.where(t >= 30 * DAY, 1.6 * X[:, i_b], 1.6 * X[:, i_q])
    y = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    m = train(X, y, t, version="v", trained_at=t.max(), horizon_days=30, kind="lightgbm")
    card = m.card
    assert card.rows_train + card.rows_calibration + card.rows_validation == len(y)
    assert 2500 < fitted[0] <= 3000 and 5000 < fitted[1] <= 6000 and len(fitted) == 2   # candidates' rows binned once
    assert card.half_life_days is not None
    assert card.selection[f"{card.half_life_days:g}"] > card.selection["none"] + 0.02
    assert card.auc_validation > 0.72   # the late driver learned (the unweighted candidate: ~0.63)

def test_recency_weights_halve_per_half_life_and_short_memories_need_enough_rows():
    t = np.array([0.0, 10.0, 20.0]) * DAY
    assert recency_weights(t, 10.0) == pytest.approx([0.25, 0.5, 1.0])
    assert recency_weights(t, None) is None
    # a small history: the weighted rows of a short half-life fall below the cold-start
    # minimum, so only the unweighted fit (and the longest memories) are tried
    X, y, t = synthetic(n_per_t=60, instants=20)
    card = train(X, y, t, version="v", trained_at=t.max(), horizon_days=30).card
    assert "none" in card.selection and "7.5" not in card.selection


def test_auc_noise_is_the_hanley_mcneil_standard_error():
    # at AUC 0.5 the formula reduces to sqrt((0.25 + (n1 + n2 − 2) / 12) / (n1 n2))
    assert auc_noise(0.5, 100, 400) == pytest.approx(math.sqrt((0.25 + 498 / 12) / 40000))
    assert auc_noise(0.75, 400, 1600) < auc_noise(0.75, 100, 400)
    assert auc_noise(0.75, 0, 10) == math.inf


def test_fit_platt_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    raw_ = rng.normal(size=20000) * 3
    y = rng.random(20000) < 1 / (1 + np.exp(-(0.5 * raw_ - 1.0)))
    a, b = fit_platt(raw_, y)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.08)



def test_standardise_in_slices_equals_the_whole_array_computation(monkeypatch):
    # the trainer standardises slice by slice (no full float64 copies); the result must be what
    # the one-shot computation gives: non-finite values imputed with the finite mean, a never-known
    # feature centred on 0, a constant one scaled by 1
    monkeypatch.setattr(churn_trainer, "ROW_SLICE", 7)   # many slices and a ragged last one
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(101, 5)) * [1.0, 300.0, 1e-3, 1.0, 1.0] + [0.0, 1e4, 2.0, 0.0, 0.0]).astype(np.float32)
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 3] = np.nan
    X[:, 4] = 7.0
    X[2, 0], X[5, 1] = np.inf, -np.inf
    Z, mean, scale = churn_trainer.standardise(X)
    X64 = np.where(np.isfinite(X), X.astype(np.float64), np.nan)
    expect_mean = np.array([np.nanmean(c) if np.isfinite(c).any() else 0.0 for c in X64.T])
    filled = np.where(np.isnan(X64), expect_mean, X64)
    expect_scale = filled.std(axis=0)
    expect_scale[3:] = 1.0
    assert mean == pytest.approx(expect_mean, rel=1e-12)
    assert scale == pytest.approx(expect_scale, rel=1e-12)
    assert Z.dtype == np.float64
    assert np.allclose(Z, (filled - expect_mean) / expect_scale, rtol=1e-12, atol=1e-12)
    assert Z[2, 0] == 0.0 and Z[5, 1] == 0.0 and not Z[:, 3].any() and not Z[:, 4].any()

# ----------------------------------------------------------------------------- drivers

def test_drivers_are_positive_factors_summing_to_the_lift():
    contrib = [0.0] * len(FEATURE_NAMES)
    contrib[FEATURE_NAMES.index("failed_recovery")] = 1.2
    contrib[FEATURE_NAMES.index("quiet_logit")] = 0.4
    contrib[FEATURE_NAMES.index("silence_days")] = -0.1      # same factor: nets to 0.3
    contrib[FEATURE_NAMES.index("cxi")] = -0.5               # a negative factor is no driver
    d = drivers_from(contrib, risk=0.6, baseline=0.2)
    assert [f for f, _ in d] == ["failed_recovery", "inactivity"]
    assert sum(c for _, c in d) == pytest.approx(0.4)
    assert d[0][1] == pytest.approx(0.4 * 1.2 / 1.5)
    assert drivers_from(contrib, risk=0.1, baseline=0.2) == []
    # a feature with no sign prior (basket, revenue trend, tier) names no driver: it moves the
    # customer's own baseline, and the drivers share the risk above that
    assert FEATURE_DIRECTION[FEATURE_NAMES.index("basket")] == 0
    contrib[FEATURE_NAMES.index("basket")] = 2.0
    own = customer_baseline(contrib, 0.2)
    assert own == pytest.approx(1 / (1 + math.exp(-(math.log(0.2 / 0.8) + 2.0))))
    d = drivers_from(contrib, risk=0.75, baseline=0.2)
    assert "declining_spend" not in [f for f, _ in d]
    assert [f for f, _ in d] == ["failed_recovery", "inactivity"]
    assert sum(c for _, c in d) == pytest.approx(0.75 - own)
    contrib[FEATURE_NAMES.index("basket")] = -2.0              # and one below the average lowers it
    assert sum(c for _, c in drivers_from(contrib, risk=0.3, baseline=0.2)) == pytest.approx(
        0.3 - customer_baseline(contrib, 0.2))


def _three_failed_recoveries(customer: str = "c9") -> list[dict]:
    evs = [order(customer=customer, when=at(days=d)) for d in (0, 6, 12, 18)]
    for i in range(3):
        evs += [complaint(customer=customer, complaint_id=f"{customer}-k{i}", when=at(days=19 + i)),
                complaint(customer=customer, complaint_id=f"{customer}-k{i}", status="resolved", satisfied=False,
                          when=at(days=19 + i, hours=3))]
    return evs


def test_a_customer_with_three_failed_recoveries_gets_failed_recovery_first():
    """A model learned from a history in which failed recoveries preceded departures names
    failed_recovery first for a customer with three of them, and the drivers add up to
    the risk above the baseline. The history is real states (events through the core)."""
    rng = random.Random(5)
    rows, labels, times = [], [], []
    for k in range(900):
        cid = f"h{k}"
        evs = [order(customer=cid, when=at(days=d)) for d in range(0, rng.randint(8, 30), rng.randint(3, 8))]
        failed = rng.choice((0, 0, 0, 1, 2, 3))
        for i in range(failed + rng.randint(0, 2)):
            ok = i >= failed
            evs += [complaint(customer=cid, complaint_id=f"{cid}-k{i}", when=at(days=30 + i)),
                    complaint(customer=cid, complaint_id=f"{cid}-k{i}", status="resolved", satisfied=ok,
                              when=at(days=30 + i, hours=3))]
        st = state_of(evs)
        as_of = st.wm + rng.uniform(0.5, 10) * DAY
        rows.append(churn_features(st, profile(st, as_of, PARAMS, POP), POP))
        labels.append(rng.random() < 1 / (1 + math.exp(-(-2.0 + 1.2 * failed))))
        times.append(float(k % 20) * DAY)
    X, y, t = np.array(rows, dtype=np.float32), np.array(labels), np.array(times)
    model = train(X, y, t, version="lr-test", trained_at=t.max())
    s = state_of(_three_failed_recoveries())
    p = learned_profile(s, profile(s, s.wm + DAY, PARAMS, POP), model, POP)
    assert p.churn.model_version == "lr-test"
    assert p.churn.drivers[0][0] == "failed_recovery"
    risk, base, _ = model.explain(churn_features(s, profile(s, s.wm + DAY, PARAMS, POP), POP))
    assert p.churn.risk == pytest.approx(risk)
    contributions = model.explain(churn_features(s, profile(s, s.wm + DAY, PARAMS, POP), POP))[2]
    assert sum(c for _, c in p.churn.drivers) == pytest.approx(risk - customer_baseline(contributions, base),
                                                               abs=0.006 * len(p.churn.drivers))
    # the evidence changes, the drivers change: the same customer without the complaints
    quiet = state_of([e for e in _three_failed_recoveries() if e["type"] == "order"])
    pq = learned_profile(quiet, profile(quiet, quiet.wm + DAY, PARAMS, POP), model, POP)
    assert "failed_recovery" not in [f for f, _ in pq.churn.drivers]
    record = score_record(s, p)
    assert record["churn_model"] == "lr-test"
    ScoreRecord.model_validate({**record, "version": 1})
    # served as the early-warning model, it names early_warning's drivers by the same rule
    # (early_warning_drivers), whichever model scores churn_risk (here the hand-set one)
    pe = learned_profile(s, profile(s, s.wm + DAY, PARAMS, POP), None, POP, early_warning=model)
    assert pe.churn.model_version is None and pe.early_warning is not None
    assert pe.early_warning.risk == pytest.approx(risk) and pe.early_warning.drivers == p.churn.drivers
    pqe = learned_profile(quiet, profile(quiet, quiet.wm + DAY, PARAMS, POP), None, POP, early_warning=model)
    assert pqe.early_warning is not None and "failed_recovery" not in [f for f, _ in pqe.early_warning.drivers]
    ew_record = score_record(s, pe)
    assert ew_record["early_warning"] == round(risk, 4)
    assert [d["factor"] for d in ew_record["early_warning_drivers"]][0] == "failed_recovery"
    assert ew_record["churn_drivers"] == score_record(s, profile(s, s.wm + DAY, PARAMS, POP))["churn_drivers"]
    ScoreRecord.model_validate({**ew_record, "version": 1})
    # no early-warning model: null and no drivers
    assert record["early_warning"] is None and record["early_warning_drivers"] == []


# ----------------------------------------------------------------------------- cold start, handover

def _learner_with(rows: int, leavers: int, seed: int = 1) -> tuple[ChurnLearner, Core]:
    X, y, t = synthetic(n_per_t=rows // 20, seed=seed)
    book = SnapshotBook(30)
    ids = [f"c{i % max(1, leavers)}" for i in range(len(y))]
    per_t = rows // 20
    for k in range(20):
        sl = slice(k * per_t, (k + 1) * per_t)
        from pipeline.domain.churn_snapshots import Snapshot
        book.labelled.append(Snapshot(float(t[sl][0]), ids[sl], X[sl], np.full(per_t, 0.2, np.float32), y[sl]))
    return ChurnLearner(30, book=book), build_core(Settings())


def test_cold_start_serves_the_hand_set_model_below_the_minimum():
    learner, core = _learner_with(rows=300, leavers=10)
    pos, neg, leavers = learner.book.counts()
    assert not enough_history(pos, neg, leavers)
    assert learner.retrain(30 * DAY, core) is None
    assert core.churn_model is None
    out = BatchResult()
    s = state_of([order(customer="c1")])
    core.publish(s, s.wm, out, force=True)
    assert out.scores[0]["churn_model"] is None


def test_switch_above_the_minimum_and_version_handover():
    from prometheus_client import CollectorRegistry

    from pipeline.adapters.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), topics=())
    switches = []
    learner, core = _learner_with(rows=6000, leavers=400)
    learner.on_switch = lambda card: (switches.append(card), metrics.churn_model(card))
    assert metrics.registry.get_sample_value("cxpulse_churn_model_trained") == 0
    pos, neg, leavers = learner.book.counts()
    assert enough_history(pos, neg, leavers)
    card = learner.retrain(30 * DAY, core)
    assert card is not None and core.churn_model is not None
    assert core.churn_model.version == card.version == "lr-1970-01-31T0000"
    assert switches == [card]
    assert metrics.registry.get_sample_value("cxpulse_churn_model_trained") == 1
    assert metrics.registry.get_sample_value("cxpulse_churn_model_validation_auc") == card.auc_validation
    out = BatchResult()
    s = state_of([order(customer="c1")])
    core.publish(s, s.wm, out, force=True)
    assert out.scores[0]["churn_model"] == card.version
    # a later retraining replaces it with a new version
    card2 = learner.retrain(37 * DAY, core)
    assert core.churn_model.version == card2.version != card.version
    assert [c.version for c in switches] == [card.version, card2.version]


def test_the_learner_serves_the_early_warning_trained_with_each_model_and_says_why_none(caplog):
    """At each training the early warning trained with the model serves, or none does: a
    warning serving before is withdrawn, and the log and `cxpulse evaluate`'s summary say why
    (the `withheld` of `train_early_warning`)."""
    import logging
    from types import SimpleNamespace

    from pipeline.tools.evaluate import _model_summary

    learner, core = _learner_with(rows=6000, leavers=400)
    X, y, t = synthetic()
    model = train(X, y, t, version="lr-a", trained_at=t.max())
    model.early_warning = train(X, y, t, version="ew-a", trained_at=t.max())
    caplog.set_level(logging.INFO, logger="cxpulse.churn_model")
    learner.adopt(model, core)
    assert core.early_warning is model.early_warning and learner.early_warning == model.early_warning.card
    assert _model_summary(SimpleNamespace(learner=learner))["early_warning"]["version"] == "ew-a"
    later = train(X, y, t, version="lr-b", trained_at=t.max())
    later.early_warning_withheld = "validation AUC 0.4996, not above chance (24050 rows of customers still there)"
    learner.adopt(later, core)
    assert core.early_warning is None and learner.early_warning is None
    assert _model_summary(SimpleNamespace(learner=learner))["early_warning"] == {"withheld": later.early_warning_withheld}
    assert "early warning: none -> ew-a" in caplog.text
    assert ("early warning: ew-a -> none: validation AUC 0.4996, not above chance (24050 rows of customers still "
            "there)") in caplog.text
    # the worker's gauges (set as it installs the published model): none serving has no AUC, not the last one's
    from prometheus_client import CollectorRegistry

    from pipeline.adapters.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), topics=())
    metrics.churn_early_warning(model.early_warning.card)
    assert metrics.registry.get_sample_value("cxpulse_churn_early_warning_trained") == 1
    assert metrics.registry.get_sample_value("cxpulse_churn_early_warning_validation_auc") == \
        model.early_warning.card.auc_validation
    metrics.churn_early_warning(None)
    assert metrics.registry.get_sample_value("cxpulse_churn_early_warning_trained") == 0
    assert math.isnan(metrics.registry.get_sample_value("cxpulse_churn_early_warning_validation_auc"))


def test_a_model_worse_than_the_serving_one_is_not_served():
    X, y, t = synthetic()
    perfect_reference = y.astype(np.float32)       # the serving model was right every time
    card = train(X, y, t, version="v", trained_at=t.max(), reference=perfect_reference).card
    assert card.brier_reference == 0.0
    assert not better_than_reference(card)
    # better calibrated but ranking worse than the serving model: not served either
    rng = np.random.default_rng(2)
    sharp = np.where(y, 0.9, 0.6).astype(np.float32)             # ranks perfectly, calibrated badly
    card = train(X, y, t, version="v", trained_at=t.max(), reference=sharp).card
    assert card.brier_validation < card.brier_reference and card.auc_validation < card.auc_reference
    assert not better_than_reference(card)


def _per_instant(card, y, t):
    """(positive, negative) still-active validation rows per validation instant."""
    _, _, val = time_split(t)
    act = np.arange(len(y)) % 3 != 0
    instants = len(np.unique(t[val]))
    return (y[val & act].sum() / instants, (~y[val & act]).sum() / instants)


def test_handover_judges_the_ranking_of_the_customers_still_active():
    """The AUC compared is the one among rows whose customer was active within the last H
    days (silence_days below log(1 + H)); the all-rows AUC only when those lack a class."""
    from dataclasses import replace

    X, y, t = synthetic()
    j = FEATURE_NAMES.index("silence_days")
    X = X.copy()
    X[:, j] = np.where(np.arange(len(y)) % 3 == 0, math.log1p(60.0), math.log1p(2.0))   # a third silent 60 days
    ref = np.full(len(y), 0.2, np.float32)
    card = train(X, y, t, version="v", trained_at=t.max(), reference=ref, horizon_days=30).card
    _, _, val = time_split(t)
    assert card.rows_validation_active == int((val & (np.arange(len(y)) % 3 != 0)).sum())
    assert card.auc_validation_active is not None and card.auc_reference_active == 0.5
    # better on all rows, worse on the still-active ones: not served; and the other way round: served
    loses = replace(card, auc_validation=0.9, auc_reference=0.8, auc_validation_active=0.6,
                    auc_reference_active=0.7, brier_validation=0.1, brier_reference=0.2)
    assert not better_than_reference(loses)
    assert better_than_reference(replace(loses, auc_validation=0.7, auc_validation_active=0.8))
    # no still-active ranking to judge: the all-rows AUC decides
    assert better_than_reference(replace(loses, auc_validation_active=None))
    # a shortfall within the noise of the still-active AUC does not hand back; beyond it does
    close = replace(loses, auc_validation_active=0.69, auc_tolerance=0.02)
    assert better_than_reference(close)
    assert not better_than_reference(replace(close, auc_validation_active=0.67))
    assert card.auc_tolerance == pytest.approx(round(auc_noise(card.auc_validation_active, *_per_instant(card, y, t)), 4))


# ----------------------------------------------------------------------------- arrival order

def _shuffled_within(values: list[bytes], seconds: float, dup_share: float, seed: int) -> list[bytes]:
    """Each event moved by up to `seconds` of event time, `dup_share` of them sent twice."""
    import orjson

    rng = random.Random(seed)
    keyed = []
    for i, v in enumerate(values):
        try:
            ts = datetime.fromisoformat(orjson.loads(v)["occurred_at"]).timestamp()
        except Exception:
            ts = None
        key = (ts if ts is not None else 0.0) + rng.uniform(0, seconds)
        keyed.append((key, i, v))
        if rng.random() < dup_share:
            keyed.append((key + rng.uniform(0, seconds), i, v))
    keyed.sort()
    return [v for _, _, v in keyed]


def test_fit_and_scores_do_not_depend_on_arrival_order_within_the_lateness_bound(monkeypatch):
    """Shuffled within 20 minutes (lateness bound 1 hour) with 5 % duplicated: the same
    population parameters, the same learned model and the same scores."""
    from pipeline.tools.generator import generate
    from pipeline.service.replay import replay

    monkeypatch.setattr(churn_trainer, "MIN_POSITIVES", 100)
    monkeypatch.setattr(churn_trainer, "MIN_NEGATIVES", 100)
    monkeypatch.setattr(churn_trainer, "MIN_LEAVERS", 20)
    # every trained model serves, so the scores below come from learned models too
    monkeypatch.setattr("pipeline.service.churn_learning.better_than_reference", lambda card: True)
    settings = Settings(churn_horizon_days=20)   # labels known 40 days after a snapshot: 35 days of them
    end = datetime(2026, 6, 1, tzinfo=timezone.utc)
    stream = generate(customers=250, days=75, seed=3, end=end, invalid_ratio=0.0, duplicate_ratio=0.0)
    values = [r.value for r in stream.records]
    runs = []
    for order_seed in (None, 1):
        vs = values if order_seed is None else _shuffled_within(values, 1200, 0.05, order_seed)
        learner = ChurnLearner(settings.churn_horizon_days)
        core = build_core(settings)
        res = replay(vs, core, clock=lambda: T0 + 400 * DAY, as_of=end, learner=learner)
        runs.append((res, learner, core))
    (a, la, ca), (b, lb, cb) = runs
    assert b.duplicates > 0.03 * len(values)
    assert ca.population == cb.population
    assert la.cards and [c.to_dict() for c in la.cards] == [c.to_dict() for c in lb.cards]
    assert ca.churn_model is not None and ca.churn_model.version == cb.churn_model.version
    assert np.array_equal(ca.churn_model.coef, cb.churn_model.coef)
    strip = lambda s: {k: v for k, v in s.items() if k != "version"}
    assert {c: strip(s) for c, s in a.scores.items()} == {c: strip(s) for c, s in b.scores.items()}
    assert any(s["churn_model"] for s in a.scores.values())


def test_a_replay_without_the_sweep_scores_and_learns_the_same(monkeypatch):
    """`replay(sweep=False)` (what `cxpulse evaluate` runs: only the final scores count)
    leaves out the time-driven rules at the ticks, and with them their alerts, and nothing
    else: the same population, the same trained models and the same final scores, with the
    learned model and with the hand-set one."""
    from pipeline.tools.generator import generate
    from pipeline.service.replay import replay

    monkeypatch.setattr(churn_trainer, "MIN_POSITIVES", 100)
    monkeypatch.setattr(churn_trainer, "MIN_NEGATIVES", 100)
    monkeypatch.setattr(churn_trainer, "MIN_LEAVERS", 20)
    monkeypatch.setattr("pipeline.service.churn_learning.better_than_reference", lambda card: True)
    settings = Settings(churn_horizon_days=20)
    end = datetime(2026, 6, 1, tzinfo=timezone.utc)
    values = generate(customers=250, days=75, seed=4, end=end).values()
    strip = lambda s: {k: v for k, v in s.items() if k != "version"}   # the count of records published
    for learning in (True, False):
        runs = []
        for sweep in (True, False):
            learner = ChurnLearner(settings.churn_horizon_days) if learning else None
            core = build_core(settings)
            res = replay(values, core, clock=lambda: T0 + 400 * DAY, as_of=end, learner=learner, sweep=sweep)
            runs.append((res, learner, core))
        (a, la, ca), (b, lb, cb) = runs
        assert len(a.alerts) > len(b.alerts)   # the sweep's silence alerts are not made
        assert ca.population == cb.population
        assert {c: strip(s) for c, s in a.scores.items()} == {c: strip(s) for c, s in b.scores.items()}
        assert len(a.scores) > 200
        if learning:
            assert la is not None and lb is not None and la.cards
            assert [c.to_dict() for c in la.cards] == [c.to_dict() for c in lb.cards]
            assert ca.churn_model is not None and cb.churn_model is not None
            assert np.array_equal(ca.churn_model.coef, cb.churn_model.coef)
            assert any(s["churn_model"] for s in a.scores.values())


def test_drift_hands_scoring_back_to_the_hand_set_model():
    """A retraining whose model no longer beats the hand-set one on the latest rows hands
    scoring back to it (logged, reported to on_switch with None)."""
    switches = []
    learner, core = _learner_with(rows=6000, leavers=400)
    learner.on_switch = switches.append
    assert learner.retrain(30 * DAY, core) is not None and core.churn_model is not None
    for snap in learner.book.labelled:          # the hand-set model now knows every outcome
        snap.reference = snap.labels.astype(np.float32)
    card = learner.retrain(37 * DAY, core)
    assert card is not None and not better_than_reference(card)
    assert core.churn_model is None and learner.served is None
    assert switches[-1] is None
    out = BatchResult()
    s = state_of([order(customer="c1")])
    core.publish(s, s.wm, out, force=True)
    assert out.scores[0]["churn_model"] is None


class _SetWarning:
    """An early-warning model whose risk the test sets."""
    version = "ew-set"
    feature_names = FEATURE_NAMES

    def __init__(self, risk: float):
        self.risk = risk

    def explain(self, features):
        return self.risk, 0.05, [0.0] * len(FEATURE_NAMES)


def test_the_sweep_republishes_when_early_warning_alone_moves_by_a_step():
    """A subscriber reads early_warning from the latest record: between events the sweep
    publishes again when it moves by 0.05 (as churn_risk) or appears or goes, and not for less.
    (Before, only churn_risk, breaches, open complaints and alerts did: a warning that rose with
    a new model or fell as an incident aged stayed as first published.)"""
    settings = Settings()
    core = build_core(settings)
    warning = _SetWarning(0.20)
    core.early_warning = warning
    events = [order(customer="w1", when=at(days=d)) for d in (0, 5, 10)]
    recs = [RawRecord(settings.topic_for_type["order"], 0, i, b"w1", raw(e)) for i, e in enumerate(events)]
    out = core.process(recs, {}.get, received_at=RECEIVED_AT)
    state = out.states["w1"]
    assert [s["early_warning"] for s in out.scores] == [0.2]
    later = state.wm + 600.0    # ten minutes on: churn_risk and the alerts stay where they were

    def swept(risk: float | None) -> list:
        core.early_warning = warning if risk is not None else None
        if risk is not None:
            warning.risk = risk
        return [s["early_warning"] for s in core.sweep([state], later).scores]

    assert swept(0.24) == []             # less than a step
    assert swept(0.26) == [0.26]         # a step from the 0.20 published
    assert swept(0.22) == []             # less than a step from 0.26
    assert swept(0.20) == [0.2]
    assert swept(None) == [None]         # no early-warning model any more: the record says so
    assert swept(None) == []
    assert swept(0.21) == [0.21]         # one again
