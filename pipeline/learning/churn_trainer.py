"""Train, calibrate and validate the churn model on self-labelled snapshots.

Time-ordered split of the labelled snapshot instants: the oldest 70 % train the model,
the next 15 % calibrate it (Platt scaling of its log-odds), the latest 15 % validate it
(ROC AUC and Brier, beside the hand-set model's on the same rows). The latest part of the
history is held out because the model will score the future, not a random past. The model
then served is recalibrated on that latest part (when it holds MIN_CALIBRATION_ROWS of each
class): the rows nearest the future it will score. Its card keeps the held-out figures of the
calibration before, which the recalibration can only improve on those rows.

Two model kinds (measured in docs/evaluation.md, "The learned churn model"):
- "logistic" (served by default): L2-regularised logistic regression over standardised
  features (NaN → the training mean), each held to its fitted range (`fitted_range`). Exact
  additive explanations are weight × (value − mean); scoring one customer is one dot product
  (microseconds, no batching needed).
- "lightgbm": gradient-boosted trees; explanations by TreeSHAP (`pred_contrib=True`).
Both keep each feature's sign prior (`Feature.direction`, pipeline/domain/churn_features.py):
the logistic weights by L-BFGS-B bounds, the trees by LightGBM's `monotone_constraints`. A
history in which long silences came back (or incidents were collinear with engagement) would
otherwise teach a negative weight for a silence or incident feature, and the model would rank
customers silent for weeks below active ones (measured in docs/evaluation.md §7, "Sign prior").

Recency weighting, chosen on the stream's own history: a training row of age a days (before
the latest training instant) weighs 0.5 ** (a / half-life). The half-life is picked among
RECENCY_HALF_LIVES (multiples of the horizon H, and "none": every row alike; a half-life whose
weighted positive or negative rows fall below the cold-start minimum is not tried) by the ROC AUC
that each candidate, fitted on the training part, reaches on the validation part among the
customers still active at their snapshot — the ranking the product answers for. A stream whose
customers, mix or incident effects change over time favours a short memory; a stationary one
keeps the whole history (ties go to the longer memory). Measured in docs/evaluation.md §7.

Platt scaling is a monotone affine map of the log-odds, so the calibrated log-odds stay
the sum of the (scaled) contributions: explanations remain exact after calibration.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.domain.churn_features import FEATURE_DIRECTION, FEATURE_NAMES

TRAIN_SHARE, CALIBRATION_SHARE = 0.70, 0.15
# Cold start: the learned model may serve only once the labelled history holds this many
# positive and negative rows from this many distinct leavers. Why: the latest 15 % (the
# validation slice) must still hold enough positives (about 30) for its AUC and Brier to
# mean something (AUC standard error ≈ 0.05 at 30 positives), the training part needs
# several positives per feature (40 features), and a handful of leavers seen daily for
# weeks must not pass for many (each leaver contributes up to H / tick rows).
MIN_POSITIVES = 200
MIN_NEGATIVES = 200
MIN_LEAVERS = 50
# the latest part recalibrates the served model only with this many rows of each class: Platt's
# two numbers on fewer would be noise (the calibration part's fit serves instead)
MIN_CALIBRATION_ROWS = 30
L2_C = 1.0            # inverse regularisation strength of the logistic model (sklearn's default)
# candidate half-lives of the recency weight, in multiples of the horizon H (None: no weighting);
# longest memory first, so that a tie keeps more history
RECENCY_HALF_LIVES: tuple[float | None, ...] = (None, 1.0, 0.5, 0.25)
# above this many training rows the candidates are compared on an evenly strided subsample
# of them (the winner is then fitted on all): the choice costs at most a few such fits
SELECTION_MAX_ROWS = 400_000


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is: its version, data and validation figures."""
    version: str
    kind: str
    trained_at: float                 # event time of the training (epoch seconds)
    window: tuple[float, float]       # first and last labelled snapshot instant used
    rows_train: int
    rows_calibration: int
    rows_validation: int
    positives: int
    leavers: int
    auc_validation: float | None
    brier_validation: float | None
    brier_uncalibrated: float | None   # the same model before Platt scaling, same rows
    brier_base_rate: float | None      # predicting the validation rows' churn share
    auc_reference: float | None        # the hand-set model, same rows
    brier_reference: float | None
    # ranking of the customers still active at their snapshot (an active day within the last H
    # days): who of them will go is the question; those silent for H days already are ranked
    # high by any model and dominate the AUC of all rows
    rows_validation_active: int = 0
    auc_validation_active: float | None = None
    auc_reference_active: float | None = None
    # the recency weight's half-life chosen (days; None: unweighted) and every candidate's
    # validation AUC among the still-active rows, "none" / "<days>" → AUC
    half_life_days: float | None = None
    selection: dict[str, float | None] = field(default_factory=dict)
    # the noise of auc_validation_active (its standard error at the effective sample size,
    # `auc_noise`): the handover does not hand back for a shortfall within it
    auc_tolerance: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LinearChurnModel:
    """σ(a · (w · (x − μ) / σ + c) + b): logistic regression with Platt calibration."""
    version: str
    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    platt: tuple[float, float] = (1.0, 0.0)
    card: ModelCard | None = None
    # the early-warning model trained with it on the same history (`train_early_warning`), or
    # why there is none (`early_warning_withheld`; kept by the learner, not published)
    early_warning: "LinearChurnModel | None" = None
    early_warning_withheld: str | None = None
    # each feature's fitted range (`fitted_range`), in its own units: a value outside it scores
    # as the range's edge. None: unbounded (a model published before the range was kept)
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self._z(X) @ self.coef + self.intercept

    def _z(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        X = np.where(np.isnan(X), self.mean, X)
        if self.low is not None and self.high is not None:
            X = np.clip(X, self.low, self.high)
        return (X - self.mean) / self.scale

    def predict(self, X: np.ndarray) -> np.ndarray:
        return calibrated(self.platt, self.raw(X))

    def explain(self, features: Sequence[float]) -> tuple[float, float, list[float]]:
        a, b = self.platt
        contrib = a * self.coef * self._z(np.asarray(features, dtype=np.float64)[None, :])[0]
        base = a * self.intercept + b
        return float(_sigmoid(base + contrib.sum())), float(_sigmoid(base)), contrib.tolist()

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batch: (calibrated log-odds contributions (n, features), baseline log-odds (n,))."""
        a, b = self.platt
        contrib = a * self.coef * self._z(X)
        return contrib, np.full(len(contrib), a * self.intercept + b)


@dataclass
class TreeChurnModel:
    """LightGBM trees with Platt calibration; explanations by TreeSHAP."""
    version: str
    feature_names: tuple[str, ...]
    booster: Any   # lightgbm.Booster
    platt: tuple[float, float] = (1.0, 0.0)
    card: ModelCard | None = None
    early_warning: "LinearChurnModel | None" = None
    early_warning_withheld: str | None = None

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(np.asarray(X, dtype=np.float64), raw_score=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return calibrated(self.platt, self.raw(X))

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.platt
        out = self.booster.predict(np.asarray(X, dtype=np.float64), pred_contrib=True)
        return a * out[:, :-1], a * out[:, -1] + b

    def explain(self, features: Sequence[float]) -> tuple[float, float, list[float]]:
        contrib, base = self.contributions(np.asarray(features, dtype=np.float64)[None, :])
        return (float(_sigmoid(base[0] + contrib[0].sum())), float(_sigmoid(base[0])), contrib[0].tolist())


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


def calibrated(platt: tuple[float, float], raw: np.ndarray) -> np.ndarray:
    """Platt's map of a model's raw log-odds to probabilities: σ(a · raw + b)."""
    a, b = platt
    return _sigmoid(a * raw + b)


def time_split(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (train, calibration, validation) by snapshot instant: whole instants
    go to one part, the oldest to training."""
    instants = np.unique(t)
    n = len(instants)
    if n < 3:
        raise ValueError(f"need snapshots at three or more instants to split by time, got {n}")
    i_cal = min(n - 2, max(1, int(round(n * TRAIN_SHARE))))
    i_val = min(n - 1, max(i_cal + 1, int(round(n * (TRAIN_SHARE + CALIBRATION_SHARE)))))
    return t < instants[i_cal], (t >= instants[i_cal]) & (t < instants[i_val]), t >= instants[i_val]


def enough_history(positives: int, negatives: int, leavers: int) -> bool:
    return positives >= MIN_POSITIVES and negatives >= MIN_NEGATIVES and leavers >= MIN_LEAVERS


ROW_SLICE = 16_384   # rows per slice in `standardise`: a float64 slice of 52 features is ~7 MB


# A linear model's log-odds grow without limit with a feature, and a stream's features keep
# moving past what the model was fitted on: counts of the watched history grow, a change
# measured against a few weeks of scores meets values hundreds of standard deviations out.
# Each feature is therefore held to the range of its training values, as trees are by
# construction (constant past their outermost split): the 0.1 % and 99.9 % quantiles, so that a
# handful of extreme rows do not set it. Measured in docs/evaluation.md ("The early warning's
# live backtest"): the published warnings ran high on exactly such values.
RANGE_QUANTILES = (0.001, 0.999)
RANGE_SAMPLE_ROWS = 200_000   # the quantiles are taken on an evenly strided subsample of this many rows


def evenly_strided(rows: np.ndarray, at_most: int) -> np.ndarray:
    """Every k-th of `rows` (k the smallest stride that keeps at most `at_most`): the daily
    snapshots of one customer are near copies, so a stride keeps every customer."""
    return rows[::max(1, math.ceil(len(rows) / at_most))]


def fitted_range(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): per feature the RANGE_QUANTILES of its finite values in `X` (an evenly
    strided subsample above RANGE_SAMPLE_ROWS rows); (−inf, +inf) for a never-known feature."""
    sample = np.asarray(evenly_strided(X, RANGE_SAMPLE_ROWS), dtype=np.float64)
    sample = np.where(np.isfinite(sample), sample, np.nan)
    known = ~np.all(np.isnan(sample), axis=0)
    low, high = np.full(X.shape[1], -np.inf), np.full(X.shape[1], np.inf)
    if known.any():
        q = np.nanquantile(sample[:, known], RANGE_QUANTILES, axis=0)
        low[known], high[known] = q[0], q[1]
    return low, high


def standardise(X: np.ndarray, low: np.ndarray | None = None,
                high: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Z, mean, scale): per feature the mean of the finite values (0 for a never-known
    feature) and the standard deviation with every non-finite value set to that mean (1 for a
    constant feature); Z = (x − mean) / scale as float64, 0 where x is not finite. With `low`
    and `high`, every finite value is first clipped to [low, high] (`fitted_range`). Computed in
    float64 over slices of rows, so the only full-size array made is Z (measured in
    bench/churn_training.py: one float64 copy of 3 million rows costs seconds)."""
    n, k = X.shape

    def rows(i: int) -> np.ndarray:
        part = np.asarray(X[i:i + ROW_SLICE], dtype=np.float64)
        return part if low is None or high is None else np.clip(part, low, high)   # NaN stays NaN

    total, known = np.zeros(k), np.zeros(k)
    for i in range(0, n, ROW_SLICE):
        part = rows(i)
        finite = np.isfinite(part)
        total += np.where(finite, part, 0.0).sum(axis=0)
        known += finite.sum(axis=0)
    mean = np.where(known > 0, total / np.maximum(known, 1), 0.0)
    squares = np.zeros(k)
    for i in range(0, n, ROW_SLICE):
        part = rows(i)
        d = np.where(np.isfinite(part), part - mean, 0.0)
        squares += (d * d).sum(axis=0)
    scale = np.sqrt(squares / max(n, 1))
    scale = np.where(scale > 1e-9, scale, 1.0)
    Z = np.empty((n, k), dtype=np.float64)
    for i in range(0, n, ROW_SLICE):
        part = rows(i)
        np.divide(np.where(np.isfinite(part), part - mean, 0.0), scale, out=Z[i:i + ROW_SLICE])
    return Z, mean, scale


def _fit_logistic(X: np.ndarray, y: np.ndarray, version: str, weight: np.ndarray | None = None,
                  directions: Sequence[int] = FEATURE_DIRECTION) -> LinearChurnModel:
    """L2-regularised logistic regression (sklearn's objective: C · Σ w · log-loss + ½ ‖β‖²,
    the intercept unpenalised) whose weights keep the sign of the domain's prior
    (`Feature.direction`: ≥ 0 for +1, ≤ 0 for −1, free for 0), by L-BFGS-B with bounds. Each
    feature is held to its fitted range (`fitted_range`) in fitting and in scoring alike."""
    return _logistic_fitter(X, y, directions)(version, weight)


def _logistic_fitter(X: np.ndarray, y: np.ndarray, directions: Sequence[int] = FEATURE_DIRECTION,
                     start: np.ndarray | None = None) -> Callable[[str, np.ndarray | None], LinearChurnModel]:
    """`_fit_logistic` on fixed rows under varying weights (the recency candidates): the rows'
    range and standardisation are computed once, and each fit starts from the previous fit's
    solution (the first from `start`, weights then intercept, or from zero). The objective is
    strictly convex (the L2 term), so every start reaches the same optimum; a start near it
    takes L-BFGS-B a fraction of the iterations from zero (measured in docs/evaluation.md,
    "Training time on a year of history")."""
    from scipy.optimize import minimize

    low, high = fitted_range(X)
    Z, mean, scale = standardise(X, low, high)
    target = np.asarray(y, dtype=np.float64)
    k = Z.shape[1]
    bounds = [(0.0, None) if d > 0 else (None, 0.0) if d < 0 else (None, None) for d in directions] + [(None, None)]
    if len(bounds) != k + 1:
        raise ValueError(f"{len(directions)} feature directions for {k} features")
    first = np.zeros(k + 1) if start is None else np.asarray(start, dtype=np.float64)
    if first.shape != (k + 1,):
        raise ValueError(f"a start of {first.shape} for {k} features and the intercept")
    last = [first]

    def fit(version: str, weight: np.ndarray | None = None) -> LinearChurnModel:
        w = np.ones(len(target)) if weight is None else np.asarray(weight, dtype=np.float64)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = Z @ theta[:k] + theta[k]
            loss = float(w @ (np.logaddexp(0.0, z) - target * z))
            r = w * (_sigmoid(z) - target)
            grad = np.empty(k + 1)
            grad[:k] = L2_C * (Z.T @ r) + theta[:k]
            grad[k] = L2_C * r.sum()
            return L2_C * loss + 0.5 * float(theta[:k] @ theta[:k]), grad

        fit = minimize(objective, last[0], jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 1000, "gtol": 1e-6})
        theta = np.asarray(fit.x, dtype=np.float64)   # L-BFGS-B keeps every iterate within the bounds
        last[0] = theta
        return LinearChurnModel(version, FEATURE_NAMES, mean, scale, theta[:k].copy(), float(theta[k]),
                                low=low, high=high)
    return fit


