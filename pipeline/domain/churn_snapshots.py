"""Self-labelled training data for the churn model, from the stream itself.

At regular points of event time (daily by default) every customer's features are
snapshot as the core sees them at that instant (`SnapshotBook.add`). Once 2H days of event
time have passed (H = the churn horizon) a snapshot is labelled from what the stream showed
after it (`SnapshotBook.label_due`) with `churn_risk`'s own event, "gone, or no activity
within H": churned = no active day in the H days after t, or none in the H days after
those (the customer was gone by t + H — the stream shows "gone" as H days of silence, the
product's own definition). A customer who is active within H and still there afterwards is
not churned. No planted ground truth, nothing after the snapshot enters its features, and
nothing after t + 2H enters its label.

Why not "no activity within H" alone: a customer active every few days who leaves three
weeks after t is active within H and would count as staying; only the last days before
a departure would be labelled churned, and the label would mostly measure long natural
gaps between visits. Measured on the causal generator (docs/evaluation.md §7): 4 % of
those labels' positives were departures within 30 days, and 9 % of departures within 30
days were labelled positive.

Labels are read from the customer's 64-day activity bitmap (`CustomerState.day_mask`), so
a window read a few days after it closes is still exact (each window is read as it closes,
so horizons up to 64 days work); snapshot instants are expected on day
boundaries (UTC midnight, as `cxpulse replay` ticks), which makes "after t" the days from
t's day on.

Bounded memory: the pending (not yet labelled) snapshots hold at most 2H / tick × the
customers per snapshot; each snapshot holds at most `max_per_snapshot` customers (a
deterministic sample by a hash of customer id and day, independent of arrival order);
labelled rows are kept up to `max_rows` (oldest snapshot dropped first). A row costs
4 bytes per feature plus about 80 bytes (label, time, reference risk, customer id): with
the 52 features and the default 500,000 rows about 145 MB, i.e. 100 daily snapshots of
the default 5,000 customers each (a business with more customers is sampled, one with
fewer keeps a longer history).
"""
from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from pipeline.domain.churn import DAY
from pipeline.domain.state import CustomerState, legacy_fingerprint

MAX_ROWS = 500_000
MAX_PER_SNAPSHOT = 5_000


@dataclass
class Snapshot:
    """The features of some customers at one instant `t`, and their labels once known."""
    t: float
    customer_ids: list[str]
    features: np.ndarray          # (n, features) float32
    reference: np.ndarray         # (n,) float32: the risk the serving model gave at t (comparison)
    labels: np.ndarray | None = None   # (n,) bool churned, once labelled
    within: list[bool | None] | None = None   # active within H (read at t + H; None: unread)

    @property
    def rows(self) -> int:
        return len(self.customer_ids)


def active_between(state: CustomerState | None, first: int, last: int) -> bool | None:
    """Whether the customer had an active day among the UTC days first … last (inclusive),
    read from the 64-day bitmap; None when the bitmap no longer reaches back to `first`."""
    if state is None or state.last_day is None or state.last_day < first:
        return False
    lo = max(0, state.last_day - last)        # bit of the window's last day (later days' bits excluded)
    hi = state.last_day - first + 1           # one past the bit of the window's first day
    if hi > 64:
        return None
    if hi <= lo:
        return False
    mask = ((1 << hi) - 1) ^ ((1 << lo) - 1)
    return bool(state.day_mask & mask)


def _active(state: CustomerState | None, first: int, last: int) -> bool | None:
    """`active_between` for a snapshot's customer, who had a state at the snapshot: None (not
    readable) when the state is not given any more."""
    return None if state is None else active_between(state, first, last)


