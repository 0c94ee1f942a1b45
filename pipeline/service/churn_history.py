"""The learning worker's history, kept across restarts (issue #16 item 1): what each
event-time tick added to the churn model's snapshot book, and where the learner stood.

A learning worker holds its snapshots and labels in memory (pipeline/domain/churn_snapshots.py);
a restart used to start a new book, so retraining paused for 2H days and more (the labels of
new snapshots come 2H after them), the population fit restarted from its priors and the
retraining schedule moved. Now every tick writes what it changed (`tick_changes`) to the
`ChurnHistory` port (ClickHouse in the worker: pipeline/adapters/clickhouse/churn_history.py),
and a restarted worker reads it back before its first batch (`restore_book` and the
`LearnerProgress`): the same book, the same population parameters, the same schedule, so the
models it trains after the restart are those it would have trained without one (and those
`cxpulse replay` trains: tests/unit/test_worker_learning.py).

What is written at a tick at `t`:
- the new snapshot's rows (customer id, features, the serving model's risk);
- for each snapshot whose first label window closed, "active within H" per row;
- for each snapshot labelled, the label of each row kept (rows whose label could no longer be
  read are not written: on restore a labelled snapshot keeps exactly the rows with a label);
- the tick itself: whether the population was re-fitted (and the parameters) and whether a
  retraining was due.

And once a retraining due at a tick has ended (trained and published, or nothing to train),
its `TrainingRow`. The training runs after its tick, off the event loop; a worker that dies
meanwhile has the tick's row written and not the training's. A restarted worker then trains
it again (`Restored.lost`): from the book as it stood at that tick, read back from the same
rows, so the model is the one that was lost.

A history written by a build with other features (`feature_set`) or another horizon is not
read: the book starts anew, and the log says so.

Several learning workers (issue #16 item 6) share the tables: each writes the rows of its own
customers, and its tick rows and snapshot rows carry its scope, the input partition numbers it
owned at the tick ("0,1,2"). A restarted worker reads back only the rows of its scope: its own
book, progress and population, not another worker's. When its partitions changed (a rebalance
that did not give them back), no rows have its scope and its book starts anew. Rows written
before scopes (migration 010) have the scope "", read by any scope: a single worker's history.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline.domain.churn import DAY, PopulationParams, population_json, population_of_json
from pipeline.domain.churn_features import FEATURE_NAMES
from pipeline.domain.churn_snapshots import LABEL_DELAY_HORIZONS, Snapshot, SnapshotBook, sample_key

# Which features a snapshot row holds, in which order: a build with other features cannot
# read another's rows.
FEATURE_SET = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LearnerProgress:
    """Where the learner stood at its last tick: no tick at or before `last_tick` runs again."""
    last_tick: float
    last_train: float            # the last tick a retraining was due (trained, or cold start)
    last_trained: float          # the last tick whose retraining ended (its TrainingRow written)
    last_refit: float            # the last population re-fit
    population: PopulationParams | None   # the parameters of that re-fit


@dataclass
class TickRecord:
    """What one tick at `t` changed (written as one unit)."""
    t: float
    horizon_days: float
    snapshot: Snapshot | None                                  # the tick's new snapshot
    within: list[Snapshot] = field(default_factory=list)       # first label window read at this tick
    labelled: list[Snapshot] = field(default_factory=list)     # labelled at this tick (rows kept)
    refit: PopulationParams | None = None                      # the population re-fitted at this tick
    retrain: bool = False                                      # a retraining was due at this tick
    feature_set: str = FEATURE_SET
    scope: str = ""                                            # the writer's input partitions ("0,1")


@dataclass(frozen=True)
class BookMark:
    """The book before a tick, to tell what the tick changed."""
    unread: frozenset[float]     # pending snapshots whose first window was not read yet
    labelled_until: float        # the latest labelled snapshot's time


def mark(book: SnapshotBook) -> BookMark:
    return BookMark(frozenset(s.t for s in book.pending if s.within is None),
                    book.labelled[-1].t if book.labelled else float("-inf"))


def tick_changes(before: BookMark, book: SnapshotBook, t: float, *, refit: PopulationParams | None,
                 retrain: bool, scope: str = "") -> TickRecord:
    """The record of the tick at `t`, from the book before (`mark`) and after it."""
    snapshot = book.pending[-1] if book.pending and book.pending[-1].t == t else None
    # (a snapshot labelled and at once dropped by the row bound is not in the book: its labels
    # are not written, and a restore keeps it as a labelled snapshot of no rows)
    labelled = [s for s in book.labelled if s.t > before.labelled_until]
    return TickRecord(
        t, book.horizon_days, snapshot,
        # first windows read at this tick, also of a snapshot labelled at once (a tick more than H
        # after the one before): a restore reads `within` back for labelled rows too (`still_here`)
        within=[s for s in (*book.pending, *labelled) if s.t in before.unread and s.within is not None],
        labelled=labelled, refit=refit, retrain=retrain, scope=scope)


@dataclass(frozen=True)
class StoredRow:
    """A snapshot row as the history holds it."""
    t: float
    customer_id: str
    features: np.ndarray | list[float]
    reference: float
    within: bool | None = None     # with `read`: active within H (None: no longer readable)
    read: bool = False             # the first window was read for this row
    label: bool | None = None      # the label, once labelled (None: not labelled)


def restore_book(book: SnapshotBook, ticks: list[float], rows: list[StoredRow], last_tick: float) -> SnapshotBook:
    """Fill an empty `book` from the history, as the book stood after the tick at `last_tick`:
    `ticks` are the tick times to restore (every tick took a snapshot, maybe of nobody),
    `rows` their rows in time order, then customer id. A snapshot is labelled once
    t + 2H ≤ last_tick (its rows with a label), its first window read once t + H ≤ last_tick,
    pending otherwise; then the book's row bound (the newest labelled snapshots that fit, which
    is what `label_due` keeps tick after tick)."""
    if book.pending or book.labelled:
        raise ValueError("restore_book fills an empty book")
    h = book.horizon_days * DAY
    by_t: dict[float, list[StoredRow]] = {}
    for row in rows:
        by_t.setdefault(row.t, []).append(row)
    width = len(FEATURE_NAMES)
    for t in sorted(set(ticks)):
        if t > last_tick:
            continue
        part = by_t.get(t, [])
        labelled = t + LABEL_DELAY_HORIZONS * h <= last_tick
        if labelled:
            part = [r for r in part if r.label is not None]
        snap = Snapshot(t, [r.customer_id for r in part],
                        np.array([r.features for r in part], dtype=np.float32).reshape(len(part), width),
                        np.array([r.reference for r in part], dtype=np.float32))
        if labelled:
            snap.labels = np.array([bool(r.label) for r in part], dtype=bool)
            snap.within = [r.within if r.read else None for r in part]
            book.labelled.append(snap)
        else:
            if t + h <= last_tick:
                snap.within = [r.within if r.read else None for r in part]
            book.pending.append(snap)
    while book.labelled and book.rows > book.max_rows:
        book.labelled.pop(0)
    return book


# --- the history's rows (one definition for the ClickHouse adapter and the tests' fake) ---------

SnapshotRow = tuple[float, str, list[float], float]                  # t, customer id, features, reference
LabelRow = tuple[float, str, int, "bool | None", "bool | None"]      # t, customer id, stage, within, label
TickRow = tuple[float, float, str, bool, bool, str, str]   # t, horizon, feature set, refit, retrain, population JSON, scope
TrainingRow = tuple[float, float, str, str, str]      # t, horizon, feature set, version trained ("": none), serving
STAGE_WITHIN, STAGE_LABELLED = 1, 2


def record_rows(record: TickRecord) -> tuple[list[SnapshotRow], list[LabelRow], TickRow]:
    """The rows one tick writes: its snapshot's, its label windows', and its own."""
    snaps: list[SnapshotRow] = []
    if record.snapshot is not None:
        s = record.snapshot
        snaps = [(s.t, cid, [float(x) for x in s.features[i]], float(s.reference[i]))
                 for i, cid in enumerate(s.customer_ids)]
    labels: list[LabelRow] = []
    for s in record.within:
        assert s.within is not None
        labels += [(s.t, cid, STAGE_WITHIN, w, None) for cid, w in zip(s.customer_ids, s.within)]
    for s in record.labelled:
        assert s.labels is not None
        labels += [(s.t, cid, STAGE_LABELLED, None, bool(y)) for cid, y in zip(s.customer_ids, s.labels)]
    population = population_json(record.refit) if record.refit is not None else ""
    return snaps, labels, (record.t, record.horizon_days, record.feature_set, record.refit is not None,
                           record.retrain, population, record.scope)


def scope_of(partitions: Iterable[int]) -> str:
    """A worker's scope: the input partition numbers it owns, "0,1,2"."""
    return ",".join(str(p) for p in sorted(set(partitions)))