# Shallow trees (depth ≤ 4): TreeSHAP costs O(trees × leaves × depth²) per customer — 0.6 ms
# here against 21 ms for 31-leaf leaf-wise trees — and the snapshots of one history are
# strongly correlated (the same customers day after day), so large leaves guard against fitting them.
LGBM_PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "max_depth": 4, "min_data_in_leaf": 100,
               "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
               "verbose": -1, "num_threads": 1, "seed": 1, "deterministic": True, "force_row_wise": True,
               # the domain's prior on each feature's direction (`Feature.direction`), as for the linear model
               "monotone_constraints": list(FEATURE_DIRECTION)}
LGBM_ROUNDS = 200
# Trees cost per boosting round a pass over every training row (gradients, bagging draw, score
# update), whatever the bagging fraction: above these many training rows LightGBM fits the
# candidates, and the winner, on evenly strided subsamples (1 thread, 200 rounds: ~35 s of CPU
# per million rows). The daily snapshots of one customer are near copies of each other, so a
# stride keeps every customer and most of the information; measured in docs/evaluation.md ("Speed").
LGBM_SELECTION_ROWS = 100_000
LGBM_MAX_ROWS = 300_000
# the candidates are judged on at most this many validation rows, and Platt's two numbers fitted on
# at most this many calibration rows (evenly strided): those parts repeat the same customers at
# each of their instants, so this keeps about one instant's worth of independent evidence on the
# project's largest histories (bench: 100k customers); the card's figures use every validation row
JUDGE_MAX_ROWS = 100_000


