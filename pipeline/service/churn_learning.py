"""The churn model's learning loop, the same in `cxpulse replay` and (once wired) the worker:
at each point of event time (`on_tick`) label the snapshots whose horizon has passed,
snapshot every customer's features, and on the retraining schedule train a model on the
labelled history and hand it to the core if it beats the hand-set model on the latest
rows (AUC and Brier); a retraining that does not hands scoring back to the hand-set model.

Each training also fits the early-warning model on the rows whose customer was still there
(`train_early_warning`), which serves as trained, whichever model scores churn_risk
(`Core.early_warning`, the `early_warning` of the score records).

Cold start: until the history holds MIN_POSITIVES / MIN_NEGATIVES labelled rows from
MIN_LEAVERS leavers (pipeline/learning/churn_trainer.py says why), the hand-set model of
pipeline/domain/churn.py serves. Every switch is logged and reported to `on_switch` (the worker
exports it as the cxpulse_churn_model_* gauges).

Arrival-order independence: `on_tick(now, …)` must see states that hold exactly the events
up to `now` (replay holds back later events until the tick has run); customers are taken
in customer-id order; training and calibration are deterministic. Shuffling a stream
within the lateness bound, or duplicating events, gives the same snapshots, the same
models and the same scores (tests/unit/test_churn_model.py).
"""
from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping

import numpy as np

from pipeline.domain.churn import DAY, PopulationParams
from pipeline.domain.churn_features import churn_features
from pipeline.domain.churn_snapshots import SnapshotBook
from pipeline.learning.churn_trainer import ModelCard, better_than_reference, enough_history, train, train_early_warning
from pipeline.domain.scoring import profile
from pipeline.domain.state import CustomerState

log = logging.getLogger("cxpulse.churn_model")
RETRAIN_EVERY = 7 * DAY      # event time between retrainings


def model_version(kind: str, trained_at: float) -> str:
    """Deterministic: the same history trained at the same instant gets the same name."""
    stamp = datetime.fromtimestamp(trained_at, timezone.utc).strftime("%Y-%m-%dT%H%M")
    return f"{'lr' if kind == 'logistic' else 'gbt'}-{stamp}"


def fit_model(kind: str, now: float, data: "TrainingSet"):
    """Train and calibrate a model of `kind` on `data` at event time `now`, or None when the
    history cannot train one; with it, as its `early_warning`, the early-warning model of the
    same history (None while that cannot be trained). Deterministic, and touches nothing
    shared: the worker runs it in another process (pickled arguments and result) so the
    event loop is not slowed."""
    try:
        model = train(data.X, data.y, data.t, version=model_version(kind, now), trained_at=now,
                      reference=data.reference, leavers=data.leavers, kind=kind, horizon_days=data.horizon_days)
    except ValueError as exc:
        log.warning("churn model: training at %s skipped: %s", now, exc)
        return None
    if data.here is None:
        model.early_warning_withheld = "the history does not say which customers were still there"
    else:
        early = train_early_warning(
            data.X, data.y, data.t, data.here, version="ew-" + model_version(kind, now).split("-", 1)[1],
            trained_at=now, leavers=data.leavers, horizon_days=data.horizon_days)
        model.early_warning, model.early_warning_withheld = early.model, early.withheld
    return model


@dataclass(frozen=True)
class TrainingSet:
    """The labelled history at a retraining (pipeline/domain/churn_snapshots.py)."""
    X: np.ndarray
    y: np.ndarray
    t: np.ndarray
    reference: np.ndarray
    leavers: int
    horizon_days: float   # the label's horizon H (the trainer judges still-active rows by it)
    here: np.ndarray | None = None   # per row: active within H after the snapshot (still there at it)