def _window(t: float, horizon_days: float, part: int) -> tuple[int, int]:
    """The UTC days of the label's first (part 0: t's day … + H − 1) or second window
    (part 1: the H days after those); t on a day boundary."""
    h = max(1, int(round(horizon_days)))
    first = int(t // DAY) + part * h
    return first, first + h - 1


def churned_after(state: CustomerState | None, t: float, horizon_days: float) -> bool | None:
    """`churn_risk`'s event, read at once from one state (2H ≤ 64 days after t): no active
    day in the H days from t's day on (no activity within H), or none in the H days after
    those (gone by t + H). Active in both windows = not churned. None when the bitmap no
    longer reaches back to t. `SnapshotBook` reads the two windows as each closes, which
    works for any H up to 64 days."""
    within = active_between(state, *_window(t, horizon_days, 0))
    after = active_between(state, *_window(t, horizon_days, 1))
    if after is False or within is False:
        return True
    if within is None or after is None:
        return None
    return False


LABEL_DELAY_HORIZONS = 2   # a snapshot's label is known 2H after it
MAX_HORIZON_DAYS = 64      # each label window is read from the 64-day activity bitmap as it closes


class HorizonTooLong(ValueError):
    """The churn horizon is longer than the snapshots can be labelled for."""


def check_horizon(horizon_days: float) -> None:
    """Refuse a horizon the labels cannot be read for: beyond 64 days the bitmap no longer
    reaches back to a window's first day, and labelling would keep only the customers who
    were never seen again (a training set of almost only leavers, silently)."""
    if not 0 < horizon_days <= MAX_HORIZON_DAYS:
        raise HorizonTooLong(
            f"the learned churn model labels its snapshots from the customers' {MAX_HORIZON_DAYS}-day activity "
            f"bitmap, so the churn horizon (CXPULSE_CHURN_HORIZON_DAYS) must be above 0 and at most "
            f"{MAX_HORIZON_DAYS} days to learn; it is {horizon_days:g}. The hand-set model serves any horizon.")


def sample_key(customer_id: str, t: float) -> int:
    return legacy_fingerprint(customer_id + struct.pack(">d", t).hex())   # a 32-bit sampling key


@dataclass
class SnapshotBook:
    horizon_days: float
    max_rows: int = MAX_ROWS
    max_per_snapshot: int = MAX_PER_SNAPSHOT
    pending: list[Snapshot] = field(default_factory=list)
    labelled: list[Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_horizon(self.horizon_days)

    def add(self, t: float, rows: Sequence[tuple[str, Sequence[float], float]]) -> Snapshot:
        """Snapshot at `t`: (customer id, features, reference risk) per customer. Order
        does not matter: rows are kept sorted by customer id (sampled first when more
        than `max_per_snapshot`)."""
        if self.pending and t <= self.pending[-1].t:
            raise ValueError(f"snapshot at {t} is not after the previous one at {self.pending[-1].t}")
        rows = list(rows)
        if len(rows) > self.max_per_snapshot:
            rows = heapq.nsmallest(self.max_per_snapshot, rows, key=lambda r: (sample_key(r[0], t), r[0]))
        rows.sort(key=lambda r: r[0])
        width = len(rows[0][1]) if rows else 0
        snap = Snapshot(t, [r[0] for r in rows],
                        np.array([r[1] for r in rows], dtype=np.float32).reshape(len(rows), width),
                        np.array([r[2] for r in rows], dtype=np.float32))
        self.pending.append(snap)
        return snap

    def sampled(self, t: float, customer_ids: Sequence[str]) -> list[str]:
        """The customers `add` keeps of a snapshot at `t` of `customer_ids`, sorted: a caller
        can compute the rows of these only. (`heapq.nsmallest` equals sorting and cutting,
        without one long sort of every customer.)"""
        if len(customer_ids) <= self.max_per_snapshot:
            return sorted(customer_ids)
        return sorted(heapq.nsmallest(self.max_per_snapshot, customer_ids, key=lambda c: (sample_key(c, t), c)))

    def label_due(self, now: float, state_of: Callable[[str], CustomerState | None]) -> int:
        """Read the first window (activity within H) of every pending snapshot whose first
        window has closed (t + H ≤ now), and label those whose second window has closed too
        (t + 2H ≤ now), from the customers' states at `now`; returns the rows labelled.
        Each window is read from the bitmap within 64 days of its start. A row whose label
        can no longer be read (see `active_between`) is dropped, and so is a row whose customer
        `state_of` no longer gives (None: in the worker, a customer of a partition given away
        in a rebalance, whose new owner has the state) unless a window read earlier decided it."""
        h = self.horizon_days * DAY
        for snap in self.pending:
            if snap.t + h > now:
                break
            if snap.within is None:
                snap.within = [_active(state_of(cid), *_window(snap.t, self.horizon_days, 0))
                               for cid in snap.customer_ids]
        labelled = 0
        while self.pending and self.pending[0].t + LABEL_DELAY_HORIZONS * h <= now:
            snap = self.pending.pop(0)
            assert snap.within is not None   # read above: its first window closed before its second
            labels: list[bool | None] = []
            for cid, within in zip(snap.customer_ids, snap.within):
                after = _active(state_of(cid), *_window(snap.t, self.horizon_days, 1))
                labels.append(True if within is False or after is False
                              else None if within is None or after is None else False)
            keep = np.array([y is not None for y in labels], dtype=bool)
            snap = Snapshot(snap.t, [c for c, k in zip(snap.customer_ids, keep) if k], snap.features[keep],
                            snap.reference[keep], np.array([bool(y) for y in labels if y is not None], dtype=bool),
                            [w for w, k in zip(snap.within, keep) if k])
            self.labelled.append(snap)
            labelled += snap.rows
        while self.labelled and self.rows > self.max_rows:
            self.labelled.pop(0)
        return labelled

    def forget(self, customer_id: str) -> int:
        """Drop a customer's rows from every snapshot (erasure); returns how many."""
        dropped = 0
        for snaps in (self.pending, self.labelled):
            for i, snap in enumerate(snaps):
                if customer_id not in snap.customer_ids:
                    continue
                keep = np.array([c != customer_id for c in snap.customer_ids], dtype=bool)
                dropped += int((~keep).sum())
                snaps[i] = Snapshot(snap.t, [c for c, k in zip(snap.customer_ids, keep) if k], snap.features[keep],
                                    snap.reference[keep], None if snap.labels is None else snap.labels[keep],
                                    None if snap.within is None else [w for w, k in zip(snap.within, keep) if k])
        return dropped

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.labelled)

    def counts(self) -> tuple[int, int, int]:
        """(positive rows, negative rows, distinct customers with a positive row)."""
        pos = 0
        leavers: set[str] = set()
        for s in self.labelled:
            assert s.labels is not None   # labelled snapshots carry their labels
            pos += int(s.labels.sum())
            leavers.update(c for c, y in zip(s.customer_ids, s.labels) if y)
        return pos, self.rows - pos, len(leavers)

    def still_here(self) -> np.ndarray:
        """Per labelled row (in `training_data`'s order): the customer was active within H after
        the snapshot, so was still there at it. On those rows the label says whether the
        customer left within H (no active day in the H days after the first H): the early-warning
        model's training rows (pipeline/learning/churn_trainer.py `train_early_warning`)."""
        if not self.labelled:
            return np.zeros(0, bool)
        return np.concatenate([np.array([w is True for w in s.within], dtype=bool) if s.within is not None
                               else np.zeros(s.rows, bool) for s in self.labelled])

    def training_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(features, labels, snapshot times, reference risks) of the labelled rows, in
        time order then customer id."""
        if not self.labelled:
            return np.zeros((0, 0), np.float32), np.zeros(0, bool), np.zeros(0), np.zeros(0, np.float32)
        return (np.concatenate([s.features for s in self.labelled]), np.concatenate([s.labels for s in self.labelled]),
                np.concatenate([np.full(s.rows, s.t) for s in self.labelled]),
                np.concatenate([s.reference for s in self.labelled]))