def _lightgbm_fitter(X: np.ndarray, y: np.ndarray) -> Callable[[str, np.ndarray | None], TreeChurnModel]:
    """Fits on fixed rows under varying weights (the recency candidates): the rows are binned
    into an lgb.Dataset once, later fits only set the weights. float32 rows go in as they are
    (LightGBM reads them exactly; no float64 copy)."""
    import lightgbm as lgb

    X = np.asarray(X)
    rows = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
    label = np.asarray(y, dtype=np.float64)
    built: list[Any] = []   # [Dataset, weighted?] once built

    def fit(version: str, weight: np.ndarray | None = None) -> TreeChurnModel:
        if not built or (weight is None and built[1]):   # weights once set cannot be unset
            built[:] = [lgb.Dataset(rows, label=label, weight=weight, feature_name=list(FEATURE_NAMES),
                                    free_raw_data=True, params=LGBM_PARAMS).construct(), weight is not None]
        elif weight is not None:
            built[0].set_weight(weight)
            built[1] = True
        booster = lgb.train(LGBM_PARAMS, built[0], num_boost_round=LGBM_ROUNDS)
        return TreeChurnModel(version, FEATURE_NAMES, booster)
    return fit


def _fit_lightgbm(X: np.ndarray, y: np.ndarray, version: str, weight: np.ndarray | None = None) -> TreeChurnModel:
    return _lightgbm_fitter(X, y)(version, weight)