@dataclass
class ChurnLearner:
    horizon_days: float
    retrain_every: float = RETRAIN_EVERY
    kind: str = "logistic"
    book: SnapshotBook = None   # type: ignore[assignment]  # None: a new book of horizon_days (__post_init__)
    on_switch: Callable[[ModelCard | None], None] | None = None
    cards: list[ModelCard] = field(default_factory=list)        # every model trained, served or not
    served: ModelCard | None = None                              # the model serving now (None: hand-set)
    early_warning: ModelCard | None = None                       # the early warning serving now (None: none)
    early_warning_withheld: str | None = None                    # why none serves after the last training
    last_train: float = float("-inf")
    train_seconds: list[float] = field(default_factory=list)    # wall time of each training (measurement only)
    _cold_logged: bool = False

    def __post_init__(self) -> None:
        if self.book is None:
            self.book = SnapshotBook(self.horizon_days)

    _rows: list = field(default_factory=list)
    _population: PopulationParams = field(default_factory=PopulationParams)
    _keep: list[str] = field(default_factory=list)        # this tick's sample (SnapshotBook.sampled)
    _keeping: set[str] | None = None                       # the same as a set; None before the first tick

    # --- one tick in three steps, around the sweep that already views every customer ----
    def begin_tick(self, now: float, states: Mapping[str, CustomerState], core) -> None:
        """Label what has become labellable; start collecting this tick's snapshot."""
        self.book.label_due(now, states.get)
        self._rows = []
        self._population = core.population
        # the customers the book keeps of this snapshot: the sweep views everyone, only these are observed
        self._keep = self.book.sampled(now, [cid for cid, state in states.items() if state.n])
        self._keeping = set(self._keep)

    def observe(self, state: CustomerState, p) -> None:
        """One customer's profile at the tick (from `Core.sweep`): its features, and the
        hand-set model's risk (every trained model is judged against it)."""
        if self._keeping is not None and state.customer_id not in self._keeping:
            return   # not in this snapshot's sample: `SnapshotBook.add` would drop the row
        reference = p.churn_hand_set if p.churn_hand_set is not None else p.churn
        features = p.churn_features if p.churn_features is not None else churn_features(state, p, self._population)
        self._rows.append((state.customer_id, features, reference.risk))

    def end_tick(self, now: float, core) -> None:
        self.close_tick(now)
        if self.retrain_due(now):
            self.retrain(now, core)

    def close_tick(self, now: float) -> None:
        """Store this tick's snapshot."""
        self.book.add(now, self._rows)
        self._rows = []

    def retrain_due(self, now: float) -> bool:
        return now - self.last_train >= self.retrain_every

    def snapshot(self, now: float, states: Mapping[str, CustomerState], core) -> None:
        """The tick's snapshot without a sweep (views every customer itself) and without
        training: the worker's tick (its sweep runs on wall time and trains off the loop)."""
        self.begin_tick(now, states, core)
        # only the customers the book keeps (its sample): the same rows, 20 times less work at 100k.
        # The hand-set profile only: a row is the features and the hand-set risk, which `observe`
        # takes from it as from a sweep's learned profile; the learned models' own risks and
        # drivers (half of a snapshot's time, py-spy) are not part of the row
        for cid in self._keep:
            state = states[cid]
            if state.n:
                self.observe(state, profile(state, now, core.params, core.population, core.rates))
        self.close_tick(now)

    def on_tick(self, now: float, states: Mapping[str, CustomerState], core) -> None:
        """The whole tick without a sweep."""
        self.snapshot(now, states, core)
        if self.retrain_due(now):
            self.retrain(now, core)

    def retrain(self, now: float, core) -> ModelCard | None:
        """Train on the labelled history and serve the model if it beats the hand-set one
        (`training_set`, `fit` and `adopt` in one go; the worker runs `fit` off its event loop)."""
        data = self.training_set(now)
        if data is None:
            return None
        model = self.fit(now, data)
        if model is None:
            return None
        self.adopt(model, core)
        return model.card

    def _adopt_early_warning(self, model, core) -> None:
        """The early warning trained with `model` serves, or none does; logged at each
        training, with why none serves (`train_early_warning`'s `withheld`)."""
        before = core.early_warning.version if core.early_warning is not None else "none"
        early = model.early_warning
        core.early_warning = early
        self.early_warning = early.card if early is not None else None
        self.early_warning_withheld = model.early_warning_withheld if early is None else None
        if early is not None:
            log.info("early warning: %s -> %s (validation AUC %s)", before, early.version,
                     early.card.auc_validation if early.card is not None else None)
        else:
            log.info("early warning: %s -> none: %s", before, model.early_warning_withheld)

    def training_set(self, now: float, book: SnapshotBook | None = None) -> TrainingSet | None:
        """The labelled history at `now` as arrays (a copy: later ticks do not change it), or
        None while the history is too small (cold start). `book`: another book than the
        learner's, as it stood at `now` (the book of several workers' rows, or of a retraining
        lost in a restart); the schedule is the learner's own and does not move then."""
        if book is None:
            self.last_train = now
            book = self.book
        pos, neg, leavers = book.counts()
        if not enough_history(pos, neg, leavers):
            if not self._cold_logged:
                log.info("churn model: cold start, the hand-set model serves (labelled history: %d leaving / %d "
                         "staying rows from %d leavers)", pos, neg, leavers)
                self._cold_logged = True
            return None
        X, y, t, ref = book.training_data()
        return TrainingSet(X, y, t, ref, leavers, self.horizon_days, book.still_here())

    def fit(self, now: float, data: TrainingSet):
        """Train and calibrate (`fit_model`; the wall time is kept in `train_seconds`)."""
        started = _time.perf_counter()
        model = fit_model(self.kind, now, data)
        if model is not None:
            self.train_seconds.append(_time.perf_counter() - started)
        return model

    def adopt(self, model, core):
        """Record a trained model's card and decide what serves: the model if it beats the
        hand-set one on the latest rows, else the hand-set model (None). Installs the choice
        in `core` and returns it (the worker also publishes it to every worker)."""
        card = model.card
        self.cards.append(card)
        # the early-warning model serves as trained, whichever model scores churn_risk (None: none yet)
        self._adopt_early_warning(model, core)
        previous = core.churn_model.version if core.churn_model is not None else "hand-set"
        if not better_than_reference(card):
            log.info("churn model %s not served: validation AUC %s (still active: %s) / Brier %s vs the hand-set "
                     "model's %s (%s) / %s", card.version, card.auc_validation, card.auc_validation_active,
                     card.brier_validation, card.auc_reference, card.auc_reference_active, card.brier_reference)
            if core.churn_model is not None:
                # drift: the latest history no longer supports a learned model over the hand-set one
                core.churn_model = None
                self.served = None
                log.info("churn model switch: %s -> hand-set", previous)
                if self.on_switch is not None:
                    self.on_switch(None)
            return core.churn_model
        core.churn_model = model
        self.served = card
        log.info("churn model switch: %s -> %s (validation AUC %s vs %s, Brier %s vs %s, %d training rows)",
                 previous, card.version, card.auc_validation, card.auc_reference, card.brier_validation,
                 card.brier_reference, card.rows_train)
        if self.on_switch is not None:
            self.on_switch(card)
        return model