def in_scope(row_scope: str, scope: str) -> bool:
    """A row of `row_scope` belongs to a worker of `scope` (rows from before scopes: any)."""
    return row_scope == scope or row_scope == ""


def training_row(t: float, horizon_days: float, version: str | None, serving: str | None) -> TrainingRow:
    """The row of a retraining due at `t` that has ended: the version trained (None: nothing
    trained, a cold start or a history that cannot train one) and the version serving after
    it (None: the hand-set model)."""
    return (t, horizon_days, FEATURE_SET, version or "", serving or "hand-set")


def _of_learner(row: TickRow | TrainingRow, horizon_days: float, feature_set: str = FEATURE_SET) -> bool:
    """A tick or training row written by a learner of this horizon and feature list."""
    return row[1] == horizon_days and row[2] == feature_set


def progress_of(ticks: list[TickRow], horizon_days: float, feature_set: str = FEATURE_SET,
                trainings: Sequence[TrainingRow] = (), scope: str = "") -> LearnerProgress | None:
    """Where the learner of `scope` stood, from the tick rows (any order) of its scope and the
    rows of the retrainings that ended; None when its latest tick was written with another
    horizon or feature set (or there is none): the book starts anew."""
    ticks = [r for r in ticks if in_scope(r[6], scope)]
    if not ticks:
        return None
    ordered = sorted(ticks)
    last = ordered[-1]
    if not _of_learner(last, horizon_days, feature_set):
        return None
    ordered = [r for r in ordered if _of_learner(r, horizon_days, feature_set)]
    refits = [r for r in ordered if r[3]]
    return LearnerProgress(
        last_tick=last[0],
        last_train=max((r[0] for r in ordered if r[4]), default=float("-inf")),
        last_trained=max((r[0] for r in trainings if _of_learner(r, horizon_days, feature_set)), default=float("-inf")),
        last_refit=refits[-1][0] if refits else float("-inf"),
        population=population_of_json(refits[-1][5]) if refits else None)