def fit_platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(y) = σ(a · raw + b) by maximum likelihood (lightly regularised)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    clf = LogisticRegression(C=1e4, max_iter=1000)
    clf.fit(np.asarray(raw, dtype=np.float64)[:, None], y)
    return float(clf.coef_[0][0]), float(clf.intercept_[0])


def recency_weights(t: np.ndarray, half_life_days: float | None) -> np.ndarray | None:
    """0.5 ** (age / half-life) per row, age in days before the latest instant of `t`;
    None without a half-life (every row alike)."""
    if half_life_days is None:
        return None
    t = np.asarray(t, dtype=np.float64)
    age_days = (t.max() - t) / 86400.0
    return np.power(0.5, age_days / half_life_days)


def auc_noise(auc: float, positives: float, negatives: float) -> float:
    """Standard error of a ROC AUC from `positives` and `negatives` independent rows
    (Hanley & McNeil 1982)."""
    if positives < 1 or negatives < 1:
        return math.inf
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
    return math.sqrt(max(0.0, var))


def still_active(X: np.ndarray, horizon_days: float) -> np.ndarray:
    """Rows whose customer had an active day within the last H days at the snapshot."""
    silence = np.asarray(X, dtype=np.float64)[:, FEATURE_NAMES.index("silence_days")]
    return silence < math.log1p(horizon_days)


# Training runs its linear algebra on one thread. Its products are thin (rows × 52 features) and
# bound by memory, so a second BLAS thread adds little on an idle machine; on a busy one
# (the worker's event loop, the broker, a replay's own sweep) OpenBLAS's threads spin waiting
# for each other: one L-BFGS fit on 38k rows took 2.7 s with two threads against 1.0 s with one
# while another process held a core (docs/evaluation.md, "Training time on a year of history").
def train(X: np.ndarray, y: np.ndarray, t: np.ndarray, *, version: str, trained_at: float,
          reference: np.ndarray | None = None, leavers: int = 0, kind: str = "logistic",
          horizon_days: float = 30.0):
    """Fit, calibrate and validate on a time-ordered split. Returns a model with its card."""
    import scipy.optimize  # noqa: F401  (loaded before the limit: it brings a BLAS of its own)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _train(X, y, t, version=version, trained_at=trained_at, reference=reference, leavers=leavers,
                      kind=kind, horizon_days=horizon_days)


def _train(X: np.ndarray, y: np.ndarray, t: np.ndarray, *, version: str, trained_at: float,
           reference: np.ndarray | None, leavers: int, kind: str, horizon_days: float):
    from sklearn.metrics import brier_score_loss, roc_auc_score   # the same figures as pipeline/tools/evaluate.py, vectorised

    def brier_score(labels, scores):
        return float(brier_score_loss(labels, scores))

    X = np.asarray(X)
    y = np.asarray(y, dtype=bool)
    t = np.asarray(t, dtype=np.float64)
    if X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"{X.shape[1]} feature columns, this build has {len(FEATURE_NAMES)}")
    tr, cal, val = time_split(t)
    if len(np.unique(y[tr])) < 2:
        raise ValueError("the training part holds only one class")
    fits: dict[str, Callable[[np.ndarray, np.ndarray, str, np.ndarray | None], LinearChurnModel | TreeChurnModel]] = {
        "logistic": _fit_logistic, "lightgbm": _fit_lightgbm}
    fit = fits[kind]

    def auc(labels, scores):
        return round(float(roc_auc_score(labels, scores)), 4) if 0 < np.sum(labels) < len(labels) else None

    # the recency weight's half-life: each candidate fitted on the training part, judged on the
    # validation part's still-active rows (all rows when those hold one class only)
    act_val = still_active(X[val], horizon_days)
    judge = act_val if 0 < np.sum(y[val][act_val]) < np.sum(act_val) else np.ones(len(act_val), dtype=bool)
    rows = np.flatnonzero(tr)
    stride = max(1, math.ceil(len(rows) / (LGBM_SELECTION_ROWS if kind == "lightgbm" else SELECTION_MAX_ROWS)))
    sub = rows[::stride]
    X_sub, y_sub = without_history_counts(X[sub]), y[sub]
    # the candidates' rows binned (trees) or standardised (logistic) once
    fit_sub = _lightgbm_fitter(X_sub, y_sub) if kind == "lightgbm" else _logistic_fitter(X_sub, y_sub)
    judged = np.flatnonzero(val)[judge]
    judged = evenly_strided(judged, JUDGE_MAX_ROWS)
    X_judge, y_judge = X[judged], y[judged]
    best: tuple[float, float | None, Any] | None = None
    selection: dict[str, float | None] = {}
    for multiple in RECENCY_HALF_LIVES:
        half_life = None if multiple is None else multiple * horizon_days
        weight = recency_weights(t[tr], half_life)
        if weight is not None and (weight @ y[tr] < MIN_POSITIVES or weight @ ~y[tr] < MIN_NEGATIVES):
            continue   # too short a memory for this history: fewer weighted rows than a cold start allows
        candidate = fit_sub(version, recency_weights(t[sub], half_life))
        score = auc(y_judge, candidate.raw(X_judge))
        selection["none" if half_life is None else f"{half_life:g}"] = score
        if score is not None and (best is None or score > best[0]):
            best = (score, half_life, candidate)
    half_life, model = (best[1], best[2]) if best is not None else (None, None)
    del fit_sub, X_sub   # the candidates' standardised rows, before a refit makes its own
    if model is None or stride > 1:
        final = rows if kind != "lightgbm" else evenly_strided(rows, LGBM_MAX_ROWS)
        weight = recency_weights(t[final], half_life)
        if isinstance(model, LinearChurnModel):   # the winner on the subsample: a start near the optimum
            model = _logistic_fitter(without_history_counts(X[final]), y[final],
                                     start=np.append(model.coef, model.intercept))(version, weight)
        else:
            model = fit(without_history_counts(X[final]), y[final], version, weight)
    calibrating = np.flatnonzero(cal)
    calibrating = evenly_strided(calibrating, JUDGE_MAX_ROWS)
    model.platt = fit_platt(model.raw(X[calibrating]), y[calibrating])

    yv = y[val]
    raw_val = model.raw(X[val])
    pv = calibrated(model.platt, raw_val)   # model.predict(X[val]), from the raw scores computed once
    uncal = _sigmoid(raw_val)
    share = float(yv.mean()) if len(yv) else math.nan
    act = still_active(X[val], horizon_days)
    auc_active = auc(yv[act], pv[act])
    # the validation instants view the same customers day after day: independent evidence is
    # about one instant's worth of rows, not all of them
    instants = max(1, len(np.unique(t[val])))
    tolerance = (round(auc_noise(auc_active, yv[act].sum() / instants, (~yv[act]).sum() / instants), 4)
                 if auc_active is not None else 0.0)
    model.card = ModelCard(
        version=version, kind=kind, trained_at=trained_at, window=(float(t.min()), float(t.max())),
        rows_train=int(tr.sum()), rows_calibration=int(cal.sum()), rows_validation=int(val.sum()),
        positives=int(y.sum()), leavers=leavers,
        auc_validation=auc(yv, pv), brier_validation=round(brier_score(yv, pv), 5) if len(yv) else None,
        brier_uncalibrated=round(brier_score(yv, uncal), 5) if len(yv) else None,
        brier_base_rate=round(share * (1 - share), 5) if len(yv) else None,
        auc_reference=auc(yv, reference[val]) if reference is not None else None,
        brier_reference=round(brier_score(yv, reference[val].astype(float)), 5)
        if reference is not None and len(yv) else None,
        rows_validation_active=int(act.sum()), auc_validation_active=auc_active,
        auc_reference_active=auc(yv[act], reference[val][act]) if reference is not None else None,
        half_life_days=half_life, selection=selection, auc_tolerance=tolerance,
    )
    # served: Platt refitted on the latest labelled rows. A stream's features drift within
    # their range as it ages (docs/evaluation.md §7, "The early warning's live backtest"), and
    # the calibration part lies 15 % of the history further back than the validation part
    if min(int(yv.sum()), int((~yv).sum())) >= MIN_CALIBRATION_ROWS:
        latest = evenly_strided(np.arange(len(yv)), JUDGE_MAX_ROWS)
        model.platt = fit_platt(raw_val[latest], yv[latest])
    return model