def oldest_needed(snapshot_counts: list[tuple[float, int]], last_tick: float, horizon_days: float,
                  max_rows: int) -> float:
    """The oldest snapshot time a restore needs: `snapshot_counts` are (t, rows) per snapshot;
    the book keeps the newest labelled snapshots whose rows fit `max_rows`, and a labelled
    snapshot keeps at most its snapshot's rows, so nothing older than the first snapshot that
    overflows on those counts is needed."""
    h = horizon_days * DAY
    total = 0
    for t, n in sorted(snapshot_counts, reverse=True):
        if t + LABEL_DELAY_HORIZONS * h <= last_tick:
            total += n
            if total > max_rows:
                return t
    return float("-inf")


def stored_rows(snaps: list[SnapshotRow], labels: list[LabelRow]) -> list[StoredRow]:
    """Snapshot rows with what their label rows say (a row written twice counts once), in time
    order then customer id."""
    within: dict[tuple[float, str], bool | None] = {}
    label: dict[tuple[float, str], bool | None] = {}
    for t, cid, stage, w, y in labels:
        if stage == STAGE_WITHIN:
            within[(t, cid)] = w
        elif stage == STAGE_LABELLED:
            label[(t, cid)] = y
    unique = {(t, cid): (f, ref) for t, cid, f, ref in snaps}
    return [StoredRow(t, cid, f, ref, within=within.get((t, cid)), read=(t, cid) in within, label=label.get((t, cid)))
            for (t, cid), (f, ref) in sorted(unique.items())]


@dataclass(frozen=True)
class BookRows:
    """The rows a book is restored from (`restore_book`): the tick times to restore, from the
    oldest needed, and their snapshot rows."""
    ticks: list[float]
    rows: list[StoredRow]


@dataclass(frozen=True)
class Restored:
    """What a restarted learner reads back: where it stood, and its book's snapshots."""
    progress: LearnerProgress
    ticks: list[float]          # the ticks (snapshot times) to restore, from the oldest needed
    rows: list[StoredRow]
    # a retraining due at `progress.last_train` that never ended (the worker died while it ran):
    # the rows of the book as it stood at that tick, to train it again. None: nothing was lost,
    # or they were not asked for (`read_history`'s `lost_book`).
    lost: BookRows | None = None

    @property
    def training_lost(self) -> bool:
        """The retraining due at `progress.last_train` never ended."""
        return self.progress.last_trained < self.progress.last_train