# The features that count the customer's observed history: they grow with the time the stream
# has been watched, so a model fitted on snapshots 2H old (the early warning's label needs 2H of
# hindsight) meets values far past its training range when it serves, and a linear model
# extrapolates them (docs/evaluation.md, "The early warning's live backtest": the published
# warning ran at 0.16 where 0.10 left). So does a sum over a window longer than the history
# watched: `revenue_365d` (12 months of revenue) grows with the watching for a stream's first
# year, and a model fitted on it two months younger ran a fifth to a third above the leave rate
# (docs/evaluation.md, "Revenue over a window longer than the history"). churn_risk's model
# met the same: on a stream watched for four months, trained on its first two (the label needs
# 2H of hindsight), it learned "few orders, short tenure: quiet next month" and ranked the
# customers who had gone quiet at the end by their long history, below the active ones, with
# silence features near weight 0 (docs/evaluation.md §7, "History counts in churn_risk's model").
# Neither model fits them: their columns are constant in the fitted rows, so their weight is 0
# and they move neither a risk nor its baseline. The customer's purchase rhythm stays in the
# features that read it against the time watched (the MBG/NBD probabilities, silence against
# the own gap, recent activity against the usual rate).
HISTORY_COUNTS = ("orders", "active_days", "tenure_days", "revenue_365d")
_HISTORY_COUNTS = [FEATURE_NAMES.index(name) for name in HISTORY_COUNTS]


def without_history_counts(rows: np.ndarray) -> np.ndarray:
    """`rows` (a copy the caller owns) with the history counts' columns set to 0: what a model
    is fitted on (`HISTORY_COUNTS`)."""
    rows[:, _HISTORY_COUNTS] = 0.0
    return rows


# The early warning serves only once its labelled snapshots span at least one horizon: its
# label needs 2H of hindsight, so a stream's first early-warning models learn from the first
# days of the stream only, when every customer is as young as the watching. Those models met
# the same customers weeks older (their purchase rhythm established, the usual gaps stretched)
# and published mean warnings of 0.17–0.30 to weeks that left at 0.11 (docs/evaluation.md §7,
# "A young history"). There is no reference model to hand back to: without this the first
# weeks of warnings are the worst calibrated. One horizon: the question asked (leaves within
# H) needs snapshots at least H apart to have been asked at more than one stage of the
# customers' lives.
MIN_EARLY_WARNING_SPAN_HORIZONS = 1.0


@dataclass(frozen=True)
class EarlyWarningFit:
    """What a retraining gives the early warning: its model, or None and why (`withheld`:
    logged by the learner and printed by `cxpulse evaluate`, so that a warning that is not
    there, or no longer there after a retraining, says what it waits for)."""
    model: LinearChurnModel | None
    withheld: str | None = None