def read_history(ticks: list[TickRow], snapshot_counts: Callable[[], list[tuple[float, int]]],
                 rows_since: Callable[[float], tuple[list[SnapshotRow], list[LabelRow]]],
                 horizon_days: float, max_rows: int, trainings: Sequence[TrainingRow] = (),
                 scope: str = "", lost_book: bool = True) -> Restored | None:
    """The history a store holds (its tick rows; the snapshot row counts per snapshot and the
    snapshot and label rows from an instant on, both of `scope`; the rows of the retrainings
    that ended), read as a learner of `horizon_days` and `scope` restores it: None when there
    is none for this horizon, feature set and scope. `lost_book`: also read the book of a lost
    training (`Restored.lost`); a worker that would not train it from its own book does not
    ask (a book of up to `max_rows` rows)."""
    progress = progress_of(ticks, horizon_days, trainings=trainings, scope=scope)
    if progress is None:
        return None
    counts = snapshot_counts()
    book = book_rows(ticks, counts, rows_since, horizon_days, max_rows, progress.last_tick, scope)
    lost = None
    if lost_book and progress.last_trained < progress.last_train:
        lost = book if progress.last_train == progress.last_tick else book_rows(
            ticks, counts, rows_since, horizon_days, max_rows, progress.last_train, scope)
    return Restored(progress, book.ticks, book.rows, lost)


def book_rows(ticks: list[TickRow], snapshot_counts: list[tuple[float, int]],
              rows_since: Callable[[float], tuple[list[SnapshotRow], list[LabelRow]]],
              horizon_days: float, max_rows: int, as_of: float, scope: str | None) -> BookRows:
    """The rows of the book as it stood after the tick at `as_of`, of `scope` (None: of every
    scope, the pooled book of several workers; the counts and rows given are of the same)."""
    since = oldest_needed(snapshot_counts, as_of, horizon_days, max_rows)
    snaps, labels = rows_since(since)
    return BookRows(sorted({r[0] for r in ticks if since <= r[0] <= as_of and (scope is None or in_scope(r[6], scope))
                            and _of_learner(r, horizon_days)}),
                    stored_rows(snaps, labels))


def pooled_rows(ticks: list[TickRow], snapshot_counts: list[tuple[float, int]],
                rows_between: Callable[[float, float], tuple[list[SnapshotRow], list[LabelRow]]],
                horizon_days: float, max_rows: int, as_of: float, max_per_snapshot: int) -> BookRows:
    """A pooled training's rows: every worker's book as it stood after the tick at `as_of`,
    its labelled snapshots only (a training reads no other; the pending ones restore empty).
    `rows_between(since, until)`: the snapshot and label rows of every scope in that window.

    Each worker kept at most `max_per_snapshot` of its customers per snapshot, those of the
    smallest sampling keys (`SnapshotBook.add`); the customers a single book keeps of all are
    among them, so keeping the smallest keys of the union gives exactly that book's sample
    (before the rows without a label are dropped, as a single book does)."""
    until = as_of - LABEL_DELAY_HORIZONS * horizon_days * DAY
    capped = [(t, min(n, max_per_snapshot)) for t, n in snapshot_counts]   # what a snapshot keeps, at most
    rows = book_rows(ticks, capped, lambda since: rows_between(since, until), horizon_days, max_rows, as_of, None)
    by_t: dict[float, list[StoredRow]] = {}
    for row in rows.rows:
        by_t.setdefault(row.t, []).append(row)
    kept = [row for t, part in by_t.items()
            for row in (part if len(part) <= max_per_snapshot else
                        heapq.nsmallest(max_per_snapshot, part, key=lambda r: (sample_key(r.customer_id, t), r.customer_id)))]
    return BookRows(rows.ticks, sorted(kept, key=lambda r: (r.t, r.customer_id)))


def covered(ticks: list[TickRow], t: float, horizon_days: float) -> set[int]:
    """The input partitions whose tick at `t` is stored: the partitions of the scopes of the
    tick rows at `t` (a pooled training waits for all of them)."""
    return {int(p) for r in ticks if r[0] == t and _of_learner(r, horizon_days) for p in r[6].split(",") if p}