def train_early_warning(X: np.ndarray, y: np.ndarray, t: np.ndarray, here: np.ndarray, *, version: str,
                        trained_at: float, leavers: int = 0, horizon_days: float = 30.0) -> EarlyWarningFit:
    """The early-warning model: P(the customer leaves within H | still here at the snapshot),
    on the rows whose customer was active within H after the snapshot (`here`: it was still
    there), where the churn label says whether it then left (no active day in the next H
    days). churn_risk's event also counts the customers already gone, whom silence reveals;
    among the customers still there silence means the opposite, so churn_risk ranks *them*
    by how soon they leave no better than its silence allows (docs/evaluation.md §7, "Where
    the remaining gap to the oracle is"). Logistic with the sign prior, the same `train`,
    for exact additive explanations. No model (`withheld` says which) while those rows are
    too few (the cold-start minimums), while their snapshot instants span less than the
    horizon H (`MIN_EARLY_WARNING_SPAN_HORIZONS`), or when its validation AUC is not above
    chance."""
    here = np.asarray(here, dtype=bool)
    labels = np.asarray(y, dtype=bool)[here]
    positives = int(labels.sum())
    if not enough_history(positives, len(labels) - positives, leavers):
        return EarlyWarningFit(None, f"too few rows of customers still there at their snapshot: {positives} leaving / "
                                     f"{len(labels) - positives} staying from {leavers} leavers (it needs "
                                     f"{MIN_POSITIVES} / {MIN_NEGATIVES} from {MIN_LEAVERS})")
    instants = np.asarray(t, dtype=np.float64)[here]
    span_days = float(instants.max() - instants.min()) / 86400.0
    if span_days < MIN_EARLY_WARNING_SPAN_HORIZONS * horizon_days:
        return EarlyWarningFit(None, f"its labelled snapshots span {span_days:.0f} days, less than "
                                     f"{MIN_EARLY_WARNING_SPAN_HORIZONS * horizon_days:g} (one horizon)")
    try:
        model = train(np.asarray(X)[here], labels, np.asarray(t)[here], version=version, trained_at=trained_at,
                      leavers=leavers, kind="logistic", horizon_days=horizon_days)
    except ValueError as exc:
        return EarlyWarningFit(None, f"training failed: {exc}")
    assert isinstance(model, LinearChurnModel) and model.card is not None
    if model.card.auc_validation is None:
        return EarlyWarningFit(None, "its validation rows hold one class only (no AUC)")
    if model.card.auc_validation <= 0.5:
        return EarlyWarningFit(None, f"validation AUC {model.card.auc_validation:.4f}, not above chance "
                                     f"({model.card.rows_validation} rows of customers still there)")
    return EarlyWarningFit(model)


def better_than_reference(card: ModelCard) -> bool:
    """Handover rule: a trained model replaces the serving one only when it is at least as
    good on the held-out latest rows in both ranking and calibration: ROC AUC no lower and
    Brier no worse than the serving model's on the same rows. (Brier alone is not enough:
    a model that predicts the base rate to everyone beats a sharp but miscalibrated one on
    Brier while ranking nobody; measured in docs/evaluation.md.) The AUC compared is that
    among the customers still active at their snapshot, when both classes are there: the
    customers already silent for H days are ranked near the top by any model and would
    hide how the still-active ones — the question the product answers — are ranked
    (docs/evaluation.md §7). A shortfall in that AUC within its noise (`auc_tolerance`, one
    standard error at the validation part's effective sample) does not count: two models
    that rank alike on the latest days differ by such amounts from one week to the next,
    and the hand-set model was not learned from this business at all."""
    if card.brier_validation is None or card.auc_validation is None:
        return False
    if card.brier_reference is not None and card.brier_validation > card.brier_reference:
        return False
    if card.auc_validation_active is not None and card.auc_reference_active is not None:
        return card.auc_validation_active + card.auc_tolerance >= card.auc_reference_active
    return card.auc_reference is None or card.auc_validation >= card.auc_reference
